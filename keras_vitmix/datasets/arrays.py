"""Every in-memory source as NumPy arrays, without TensorFlow: the digits, a folder decoded
once (in worker processes when it is large) and cached as .npz, and user arrays checked,
described and split.

For a training loop that keeps the data on the accelerator under JAX or PyTorch: these
paths import NumPy, Pillow and scikit-learn only (and Keras for a progress bar), so
TensorFlow need not be installed. A TFDS name is the exception: TFDS needs TensorFlow.
The splits, labels and `DatasetInfo` are those `keras_vitmix.datasets.load` gives for the
same source and split; so are the pixels, but for JPEG decoding: Pillow runs libjpeg's
accurate integer IDCT, TensorFlow's `decode_image` the fast one, a level or so apart.
"""

import concurrent.futures
import functools
import hashlib
import multiprocessing
import os
import pathlib
import tempfile
import time
import warnings
import zipfile

import numpy as np

from keras_vitmix.datasets import sources
from keras_vitmix.datasets.folders import list_folder, read_image
from keras_vitmix.datasets.info import DatasetInfo, as_image_size, check_split

CACHE_ENV = "KERAS_VITMIX_CACHE"
CHUNKSIZE = 256  # files per task sent to a decoding worker (and decoded here to time them)
# Seconds of decoding left, at the first chunk's pace, that make worker processes worth
# their start (several seconds each: they import keras_vitmix, Keras and its backend).
POOL_SECONDS = 20.0
PROGRESS_FILES = 2_000  # a folder of more files shows a progress bar while it decodes
_CACHE_FORMAT = 1  # bump when the cached arrays change meaning


def load_arrays(
    name_or_path="digits",
    split="train",
    image_size=None,
    seed=0,
    validation_fraction=0.1,
    data_dir=None,
    cache_dir=None,
):
    """Loads a split as NumPy arrays: the same data `load` streams through tf.data.

    Args:
        name_or_path: "digits", a folder in `train/<class>/*.jpg|png` layout (optionally
            with `test/<class>/`), or a TFDS image-classification name (which imports
            TensorFlow).
        split: "train", "validation" or "test".
        image_size: int or (height, width); defaults to the source's size (32 for
            digits, the first file's size for a folder, in sorted order).
        seed: int, seeds a folder's validation hold-out.
        validation_fraction: float in (0, 1), the part of a folder's (or a TFDS
            dataset's) training data held out as validation when it has none.
        data_dir: optional TFDS data directory.
        cache_dir: where a folder's decoded arrays are cached; defaults to
            `$KERAS_VITMIX_CACHE` or `~/.cache/keras_vitmix`.

    Returns:
        `(images, labels, info)`: uint8 (N, H, W, 3), int32 (N,) and the `DatasetInfo`
        `load` gives. The whole split is in memory (CIFAR-10's training images: 150 MB).
        A folder's images come in its file order (class by class): shuffle when training.

    Example:

    >>> images, labels, info = load_arrays("digits", "validation")
    >>> images.shape, labels.shape, info.num_classes
    ((180, 32, 32, 3), (180,), 10)
    """
    check_split(split)
    _check_fraction(validation_fraction)
    image_size = as_image_size(image_size)
    name = os.fspath(name_or_path)
    if name == "digits":
        return sources.digits_arrays(split, image_size)
    if os.path.isdir(name):
        return folder_arrays(name, split, image_size, seed, validation_fraction, cache_dir)
    if os.path.sep in name or name.startswith("."):
        raise ValueError(f"No such folder. Received: name_or_path={name!r}")
    return _tfds_arrays(name, split, image_size, validation_fraction, data_dir)


def folder_arrays(root, split="train", image_size=None, seed=0, validation_fraction=0.1, cache_dir=None):
    """A folder's split decoded with Pillow into arrays, cached as .npz on first use.

    The cache file is named by a hash of the folder's absolute path, the split, seed,
    fraction, image size and every listed file's path, label, size and modification
    time: adding, replacing or touching an image decodes the split again. Arguments and
    returns as in `load_arrays`.
    """
    paths, labels, classes, note = list_folder(root, split, seed, validation_fraction)
    if not paths:
        raise ValueError(f"The {split!r} split of {root!s} holds no images (each class of train/ gives at "
                         "least one image to validation: a class of one image gives train none).")
    key = (os.path.abspath(root), split, seed, float(validation_fraction), image_size)
    cache = _cache_path(cache_dir, root, split, key, paths, labels)
    images = _read_cache(cache, len(paths))
    if images is None:
        images = decode_files(paths, image_size)
        _write_cache(cache, images)
    info = DatasetInfo(
        name=str(pathlib.Path(root)), split=split, class_names=tuple(classes), num_classes=len(classes),
        num_examples=len(paths), image_shape=images.shape[1:], source="folder", note=note,
    )
    return images, np.asarray(labels, np.int32), info


