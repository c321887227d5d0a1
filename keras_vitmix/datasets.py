"""tf.data pipelines: the embedded digits, any TFDS image-classification name, or a folder.

Every source yields batches of (images, labels): float32 pixel values in [0, 255] shaped
(B, H, W, 3) — the models rescale and normalize inside — and int32 labels (or one-hot
float labels when "strong" augmentation mixes images). Pipelines run in TensorFlow's
tf.data whatever the Keras backend; Keras preprocessing layers work inside them.
"""

import dataclasses
import difflib
import os
import pathlib

import numpy as np

SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# The first bytes of each accepted image format.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")
AUGMENTS = (False, True, "light", "strong")
# Elements the training shuffle holds (all of a smaller split; see `_folder` for larger).
SHUFFLE_BUFFER = 20_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `load` returns beside the dataset.

    Attributes:
        name: the dataset's name or folder.
        split: "train", "validation" or "test".
        class_names: tuple of class names, in label order.
        num_classes: int.
        num_examples: int, examples in this split.
        image_shape: (height, width, 3) of the images yielded.
        source: "embedded", "tfds" or "folder".
        note: how the split was made (e.g. held out of train/ with a seed).
        flip_invariant: whether a horizontal flip keeps the label (False for digits).
    """

    name: str
    split: str
    class_names: tuple
    num_classes: int
    num_examples: int
    image_shape: tuple
    source: str
    note: str = ""
    flip_invariant: bool = True


class DatasetUnavailableError(ValueError):
    """A TFDS dataset that exists but cannot be downloaded or prepared here (offline?)."""


def load(
    name_or_path="digits",
    split="train",
    image_size=None,
    batch_size=128,
    augment=False,
    shuffle=None,
    seed=0,
    validation_fraction=0.1,
    data_dir=None,
    drop_remainder=False,
):
    """Loads a split as a batched, prefetched `tf.data.Dataset` of (images, labels).

    Args:
        name_or_path: "digits" (embedded: scikit-learn's 1,797 real 8x8 handwritten
            digits, upscaled to 32x32 RGB, no network needed), a TFDS
            image-classification name ("cifar10", "mnist", ...), or a folder in
            `train/<class>/*.jpg|png` layout (optionally with `test/<class>/`).
        split: "train", "validation" or "test".
        image_size: int or (height, width) to resize to; defaults to the source's size
            (32 for digits, the first image's size for a folder).
        batch_size: int >= 1.
        augment: False; True or "light" (random crop after padding, horizontal flip
            where the labels allow it); or "strong" (light + RandAugment + MixUp/CutMix,
            which makes labels one-hot). Applied to the training split only.
        shuffle: whether to shuffle; defaults to True for the training split only. A
            folder's file list is then also permuted before it is read (folders
            list their images class by class).
        seed: int, seeds shuffling, augmentation and a folder's validation split.
        validation_fraction: float in (0, 1), the part of a folder's (or a TFDS
            dataset's) training data held out as validation when it has none.
        data_dir: optional TFDS data directory (default: `TFDS_DATA_DIR` or TFDS's own).
        drop_remainder: drop the last, partial batch when the split holds at least one
            full batch: every batch has one shape, so XLA compiles one step, not two.
            With shuffling, the images left out change from epoch to epoch.

    Returns:
        `(dataset, info)`: the `tf.data.Dataset` and a `DatasetInfo`.

    Example:

    >>> train, info = load("digits", "train", batch_size=64, augment=True)
    >>> info.num_classes, info.image_shape
    (10, (32, 32, 3))
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    if augment not in AUGMENTS:
        raise ValueError(f"`augment` must be one of {AUGMENTS}. Received: augment={augment!r}")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"`validation_fraction` must be in (0, 1). Received: validation_fraction={validation_fraction}"
        )
    image_size = as_image_size(image_size)
    shuffle = split == "train" if shuffle is None else bool(shuffle)
    name = os.fspath(name_or_path)
    if name == "digits":
        images, labels, info = _digits(split, image_size)
        ds = _from_arrays(images, labels)
    elif os.path.isdir(name):
        ds, info = _folder(name, split, image_size, seed, validation_fraction, shuffle)
    elif os.path.sep in name or name.startswith("."):
        raise ValueError(f"No such folder. Received: name_or_path={name!r}")
    else:
        ds, info = _tfds(name, split, image_size, validation_fraction, data_dir)
    drop_remainder = bool(drop_remainder) and info.num_examples >= batch_size
    return _finish(ds, info, batch_size, augment if split == "train" else False, shuffle, seed, drop_remainder), info


