"""Every in-memory source as NumPy arrays, without TensorFlow: the digits, a folder decoded
once (in worker processes when it is large) and cached as .npz, and user arrays checked,
described and split.

For a training loop that keeps the data on the accelerator under JAX or PyTorch: these
paths import NumPy, Pillow and scikit-learn only, so TensorFlow need not be installed.
A TFDS name is the exception: TFDS needs TensorFlow. The splits, labels and
`DatasetInfo` are those `keras_vitmix.datasets.load` gives for the same source and
split; so are the pixels, but for JPEG decoding: Pillow runs libjpeg's accurate integer
IDCT, TensorFlow's `decode_image` the fast one, a level or so apart.
"""

import os
import zipfile

import numpy as np

from keras_vitmix.datasets import files, sources
from keras_vitmix.datasets.files import CACHE_ENV, decode_files, read_resized  # noqa: F401 (public here too)
from keras_vitmix.datasets.folders import folder_split, hold_out_indices, no_test_reason, read_image, require_images
from keras_vitmix.datasets.info import DatasetInfo, as_image_size, check_fractions, check_split

_CACHE_FORMAT = 1  # bump when the cached arrays change meaning


def load_arrays(
    name_or_path="digits",
    split="train",
    image_size=None,
    seed=0,
    validation_fraction=0.1,
    test_fraction=0.1,
    data_dir=None,
    cache_dir=None,
):
    """Loads a split as NumPy arrays: the same data `load` streams through tf.data.

    Args:
        name_or_path: "digits", a folder in `train/<class>/*.jpg|png` layout (optionally
            with `test/<class>/`), or a TFDS image-classification name (which imports
            TensorFlow).
        split: "train", "validation" (for model selection) or "test" (disjoint from
            both, never to select on).
        image_size: int or (height, width); defaults to the source's size (32 for
            digits, the first file's size for a folder, in sorted order).
        seed: int, seeds a folder's hold-outs.
        validation_fraction: float in (0, 1), the part of a folder's (or a TFDS
            dataset's) training data held out as validation when it has none.
        test_fraction: float in [0, 1), the part of a folder's (or a TFDS dataset's)
            training data held out as test, disjoint from validation, when it has no
            test split; 0 makes none. Digits keep their fixed 70/10/20 split.
        data_dir: optional TFDS data directory.
        cache_dir: where a folder's decoded arrays are cached; defaults to
            `$KERAS_VITMIX_CACHE` or `~/.cache/keras_vitmix`.

    Returns:
        `(images, labels, info)`: uint8 (N, H, W, 3), int32 (N,) and the `DatasetInfo`
        `load` gives. The whole split is in memory (CIFAR-10's training images: 150 MB).
        A folder's images come in its file order (class by class): shuffle when training.
        A test split that cannot be made (see `list_folder`) is empty, N = 0, and
        `info.note` says why.

    Raises:
        ValueError: for bad arguments, and for a folder with files that do not decode,
            naming every one of the split's (up to `files.LISTED`, then a count).

    Example:

    >>> images, labels, info = load_arrays("digits", "validation")
    >>> images.shape, labels.shape, info.num_classes
    ((180, 32, 32, 3), (180,), 10)
    """
    check_split(split)
    check_fractions(validation_fraction, test_fraction)
    image_size = as_image_size(image_size)
    name = os.fspath(name_or_path)
    if name == "digits":
        return sources.digits_arrays(split, image_size)
    if os.path.isdir(name):
        return folder_arrays(name, split, image_size, seed, validation_fraction, test_fraction, cache_dir)
    if os.path.sep in name or name.startswith("."):
        raise ValueError(f"No such folder. Received: name_or_path={name!r}")
    return _tfds_arrays(name, split, image_size, validation_fraction, test_fraction, data_dir)


