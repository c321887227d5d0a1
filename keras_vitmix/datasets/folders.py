"""Image folders in `train/<class>/*.jpg|png` layout (optionally with `test/<class>/`):
which files make each split, and how one file is read.

Everything here is plain Python, NumPy and Pillow: a folder's split is the same whether
tf.data streams it (`keras_vitmix.datasets.load`) or a benchmark reads it into NumPy, and
a bad file is named before any pipeline runs. A file whose first bytes are not an image
header is refused while listing; a file that is cut short or corrupt further in is found
when it is decoded, and `read_image` says which file it was.
"""

import pathlib

import numpy as np

from keras_vitmix.datasets.info import check_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# The first bytes of each accepted image format.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")
_FORMATS = "JPEG, PNG, BMP or GIF"


def read_image(path):
    """One image file, decoded now, as uint8 RGB pixels (height, width, 3).

    Args:
        path: a JPEG, PNG, BMP or GIF file (a GIF gives its first frame).

    Returns:
        A NumPy uint8 array (height, width, 3).

    Raises:
        ValueError: naming the file, when it is missing, not an image, or truncated or
            corrupt.

    Example:

    >>> pixels = read_image("train/cat/0001.jpg")  # doctest: +SKIP
    >>> pixels.shape, pixels.dtype
    ((32, 32, 3), dtype('uint8'))
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # decode every byte now: a truncated file fails here
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"No such image file. Received: {path}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # Pillow's ways to say "bad data"
        raise ValueError(
            f"Not a complete {_FORMATS} image (truncated or corrupt file?). Received: {path} "
            f"({type(error).__name__}: {error})"
        ) from None


def class_folders(root):
    """The class sub-folders of `root`, sorted by name (the label order)."""
    folders = sorted(p for p in pathlib.Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(
            f"The folder has no class sub-folders; expected <folder>/<class>/*.jpg|png. Received: {root!s}"
        )
    return folders


def image_files(folder):
    """The image files of one class folder, sorted; refuses a file without an image header."""
    files = sorted(
        str(p) for p in pathlib.Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    for path in files:
        with open(path, "rb") as handle:
            head = handle.read(8)
        if not any(head.startswith(magic) for magic in _MAGIC):
            raise ValueError(f"Not a {_FORMATS} image (corrupt file?). Received: {path}")
    return files


def list_folder(root, split="train", seed=0, validation_fraction=0.1):
    """The image files and labels of a folder's split, as `load` reads them (no TensorFlow).

    Args:
        root: a folder with `train/<class>/*.jpg|png` and optionally `test/<class>/`.
        split: "train", "validation" or "test"; without `test/`, "validation" and
            "test" are the same seeded hold-out of `train/`.
        seed: int, shuffles each class before the hold-out.
        validation_fraction: float in (0, 1), the part of each class held out.

    Returns:
        `(paths, labels, class_names, note)`: lists of file paths and int labels, the
        class names in label order (sorted folder names), and how the split was made.
    """
    check_split(split)
    root = pathlib.Path(root)
    if not (root / "train").is_dir():
        raise ValueError(
            f"Expected a folder with train/<class>/*.jpg|png (and optionally test/). Received: {root!s}"
        )
    classes = [p.name for p in class_folders(root / "train")]
    if split == "test" and (root / "test").is_dir():
        paths, labels = _test_folder(root / "test", classes)
        return paths, labels, tuple(classes), "test/ folder"
    paths, labels = _hold_out(root / "train", classes, split, seed, validation_fraction)
    note = (
        f"held out of train/: the last {validation_fraction:.0%} of each class, shuffled with seed {seed}"
        if split != "train"
        else f"train/ minus a {validation_fraction:.0%} validation hold-out (seed {seed})"
    )
    if split == "test":
        note = "no test/ folder: the test split is the validation hold-out, " + note
    return paths, labels, tuple(classes), note


def _test_folder(test_root, classes):
    """Every file of test/<class>/, labelled by train/'s class order."""
    test_classes = [p.name for p in class_folders(test_root)]
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise ValueError(f"test/ has classes that train/ lacks: {unknown}. train/ classes: {classes}")
    paths, labels = [], []
    for name in test_classes:
        files = image_files(test_root / name)
        paths += files
        labels += [classes.index(name)] * len(files)
    return paths, labels


def _hold_out(train_root, classes, split, seed, validation_fraction):
    """train/ minus, or (for validation and test) only, a seeded part of each class."""
    rng = np.random.RandomState(seed)
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = image_files(train_root / name)
        if not files:
            raise ValueError(f"Class folder {train_root / name} holds no .jpg/.png images.")
        order = rng.permutation(len(files))
        held = max(1, int(round(len(files) * validation_fraction)))
        keep = order[:-held] if split == "train" else order[-held:]
        paths += [files[i] for i in sorted(keep)]
        labels += [label] * len(keep)
    return paths, labels