def resolve(name_or_path="cifar10", fallback="digits", data_dir=None):
    """The dataset to use: `name_or_path` where it loads here, else `fallback`; says which.

    For code whose default is a TFDS dataset but that must also run offline (the
    tutorials): a TFDS dataset that cannot be downloaded or prepared gives way to
    `fallback`; unknown names and missing folders still raise. `data_dir` as in `load`.

    Returns:
        `(name, info)`: the name or path to pass to `load`, and its train split's
        `DatasetInfo`. One line is printed: the dataset used, and why when it fell back.
    """
    name, reason = name_or_path, ""
    try:
        _, info = load(name, "train", batch_size=1, data_dir=data_dir)
    except DatasetUnavailableError as error:
        name, reason = fallback, f" ({name_or_path!r} is unavailable here: {str(error).rsplit('Original error: ')[-1]})"
        _, info = load(name, "train", batch_size=1, data_dir=data_dir)
    print(f"Dataset: {info.name} ({info.source}, {info.num_examples:,} training images, "
          f"{info.num_classes} classes){reason}")
    return os.fspath(name), info


def as_image_size(image_size):
    """None, or an int or (height, width) checked and returned as a tuple."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_size)
    ):
        raise ValueError(f"`image_size` must be an int or (height, width). Received: image_size={image_size!r}")
    return tuple(image_size)


def _digits(split, image_size):
    """scikit-learn's digits: a fixed stratified 70/10/20 train/validation/test split."""
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    rest, test = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=0)
    train, validation = train_test_split(
        rest, test_size=0.125, stratify=digits.target[rest], random_state=0
    )
    chosen = {"train": train, "validation": validation, "test": test}[split]
    size = image_size or (32, 32)
    pixels = digits.images[chosen, :, :, None] * (255.0 / 16.0)  # 0..16 -> 0..255
    pixels = tf.image.resize(pixels, size, method="bicubic").numpy()
    pixels = np.repeat(np.clip(np.round(pixels), 0, 255).astype(np.uint8), 3, axis=-1)
    info = DatasetInfo(
        name="digits",
        split=split,
        class_names=tuple(str(d) for d in range(10)),
        num_classes=10,
        num_examples=len(chosen),
        image_shape=(*size, 3),
        source="embedded",
        note="scikit-learn digits, fixed stratified 70/10/20 split",
        flip_invariant=False,
    )
    return pixels, digits.target[chosen].astype(np.int32), info


def _from_arrays(images, labels):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, labels))


def _class_folders(root):
    folders = sorted(p for p in pathlib.Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(
            f"The folder has no class sub-folders; expected <folder>/<class>/*.jpg|png. Received: {root!s}"
        )
    return folders


def _image_files(folder):
    files = sorted(
        str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    for path in files:
        with open(path, "rb") as handle:
            head = handle.read(8)
        if not any(head.startswith(magic) for magic in _MAGIC):
            raise ValueError(f"Not a JPEG, PNG, BMP or GIF image (corrupt file?). Received: {path}")
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
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    root = pathlib.Path(root)
    train_root = root / "train" if (root / "train").is_dir() else None
    if train_root is None:
        raise ValueError(
            f"Expected a folder with train/<class>/*.jpg|png (and optionally test/). Received: {root!s}"
        )
    classes = [p.name for p in _class_folders(train_root)]
    has_test = (root / "test").is_dir()
    note = "test/ folder"
    if split == "test" and has_test:
        test_classes = [p.name for p in _class_folders(root / "test")]
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise ValueError(f"test/ has classes that train/ lacks: {unknown}. train/ classes: {classes}")
        paths, labels = [], []
        for name in test_classes:
            files = _image_files(root / "test" / name)
            paths += files
            labels += [classes.index(name)] * len(files)
    else:
        rng = np.random.RandomState(seed)
        paths, labels = [], []
        for label, name in enumerate(classes):
            files = _image_files(train_root / name)
            if not files:
                raise ValueError(f"Class folder {train_root / name} holds no .jpg/.png images.")
            order = rng.permutation(len(files))
            held = max(1, int(round(len(files) * validation_fraction)))
            keep = order[:-held] if split == "train" else order[-held:]
            paths += [files[i] for i in sorted(keep)]
            labels += [label] * len(keep)
        note = (
            f"held out of train/: the last {validation_fraction:.0%} of each class, shuffled with seed {seed}"
            if split != "train"
            else f"train/ minus a {validation_fraction:.0%} validation hold-out (seed {seed})"
        )
        if split == "test":
            note = "no test/ folder: the test split is the validation hold-out, " + note
    return paths, labels, tuple(classes), note


def _folder(root, split, image_size, seed, validation_fraction, shuffle=False):
    """`train/<class>/...` (+ optional `test/`); validation held out of train per class.

    With `shuffle`, the file list is permuted (seeded) before it is read: folders list
    their images class by class, and a folder larger than `SHUFFLE_BUFFER` was otherwise
    streamed in class order (RESULTS.md, "Accuracy on CIFAR-10 with a shuffled folder
    stream").
    """
    import tensorflow as tf

    paths, labels, classes, note = list_folder(root, split, seed, validation_fraction)
    if shuffle:
        order = np.random.RandomState(seed).permutation(len(paths))
        paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    root = pathlib.Path(root)
    if image_size is None:
        first = tf.io.decode_image(tf.io.read_file(paths[0]), channels=3, expand_animations=False)
        image_size = tuple(int(d) for d in first.shape[:2])
    info = DatasetInfo(
        name=str(root), split=split, class_names=tuple(classes), num_classes=len(classes),
        num_examples=len(paths), image_shape=(*image_size, 3), source="folder", note=note,
    )

    def read(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return _resize(image, image_size), label

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE), info


def _resize(image, size):
    """Any size and channel count -> uint8 RGB of `size`."""
    import tensorflow as tf

    image.set_shape([None, None, 3])

    def resize():  # only for images of another size: most folders need none
        resized = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), image.dtype)

    image = tf.cond(tf.reduce_all(tf.shape(image)[:2] == size), lambda: image, resize)
    return tf.ensure_shape(tf.cast(image, tf.uint8), (*size, 3))


