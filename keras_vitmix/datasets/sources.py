"""The sources `load` reads, each as an unbatched `tf.data.Dataset` of (uint8 image, int32
label) at one image size, with its `DatasetInfo`: the embedded digits, an image folder,
and any TFDS image-classification dataset.

Each source decodes and resizes, and nothing more; batching, shuffling and augmentation
are the pipeline's (`keras_vitmix.datasets.pipeline`), the same for every source. The
digits are made in NumPy (`digits_arrays`), which `keras_vitmix.datasets.arrays` shares.
"""

import difflib

import numpy as np

from keras_vitmix.datasets import files
from keras_vitmix.datasets.folders import folder_split, read_image, require_images
from keras_vitmix.datasets.info import DatasetInfo, DatasetUnavailableError, percent


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
        note="scikit-learn digits, fixed stratified 70/10/20 train/validation/test split (seed and fractions "
             "do not move it)",
        flip_invariant=False,
        validation_fraction=0.1,
        test_fraction=0.2,
    )
    return np.repeat(gray[..., None], 3, axis=-1), data.target[chosen].astype(np.int32), info


def folder(root, split, image_size, seed, validation_fraction, test_fraction, shuffle=False, cache_dir=None):
    """`train/<class>/...` (+ optional `test/`): validation, and test without `test/`,
    held out of train per class (`keras_vitmix.datasets.folders`).

    Every file of the split is checked first (`files.check_files`: decoded once with
    Pillow, then remembered by a marker in `cache_dir`), so that a bad file is named,
    with all others, before a pipeline runs rather than by TensorFlow mid-epoch.

    With `shuffle`, the file list is permuted (seeded) before it is read: folders list
    their images class by class, and a folder larger than the pipeline's shuffle buffer
    would otherwise stream in class order, each epoch ending on the last classes
    (commit 60acea8 measured what that cost). An empty test split (none can be made:
    the info's note says why) is an empty dataset.
    """
    import tensorflow as tf

    part = folder_split(root, split, seed, validation_fraction, test_fraction)
    require_images(part)
    files.check_files(part.paths, f"the {split!r} split of {root}", files.folder_cache_name(root, split), cache_dir)
    paths, labels = part.paths, part.labels
    if shuffle:
        order = np.random.RandomState(seed).permutation(len(paths))
        paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    image_size = tuple(int(d) for d in (image_size or read_image(part.sample).shape[:2]))

    def read(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return resize(image, image_size), label

    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), tf.constant(labels, tf.int32)))
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE), part.info((*image_size, 3))


def resize(image, size):
    """Any size and channel count -> uint8 RGB of `size` (a graph op, for tf.data)."""
    import tensorflow as tf

    image.set_shape([None, None, 3])

    def resized():  # only for images of another size: most folders need none
        out = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), image.dtype)

    image = tf.cond(tf.reduce_all(tf.shape(image)[:2] == size), lambda: image, resized)
    return tf.ensure_shape(tf.cast(image, tf.uint8), (*size, 3))


def tfds(name, split, image_size, validation_fraction, test_fraction, data_dir):
    """A TFDS image-classification dataset, through its own splits where it has them;
    a missing validation or test split is a slice of its train split (`tfds_split`),
    never the other held-out split. A test split that cannot be made is empty."""
    import tensorflow as tf

    builder = _tfds_builder(name, data_dir)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"{name!r} is not an image-classification dataset (needs 'image' and 'label' features). "
            f"Features: {list(features)}"
        )
    splits = builder.info.splits
    sizes = {key: int(splits[key].num_examples) for key in splits.keys()}
    tfds_name, note, held_validation, held_test = tfds_split(name, split, sizes, validation_fraction, test_fraction)
    ds = builder.as_dataset(split=tfds_name or "train", as_supervised=True, shuffle_files=False)
    if tfds_name is None:
        ds = ds.take(0)  # no test split: `note` says why
    shape = features["image"].shape
    size = image_size or (tuple(shape[:2]) if None not in shape[:2] else None)
    if size is None:
        raise ValueError(f"{name!r} has images of varying size: pass `image_size`.")
    info = DatasetInfo(
        name=name, split=split, class_names=tuple(features["label"].names), num_classes=features["label"].num_classes,
        num_examples=0 if tfds_name is None else _count(splits, tfds_name, ds),
        image_shape=(*size, 3), source="tfds", note=note, validation_fraction=held_validation,
        test_fraction=held_test,
    )

    def standardize(image, label):
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        return resize(image[..., :3], size), tf.cast(label, tf.int32)

    return ds.map(standardize, num_parallel_calls=tf.data.AUTOTUNE), info


