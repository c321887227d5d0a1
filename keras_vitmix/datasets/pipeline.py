"""`load` and `resolve`: a source (`keras_vitmix.datasets.sources`) made into batches that
`model.fit` takes, the same way for every source: cached decoded images, a seeded
shuffle, batches of float32 pixels, augmentation on the training split, prefetching.
"""

import os

from keras_vitmix.datasets import sources
from keras_vitmix.datasets.info import DatasetUnavailableError, as_image_size, check_fractions, check_split

AUGMENTS = (False, True, "none", "light", "medium", "strong")
# Elements the training shuffle holds (all of a smaller split; a larger folder's file
# list is permuted before it is read, see `sources.folder`).
SHUFFLE_BUFFER = 20_000


def load(
    name_or_path="digits",
    split="train",
    image_size=None,
    batch_size=128,
    augment=False,
    shuffle=None,
    seed=0,
    validation_fraction=0.1,
    test_fraction=0.1,
    data_dir=None,
    drop_remainder=False,
    cache_dir=None,
    dtype="float32",
):
    """Loads a split as a batched, prefetched `tf.data.Dataset` of (images, labels).

    Args:
        name_or_path: "digits" (embedded: scikit-learn's 1,797 real 8x8 handwritten
            digits, upscaled to 32x32 RGB, no network needed), a TFDS
            image-classification name ("cifar10", "mnist", ...), or a folder in
            `train/<class>/*.jpg|png` layout (optionally with `test/<class>/`).
        split: "train", "validation" (for model selection) or "test" (disjoint from
            both, never to select on; empty where none can be made, the info's
            `note` saying why).
        image_size: int or (height, width) to resize to; defaults to the source's size
            (32 for digits, the first image's size for a folder).
        batch_size: int >= 1.
        augment: a policy of `keras_vitmix.augmentation.AUGMENTATIONS`: "none" (or
            False); "light" (or True: a padded random crop per image, a horizontal flip
            where the labels allow it); "medium" (light + RandAugment + random erasing);
            "strong" (medium + MixUp or CutMix, which makes labels one-hot). Applied to
            the training split only.
        shuffle: whether to shuffle; defaults to True for the training split only. A
            folder's file list is then also permuted before it is read (folders
            list their images class by class).
        seed: int, seeds shuffling, augmentation and a folder's hold-outs.
        validation_fraction: float in (0, 1), the part of a folder's (or a TFDS
            dataset's) training data held out as validation when it has none.
        test_fraction: float in [0, 1), the part of a folder's (or a TFDS dataset's)
            training data held out as test, disjoint from validation, when it has no
            test split (a folder without `test/`); 0 makes none. A folder with a
            class too small to give train, validation and test an image each gets
            an empty test split. Digits keep their fixed 70/10/20 split.
        data_dir: optional TFDS data directory (default: `TFDS_DATA_DIR` or TFDS's own).
        drop_remainder: drop the last, partial batch when the split holds at least one
            full batch: every batch has one shape, so XLA compiles one step, not two.
            With shuffling, the images left out change from epoch to epoch.
        cache_dir: where the check of a folder's files is remembered (as in
            `load_arrays`); defaults to `$KERAS_VITMIX_CACHE` or `~/.cache/keras_vitmix`.
        dtype: "float32" (pixel values in [0, 255]), or "uint8", the decoded pixels
            themselves, a quarter of the bytes to copy to an accelerator that augments
            them there (`keras_vitmix.training`'s streamed feed); "uint8" takes
            `augment="none"`, since tf.data's augmentation computes in floats.

    Returns:
        `(dataset, info)`: the `tf.data.Dataset` and a `DatasetInfo`.

    Raises:
        ValueError: for bad arguments, and for a folder with files that do not decode:
            every file of the split is decoded once with Pillow before the pipeline is
            built (remembered in `cache_dir` while the files stay unchanged), and every
            bad one is named in one error (up to 20, then a count).

    Example:

    >>> train, info = load("digits", "train", batch_size=64, augment=True)
    >>> info.num_classes, info.image_shape
    (10, (32, 32, 3))
    """
    _check(split, batch_size, augment, validation_fraction, test_fraction)
    if dtype not in ("float32", "uint8") or (dtype == "uint8" and augment not in (False, None, "none")):
        raise ValueError(
            "`dtype` must be 'float32', or 'uint8' with augment='none'. "
            f"Received: dtype={dtype!r}, augment={augment!r}"
        )
    image_size = as_image_size(image_size)
    shuffle = split == "train" if shuffle is None else bool(shuffle)
    name = os.fspath(name_or_path)
    if name == "digits":
        ds, info = sources.digits(split, image_size)
    elif os.path.isdir(name):
        ds, info = sources.folder(name, split, image_size, seed, validation_fraction, test_fraction, shuffle, cache_dir)
    elif os.path.sep in name or name.startswith("."):
        raise ValueError(f"No such folder. Received: name_or_path={name!r}")
    else:
        ds, info = sources.tfds(name, split, image_size, validation_fraction, test_fraction, data_dir)
    drop_remainder = bool(drop_remainder) and info.num_examples >= batch_size
    augment = augment if split == "train" else False
    return _batches(ds, info, batch_size, augment, shuffle, seed, drop_remainder, dtype), info


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


def _check(split, batch_size, augment, validation_fraction, test_fraction):
    check_split(split)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    if augment not in AUGMENTS:
        raise ValueError(f"`augment` must be one of {AUGMENTS}. Received: augment={augment!r}")
    check_fractions(validation_fraction, test_fraction)


def _batches(ds, info, batch_size, augment, shuffle, seed, drop_remainder=False, dtype="float32"):
    import tensorflow as tf

    if fits_in_memory(info):
        ds = ds.cache()  # decoded uint8 images: CIFAR-10's 50,000 are 150 MB
    if shuffle:
        ds = ds.shuffle(max(1, min(info.num_examples, SHUFFLE_BUFFER)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if dtype == "float32":
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    from keras_vitmix import augmentation

    if augmentation.policy_name(augment) != "none":
        ds = ds.map(augmentation.augmenter(info, augment, seed), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# The decoded split is cached in host memory only where it takes at most this share of
# it; larger splits (ImageNet's 1.28 M images at 224 px are ~190 GB) are decoded anew
# each epoch, streamed from storage.
CACHE_MEMORY_FRACTION = 0.25


def fits_in_memory(info):
    """Whether a split's decoded uint8 images fit `CACHE_MEMORY_FRACTION` of the host's RAM."""
    height, width, channels = info.image_shape
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return info.num_examples * height * width * channels <= CACHE_MEMORY_FRACTION * host