def _tfds(name, split, image_size, validation_fraction, data_dir):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError, or a bad name format
        known = [n for n in tfds.list_builders() if "/" not in n]
        close = difflib.get_close_matches(name, known + ["digits"], n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown dataset. Received: name_or_path={name!r}.{hint} Use 'digits', a TFDS "
            f"image-classification name, or a folder in train/<class>/ layout. ({error})"
        ) from None
    try:
        builder.download_and_prepare()
    except Exception as error:
        raise DatasetUnavailableError(
            f"Could not download or prepare the TFDS dataset {name!r} (offline?). Ways out: the "
            "embedded dataset ('digits'), a local folder in train/<class>/*.jpg layout, or "
            "TFDS_DATA_DIR / data_dir pointing at a directory where the dataset is already "
            f"prepared. Original error: {type(error).__name__}: {error}"
        ) from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"{name!r} is not an image-classification dataset (needs 'image' and 'label' features). "
            f"Features: {list(features)}"
        )
    splits = builder.info.splits
    percent = int(round(100 * (1 - validation_fraction)))
    if split == "train":
        tfds_split = "train" if "validation" in splits else f"train[:{percent}%]"
    elif split == "validation":
        tfds_split = "validation" if "validation" in splits else f"train[{percent}%:]"
    else:
        tfds_split = "test" if "test" in splits else ("validation" if "validation" in splits else f"train[{percent}%:]")
    ds = builder.as_dataset(split=tfds_split, as_supervised=True, shuffle_files=False)
    shape = features["image"].shape
    size = image_size or (tuple(shape[:2]) if None not in shape[:2] else None)
    if size is None:
        raise ValueError(f"{name!r} has images of varying size: pass `image_size`.")
    info = DatasetInfo(
        name=name, split=split, class_names=tuple(features["label"].names),
        num_classes=features["label"].num_classes, num_examples=_count(splits, tfds_split, ds),
        image_shape=(*size, 3), source="tfds", note=f"TFDS split {tfds_split!r}",
    )

    def standardize(image, label):
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        return _resize(image[..., :3], size), tf.cast(label, tf.int32)

    return ds.map(standardize, num_parallel_calls=tf.data.AUTOTUNE), info


def _count(splits, tfds_split, ds):
    """Examples in a TFDS split, from its metadata or (when absent) by counting."""
    try:
        return int(splits[tfds_split].num_examples)
    except KeyError:
        count = int(ds.cardinality())
        return count if count >= 0 else int(ds.reduce(0, lambda n, _: n + 1))


def _finish(ds, info, batch_size, augment, shuffle, seed, drop_remainder=False):
    import tensorflow as tf

    ds = ds.cache()  # decoded uint8 images: CIFAR-10's 50,000 are 150 MB
    if shuffle:
        ds = ds.shuffle(min(info.num_examples, SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        strength = "strong" if augment == "strong" else "light"
        from keras_vitmix import augmentation

        ds = ds.map(augmentation.augmenter(info, strength, seed), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
