"""What every source agrees on: the split names, `DatasetInfo`, and the checks of shared
arguments. No TensorFlow here, so that listing a folder or reading its images needs none."""

import dataclasses

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `load` returns beside the dataset.

    The three splits are named as what they are: "validation" selects (checkpoints,
    hyper-parameters), "test" is disjoint from it and is never selected on. A source
    that cannot give a test split (`test_fraction=0`, or a class too small to give
    train, validation and test one image each) gives an empty one (`num_examples == 0`)
    whose `note` says why, never a copy of validation.

    Attributes:
        name: the dataset's name or folder.
        split: "train", "validation" or "test".
        class_names: tuple of class names, in label order.
        num_classes: int.
        num_examples: int, examples in this split (0: no test split, `note` says why).
        image_shape: (height, width, 3) of the images yielded.
        source: "embedded", "tfds", "folder" or "arrays".
        note: how the split was made, e.g. "held out of train/: 10% of each class,
            seed 0, disjoint from validation"; for an empty test split, why there is none.
        flip_invariant: whether a horizontal flip keeps the label (False for digits).
        validation_fraction: the part of the training data held out as validation, or
            None where the source brings its own validation split.
        test_fraction: the part of the training data held out as test; None where the
            source brings its own test split (a `test/` folder, a TFDS test split); 0.0
            where there is no test split.
        seed: the seed the hold-outs were drawn with; None where they do not depend on
            one (digits' fixed split, TFDS slices, arrays as given).
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
    validation_fraction: float = None
    test_fraction: float = None
    seed: int = None


class DatasetUnavailableError(ValueError):
    """A TFDS dataset that exists but cannot be downloaded or prepared here (offline?)."""


def check_split(split):
    """Raises a ValueError unless `split` is one of `SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")


def check_fractions(validation_fraction, test_fraction=0.0):
    """Raises a ValueError unless validation_fraction is in (0, 1), test_fraction in
    [0, 1) and the two leave part of the training data to train on (a TypeError for
    what is not a number)."""
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"`{name}` must be a float. Received: {name}={value!r}")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"`validation_fraction` must be in (0, 1). Received: validation_fraction={validation_fraction}"
        )
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(
            f"`test_fraction` must be in [0, 1) (0: no test split). Received: test_fraction={test_fraction}"
        )
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            "`validation_fraction` + `test_fraction` must be below 1, leaving images to train on. Received: "
            f"validation_fraction={validation_fraction}, test_fraction={test_fraction}"
        )


def percent(fraction):
    """0.1 -> "10%", 0.125 -> "12.5%"."""
    return f"{fraction * 100:.6g}%"


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