def folder_arrays(
    root, split="train", image_size=None, seed=0, validation_fraction=0.1, test_fraction=0.1, cache_dir=None
):
    """A folder's split decoded with Pillow into arrays, cached as .npz on first use.

    The cache file is named by a hash of the folder's absolute path, the split, seed,
    fractions, image size and every listed file's path, label, size and modification
    time: adding, replacing or touching an image decodes the split again. Arguments and
    returns as in `load_arrays`.
    """
    part = folder_split(root, split, seed, validation_fraction, test_fraction)
    require_images(part)
    if not part.paths:  # no test split: part.note says why
        size = image_size or read_image(part.sample).shape[:2]
        return np.zeros((0, *size, 3), np.uint8), np.zeros((0,), np.int32), part.info((*size, 3))
    key = (_CACHE_FORMAT, os.path.abspath(root), split, seed, float(validation_fraction), float(test_fraction),
           image_size)
    cache_name = files.folder_cache_name(root, split)
    cache = files.cache_file(cache_dir, cache_name, key, part.paths, part.labels)
    images = _read_cache(cache, len(part.paths))
    if images is None:
        images = decode_files(part.paths, image_size, name=f"the {split!r} split of {root}")
        files.write_atomically(cache, lambda file: np.savez(file, images=images))
    files.mark_checked(part.paths, cache_name, cache_dir)
    return images, np.asarray(part.labels, np.int32), part.info(images.shape[1:])


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
    """A seeded validation hold-out of each class, for arrays that come without one:
    `hold_out_arrays` with no test part.

    Returns:
        `((train_images, train_labels), (validation_images, validation_labels))`.
    """
    parts, _ = hold_out_arrays(images, labels, validation_fraction, 0.0, seed)
    return parts["train"], parts["validation"]


def hold_out_arrays(images, labels, validation_fraction=0.1, test_fraction=0.1, seed=0):
    """Seeded, disjoint validation and test hold-outs of each class, by a folder's rule
    (`list_folder`: each class, in label order, shuffled with one
    `np.random.RandomState(seed)`; its last `max(1, round(n * validation_fraction))`
    images are validation, the `max(1, round(n * test_fraction))` before them test).
    Every part keeps the arrays' order. Where a class cannot give train, validation and
    test one image each, or `test_fraction` is 0, no class gives test.

    Returns:
        `(parts, reason)`: {"train", "validation", "test"}: (images, labels), and why
        the test part is empty ("" when it is not).
    """
    check_fractions(validation_fraction, test_fraction)
    images = np.asarray(images)
    labels = _check_labels(labels, len(images), None, "images")
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == label) for label in classes]
    reason = no_test_reason(
        {str(label): len(m) for label, m in zip(classes, members)}, validation_fraction, test_fraction,
        source="the arrays", remedy="pass a 'test' split of your own",
    )
    chosen = hold_out_indices([len(m) for m in members], seed, validation_fraction, 0.0 if reason else test_fraction)
    parts = {}
    for split in ("train", "validation", "test"):
        index = np.sort(np.concatenate([m[c[split]] for m, c in zip(members, chosen)]))
        parts[split] = (images[index], labels[index])
    return parts, reason


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


def _tfds_arrays(name, split, image_size, validation_fraction, test_fraction, data_dir):
    """A TFDS split through `sources.tfds` (the same split, resize and info as `load`),
    collected into NumPy; this imports TensorFlow. An empty test split (none can be
    made: `info.note` says why) gives empty arrays."""
    ds, info = sources.tfds(name, split, image_size, validation_fraction, test_fraction, data_dir)
    batches = list(ds.batch(1024).as_numpy_iterator())
    if not batches:
        if split == "test":
            return np.zeros((0, *info.image_shape), np.uint8), np.zeros((0,), np.int32), info
        raise ValueError(f"The {split!r} split of the TFDS dataset {name!r} holds no images.")
    images, labels = (np.concatenate(parts) for parts in zip(*batches))
    return images, labels.astype(np.int32), info


def _read_cache(path, count):
    """The cached images, or None when there are none (or they are unreadable: decode again)."""
    try:
        with np.load(path) as data:
            images = data["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, or not an .npz
        return None
    return images if images.dtype == np.uint8 and images.ndim == 4 and len(images) == count else None
