"""What every source agrees on: the split names, `DatasetInfo`, and the checks of shared
arguments. No TensorFlow here, so that listing a folder or reading its images needs none."""

import dataclasses

SPLITS = ("train", "validation", "test")


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


def check_split(split):
    """Raises a ValueError unless `split` is one of `SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")


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
