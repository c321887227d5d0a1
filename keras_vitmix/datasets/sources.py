"""The sources `load` reads, each as an unbatched `tf.data.Dataset` of (uint8 image, int32
label) at one image size, with its `DatasetInfo`: the embedded digits, an image folder,
and any TFDS image-classification dataset.

Each source decodes and resizes, and nothing more; batching, shuffling and augmentation
are the pipeline's (`keras_vitmix.datasets.pipeline`), the same for every source. The
digits are made in NumPy (`digits_arrays`), which `keras_vitmix.datasets.arrays` shares.
"""

import difflib
import pathlib

import numpy as np

from keras_vitmix.datasets.folders import list_folder, read_image
from keras_vitmix.datasets.info import DatasetInfo, DatasetUnavailableError


def digits(split, image_size):
    """`digits_arrays` as a tf.data Dataset: the pipeline and `load_arrays` see the same pixels."""
    import tensorflow as tf

    images, labels, info = digits_arrays(split, image_size)
    return tf.data.Dataset.from_tensor_slices((images, labels)), info


def digits_arrays(split, image_size):
    """scikit-learn's digits as NumPy: a fixed stratified 70/10/20 train/validation/test split.

    Resized with Pillow's bicubic filter on the 0..255 float pixels, so that the tf.data
    pipeline and the TensorFlow-free in-memory path share one implementation. Upscaled
    (the default 32x32), it agrees with `tf.image.resize(..., "bicubic")` to within one
    level after rounding; shrunk below 8x8, Pillow antialiases where TensorFlow's bicubic
    would alias.

    Returns:
        `(images, labels, info)`: uint8 (N, H, W, 3) gray-as-RGB, int32 (N,), `DatasetInfo`.
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    index = np.arange(len(data.target))
    rest, test = train_test_split(index, test_size=0.2, stratify=data.target, random_state=0)
    train, validation = train_test_split(rest, test_size=0.125, stratify=data.target[rest], random_state=0)
    chosen = {"train": train, "validation": validation, "test": test}[split]
    size = image_size or (32, 32)
    pixels = (data.images[chosen] * (255.0 / 16.0)).astype(np.float32)  # 0..16 -> 0..255
    # Mode "F" (32-bit float): Pillow resamples it without rounding to 8 bits first.
    resized = [np.asarray(Image.fromarray(p).resize(size[::-1], Image.Resampling.BICUBIC)) for p in pixels]
    gray = np.clip(np.round(np.stack(resized)), 0, 255).astype(np.uint8)
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
    return np.repeat(gray[..., None], 3, axis=-1), data.target[chosen].astype(np.int32), info


def folder(root, split, image_size, seed, validation_fraction, shuffle=False):
    """`train/<class>/...` (+ optional `test/`); validation held out of train per class.

    With `shuffle`, the file list is permuted (seeded) before it is read: folders list
    their images class by class, and a folder larger than the pipeline's shuffle buffer
    would otherwise stream in class order, each epoch ending on the last classes
    (commit 60acea8 measured what that cost).
    """
    import tensorflow as tf

    paths, labels, classes, note = list_folder(root, split, seed, validation_fraction)
    if shuffle:
        order = np.random.RandomState(seed).permutation(len(paths))
        paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    if not paths:
        raise ValueError(f"The {split!r} split of {root!s} holds no images (each class of train/ gives at "
                         "least one image to validation: a class of one image gives train none).")
    if image_size is None:
        image_size = read_image(paths[0]).shape[:2]
    image_size = tuple(int(d) for d in image_size)
    info = DatasetInfo(
        name=str(pathlib.Path(root)), split=split, class_names=tuple(classes), num_classes=len(classes),
        num_examples=len(paths), image_shape=(*image_size, 3), source="folder", note=note,
    )

    def read(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return resize(image, image_size), label

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE), info


def resize(image, size):
    """Any size and channel count -> uint8 RGB of `size` (a graph op, for tf.data)."""
    import tensorflow as tf

    image.set_shape([None, None, 3])

    def resized():  # only for images of another size: most folders need none
        out = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), image.dtype)

    image = tf.cond(tf.reduce_all(tf.shape(image)[:2] == size), lambda: image, resized)
    return tf.ensure_shape(tf.cast(image, tf.uint8), (*size, 3))


def tfds(name, split, image_size, validation_fraction, data_dir):
    """A TFDS image-classification dataset; without a validation split, one is held out
    of train (the last `validation_fraction`)."""
    import tensorflow as tf

    builder = _tfds_builder(name, data_dir)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"{name!r} is not an image-classification dataset (needs 'image' and 'label' features). "
            f"Features: {list(features)}"
        )
    splits = builder.info.splits
    tfds_split = _tfds_split(split, splits, validation_fraction)
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
        return resize(image[..., :3], size), tf.cast(label, tf.int32)

    return ds.map(standardize, num_parallel_calls=tf.data.AUTOTUNE), info


def _tfds_builder(name, data_dir):
    """The prepared builder; an unknown name is a ValueError (with close names), a
    dataset that cannot be fetched here a `DatasetUnavailableError`."""
    import tensorflow_datasets

    try:
        builder = tensorflow_datasets.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError, or a bad name format
        known = [n for n in tensorflow_datasets.list_builders() if "/" not in n]
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
    return builder


def _tfds_split(split, splits, validation_fraction):
    percent = int(round(100 * (1 - validation_fraction)))
    if split == "train":
        return "train" if "validation" in splits else f"train[:{percent}%]"
    if split == "validation":
        return "validation" if "validation" in splits else f"train[{percent}%:]"
    return "test" if "test" in splits else ("validation" if "validation" in splits else f"train[{percent}%:]")


def _count(splits, tfds_split, ds):
    """Examples in a TFDS split, from its metadata or (when absent) by counting."""
    try:
        return int(splits[tfds_split].num_examples)
    except KeyError:
        count = int(ds.cardinality())
        return count if count >= 0 else int(ds.reduce(0, lambda n, _: n + 1))