def tfds_split(name, split, sizes, validation_fraction, test_fraction):
    """Which TFDS split gives `split`, and how it was made.

    The dataset's own validation and test splits where it has them. Otherwise slices
    of its train split, in this order: train, test, validation — the last
    `max(1, round(n * validation_fraction))` examples are validation, the
    `max(1, round(n * test_fraction))` before them test (none when `test_fraction`
    is 0, or train is too small to give all three), so the two never overlap. Split
    sizes unknown (a mocked TFDS) slice by whole percents.

    Args:
        sizes: {TFDS split name: number of examples}.

    Returns:
        `(tfds_split, note, validation_fraction, test_fraction)`: the TFDS split string
        (None: no test split, `note` says why) and the fractions held out of train
        (None: the dataset's own split; test 0.0: no test split).
    """
    total, unit = (sizes["train"], "") if "train" in sizes else (100, "%")
    count_validation, count_test, reason = _tfds_hold_outs(name, sizes, total, validation_fraction, test_fraction)
    end_train, end_test = total - count_validation - count_test, total - count_validation
    slices = {
        "train": f"train[:{end_train}{unit}]" if end_train < total else "train",
        "validation": "validation" if "validation" in sizes else f"train[{end_test}{unit}:]",
        "test": "test" if "test" in sizes else f"train[{end_train}{unit}:{end_test}{unit}]" if count_test else None,
    }
    if slices[split] is None:
        note = reason
    elif slices[split] == split:
        note = f"TFDS split {split!r}"
    else:
        held = {"validation": (validation_fraction, count_validation), "test": (test_fraction, count_test)}
        what = {
            "train": "'train' minus the examples held out as "
            + " and ".join(f"{part} ({percent(fraction)})" for part, (fraction, count) in held.items() if count),
            "validation": f"the last {percent(validation_fraction)} of 'train' held out as validation (TFDS has none)"
            + (", disjoint from test" if count_test else ""),
            "test": f"{percent(test_fraction)} of 'train' held out as test (TFDS has none), disjoint from validation",
        }
        note = f"TFDS split {slices[split]!r}: {what[split]}"
    if reason and split != "test":
        note += f"; no test split: {reason}"
    held_validation = None if "validation" in sizes else validation_fraction
    held_test = None if "test" in sizes else test_fraction if count_test else 0.0
    return slices[split], note, held_validation, held_test


def _tfds_hold_outs(name, sizes, total, validation_fraction, test_fraction):
    """(validation, test) examples held out of train's `total`, and why there is no test
    split ("" when there is one, or the dataset has its own)."""
    count_validation = 0 if "validation" in sizes else max(1, int(round(total * validation_fraction)))
    if "test" in sizes:
        return count_validation, 0, ""
    if not test_fraction:
        return count_validation, 0, f"TFDS {name!r} has no test split and test_fraction=0"
    count_test = max(1, int(round(total * test_fraction)))
    if total - count_validation - count_test < 1:
        return count_validation, 0, (
            f"TFDS {name!r} has no test split and its train split ({total} examples) is too small to hold out "
            f"validation and test (validation_fraction={validation_fraction}, test_fraction={test_fraction})"
        )
    return count_validation, count_test, ""


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
        # TFDS's own message lists every dataset it knows (hundreds of lines): not quoted.
        detail = "" if type(error).__name__ == "DatasetNotFoundError" else f" ({_one_line(error)})"
        raise ValueError(
            f"Unknown dataset. Received: name_or_path={name!r}.{hint} Use 'digits', a TFDS "
            f"image-classification name, or a folder in train/<class>/ layout.{detail}"
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


def _count(splits, tfds_split, ds):
    """Examples in a TFDS split, from its metadata or (when absent) by counting."""
    try:
        return int(splits[tfds_split].num_examples)
    except KeyError:
        count = int(ds.cardinality())
        return count if count >= 0 else int(ds.reduce(0, lambda n, _: n + 1))


def _one_line(error, limit=200):
    """The first line of an error's message, cut to `limit` characters."""
    line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {line[:limit]}{'...' if len(line) > limit else ''}"
