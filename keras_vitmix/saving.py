"""Reading `.keras` files with errors that name the file and say what was expected.

`keras.saving.load_model` reports a file that is not a zip archive as "File not found",
even when the file exists. `load_model` here checks the archive first (a zip whose
members are intact, holding the model's `config.json`), so a truncated or corrupt file
is a `ValueError` naming it, and any later failure to rebuild the model names it too.
The loss, metrics and layers the library registers are imported with `keras_vitmix`, so
a file written by `keras_vitmix.training` loads compiled.
"""

import os
import zipfile

import keras

KERAS_SUFFIX = ".keras"
_CONFIG = "config.json"
_EXPECTED = "a .keras file as `model.save` writes it (a zip archive holding config.json and the weights)"


def check_model_file(path, argument="model"):
    """Checks that `path` is a readable `.keras` archive; returns it as a str.

    Args:
        path: str or path-like.
        argument: the argument name quoted in errors.

    Raises:
        ValueError: no file, another suffix, not a zip archive (truncated or corrupt),
            a member whose checksum fails, or no `config.json`; the message names the
            file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{argument}` must be the path to a .keras file. Received: {argument} of type {type(path).__name__}"
        )
    path = os.fspath(path)
    if not path.endswith(KERAS_SUFFIX):
        raise ValueError(f"`{argument}` must be a path ending in .keras. Received: {argument}={path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"No such model file. Received: {argument}={path!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
        raise ValueError(
            f"The model file {path!r} ({os.path.getsize(path):,} bytes) is not a readable zip archive "
            f"(truncated or corrupt?): {type(error).__name__}: {error}. Expected {_EXPECTED}."
        ) from None
    if damaged is not None:
        raise ValueError(
            f"The model file {path!r} is corrupt: its member {damaged!r} fails its checksum. Expected {_EXPECTED}."
        )
    if _CONFIG not in names:
        raise ValueError(
            f"The model file {path!r} is a zip archive without {_CONFIG} (members: "
            f"{', '.join(sorted(names)[:5]) or 'none'}). Expected {_EXPECTED}."
        )
    return path


def load_model(path, compile=True, argument="model"):
    """`keras.saving.load_model(path, compile=compile)`, with errors that name the file.

    Args:
        path: the `.keras` file.
        compile: bool, whether to restore the loss, optimizer and metrics it was saved
            with.
        argument: the argument name quoted in errors.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: the file is missing, not a readable archive (see
            `check_model_file`), or does not rebuild into a model (the cause quoted).

    Example:

    >>> model = load_model("runs/demo/model.keras")
    """
    path = check_model_file(path, argument)
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # an unknown class, a config another version wrote, ...
        raise ValueError(
            f"The model file {path!r} is a .keras archive but does not load as a model: "
            f"{type(error).__name__}: {error}"
        ) from error


def model_metadata(model):
    """What `model` was trained on, as its run recorded it: a dict (empty when unknown).

    `keras_vitmix.training.train` stores the run's metadata in the models it writes
    (families of `keras_vitmix.applications` keep it in their config, so `.keras` files
    and exports carry it). Keys: "class_names" (list of str, in label order), "dataset"
    (the name or folder), "splits" (how validation and test were made: seed, fractions,
    notes), "recipe" and the training values as trained, "pipeline".

    Args:
        model: a `keras.Model`, or the path to a `.keras` file.

    Returns:
        A new dict; {} for a model that carries none (e.g. a plain `keras.Model`).
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, compile=False)
    metadata = getattr(model, "metadata", None)
    return dict(metadata) if isinstance(metadata, dict) else {}


def class_names(model):
    """The class names `model` was trained with (list of str), or None when unknown."""
    names = model_metadata(model).get("class_names")
    return [str(name) for name in names] if names else None