def decode_files(paths, image_size=None):
    """Image files as one uint8 (N, H, W, 3) array, each resized to `image_size` (default:
    the first file's size) where it differs.

    The first `CHUNKSIZE` files are decoded here and timed. When the rest, at that
    pace, would take more than `POOL_SECONDS`, worker processes decode it: a worker
    takes seconds to start (it imports keras_vitmix, so Keras and its backend), more
    than a CIFAR-sized folder takes to decode in one process, less than an
    ImageNet-sized one. Workers start with "spawn", since the caller may run JAX,
    PyTorch or TensorFlow threads that a forked child would inherit in an undefined
    state; a script that reaches this at its top level needs the
    `if __name__ == "__main__":` guard, as for any spawned worker. A file that fails to
    decode is a ValueError naming it, raised here from the worker.
    """
    if not paths:
        raise ValueError(f"`paths` must name at least one image file. Received: paths={paths!r}")
    size = tuple(image_size or read_image(paths[0]).shape[:2])
    images = np.empty((len(paths), *size, 3), np.uint8)
    read = functools.partial(read_resized, image_size=size)
    progress = None
    if len(paths) > PROGRESS_FILES:
        import keras  # the backend's Keras: under JAX or PyTorch it does not import TensorFlow

        progress = keras.utils.Progbar(len(paths), unit_name="image")
    head = min(len(paths), CHUNKSIZE)
    start = time.perf_counter()
    for i in range(head):
        images[i] = read(paths[i])
    rest = paths[head:]
    seconds_left = (time.perf_counter() - start) / head * len(rest)
    pixels = map(read, rest) if seconds_left < POOL_SECONDS else _in_workers(read, rest)
    for i, image in enumerate(pixels, head):
        images[i] = image
        if progress is not None and (i + 1) % CHUNKSIZE == 0:
            progress.update(i + 1)
    if progress is not None:
        progress.update(len(paths), finalize=True)
    return images


def _in_workers(read, paths):
    """`map(read, paths)` in spawned worker processes, `CHUNKSIZE` files per task."""
    workers = min(_cpu_count(), -(-len(paths) // CHUNKSIZE))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            yield from pool.map(read, paths, chunksize=CHUNKSIZE)
        except concurrent.futures.process.BrokenProcessPool as error:
            raise RuntimeError(
                "The image-decoding worker processes stopped (out of memory? or a script without "
                "a main guard: workers start with 'spawn', which runs the main script again in "
                "each, so a script that loads a large folder needs `if __name__ == \"__main__\":`)."
            ) from error


def read_resized(path, image_size):
    """`read_image`, resized to `image_size` where its size differs.

    Pillow's BILINEAR resize widens its triangle filter by the reduction factor when it
    shrinks, as `tf.image.resize(..., "bilinear", antialias=True)` does in `load`: on
    the same decoded pixels the two differ by at most one level (rounding).
    """
    from PIL import Image

    pixels = read_image(path)
    if pixels.shape[:2] == tuple(image_size):
        return pixels
    resized = Image.fromarray(pixels).resize(tuple(image_size)[::-1], Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized)


def check_arrays(images, labels, num_classes=None, name="images"):
    """User images and labels checked and converted to what the in-memory pipeline takes.

    Pixels are uint8 in [0, 255], as every source yields them (the models rescale
    inside): any other dtype is refused rather than guessed at, since a float array may
    hold [0, 1] or [0, 255] values and a silent cast would train on the wrong scale.

    Args:
        images: array-like, (N, H, W, 3) RGB, or (N, H, W) / (N, H, W, 1) gray
            (repeated to RGB); uint8.
        labels: array-like of N integer class ids, shaped (N,) or (N, 1).
        num_classes: optional int: every label must be below it.
        name: what the images are called in error messages.

    Returns:
        `(images, labels)`: uint8 (N, H, W, 3) and int32 (N,).

    Raises:
        ValueError: naming the received shape, dtype, value range or labels.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(
            f"`{name}` must be a non-empty array shaped (N, H, W, 3) RGB, or (N, H, W) / (N, H, W, 1) "
            f"gray. Received: {name}.shape={images.shape}"
        )
    if images.dtype != np.uint8:
        values = ""
        if images.dtype.kind in "biuf":
            low, high = images.min(), images.max()
            outside = " (outside [0, 255])" if low < 0 or high > 255 else ""
            values = f" with values from {low} to {high}{outside}"
        raise ValueError(
            f"`{name}` must be uint8 pixels in [0, 255] (e.g. `(x * 255).round().astype('uint8')` for "
            f"floats in [0, 1]). Received: {name}.dtype={images.dtype}{values}"
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images, _check_labels(labels, len(images), num_classes, name)


def array_info(images, labels, num_classes=None, class_names=None, name="arrays", split="train"):
    """A `DatasetInfo` for user arrays (checked by `check_arrays`), so they go where a
    loaded dataset goes.

    Args:
        images, labels: as `check_arrays` takes them.
        num_classes: optional int; defaults to `len(class_names)`, else the largest
            label + 1.
        class_names: optional sequence of names in label order; defaults to "0", "1", ...
        name: the dataset's name.
        split: "train", "validation" or "test".

    Returns:
        A `DatasetInfo` with source "arrays" and flip_invariant True (pass the info
        through `dataclasses.replace` for data a flip changes, such as digits).
    """
    check_split(split)
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(
                f"`num_classes` must equal the number of `class_names`. Received: num_classes={num_classes!r} "
                f"and {len(class_names)} class_names"
            )
        num_classes = len(class_names)
    images, labels = check_arrays(images, labels, num_classes)
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    return DatasetInfo(
        name=name, split=split, class_names=class_names or tuple(str(c) for c in range(num_classes)),
        num_classes=num_classes, num_examples=len(labels), image_shape=images.shape[1:], source="arrays",
        note=f"in-memory arrays passed by the caller ({len(labels)} images)",
    )


def split_arrays(images, labels, validation_fraction=0.1, seed=0):
    """A seeded validation hold-out of each class, for arrays that come without one.

    The rule of a folder's hold-out (`list_folder`): each class, in label order, is
    shuffled with one `np.random.RandomState(seed)` and its last
    `max(1, round(n * validation_fraction))` images are held out; both parts keep the
    arrays' order. A class of one image goes to validation whole.

    Returns:
        `((train_images, train_labels), (validation_images, validation_labels))`.
    """
    _check_fraction(validation_fraction)
    images = np.asarray(images)
    labels = _check_labels(labels, len(images), None, "images")
    rng = np.random.RandomState(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = rng.permutation(len(members))
        held.append(members[order[-max(1, int(round(len(members) * validation_fraction))):]])
    validation = np.zeros(len(labels), bool)
    validation[np.concatenate(held)] = True
    return (images[~validation], labels[~validation]), (images[validation], labels[validation])


def _check_labels(labels, count, num_classes, name):
    """Labels as int32 (N,); refuses other shapes, non-integers, a count that is not the
    image count, negative labels and labels not below `num_classes`."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            "`labels` must be integer class ids shaped (N,) or (N, 1) (one-hot labels: pass "
            f"`labels.argmax(-1)`). Received: labels.shape={labels.shape}, labels.dtype={labels.dtype}"
        )
    if len(labels) != count:
        raise ValueError(f"`{name}` and `labels` must have one label per image. Received: {count} images "
                         f"and {len(labels)} labels")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"`labels` must be >= 0. Received: smallest label {labels.min()}")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"`num_classes` must be an integer >= 1. Received: num_classes={num_classes!r}")
        if len(labels) and labels.max() >= num_classes:
            raise ValueError(f"Every label must be below `num_classes`. Received: largest label {labels.max()} "
                             f"with num_classes={num_classes}")
    return labels.astype(np.int32)


def _check_fraction(validation_fraction):
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"`validation_fraction` must be in (0, 1). Received: validation_fraction={validation_fraction}"
        )


def _tfds_arrays(name, split, image_size, validation_fraction, data_dir):
    """A TFDS split through `sources.tfds` (the same split, resize and info as `load`),
    collected into NumPy; this imports TensorFlow."""
    ds, info = sources.tfds(name, split, image_size, validation_fraction, data_dir)
    batches = list(ds.batch(1024).as_numpy_iterator())
    if not batches:
        raise ValueError(f"The {split!r} split of the TFDS dataset {name!r} holds no images.")
    images, labels = (np.concatenate(parts) for parts in zip(*batches))
    return images, labels.astype(np.int32), info


def _cache_path(cache_dir, root, split, key, paths, labels):
    """The .npz that holds this split's arrays, named by a hash of what they depend on."""
    digest = hashlib.sha256(repr((_CACHE_FORMAT, key)).encode())
    for path, label in zip(paths, labels):
        stat = os.stat(path)
        digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    default = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "keras_vitmix")
    folder_name = pathlib.Path(os.path.abspath(root)).name or "folder"
    return pathlib.Path(cache_dir or default) / f"{folder_name}-{split}-{digest.hexdigest()[:24]}.npz"


def _read_cache(path, count):
    """The cached images, or None when there are none (or they are unreadable: decode again)."""
    try:
        with np.load(path) as data:
            images = data["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, or not an .npz
        return None
    return images if images.dtype == np.uint8 and images.ndim == 4 and len(images) == count else None


def _write_cache(path, images):
    """Writes the .npz whole or not at all (temporary file + rename): a second process
    reading it, or an interrupted write, never sees half an array. A cache that cannot be
    written (read-only home?) costs a warning, not the arrays."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as error:
        warnings.warn(f"Decoded images not cached (set {CACHE_ENV} or pass `cache_dir`): {error}", stacklevel=3)
        return
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, images=images)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
