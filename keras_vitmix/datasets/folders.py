"""Image folders in `train/<class>/*.jpg|png` layout (optionally with `test/<class>/`):
which files make each split, and how one file is read.

Everything here is plain Python, NumPy and Pillow: a folder's split is the same whether
tf.data streams it (`keras_vitmix.datasets.load`) or `load_arrays` decodes it into NumPy.

The three splits are disjoint and follow from (seed, fractions) alone. With a `test/`
folder, test is that folder and validation is held out of `train/`. Without one, each
class of `train/`, in label order, is shuffled by one `np.random.RandomState(seed)`; its
last `max(1, round(n * validation_fraction))` files are validation, the
`max(1, round(n * test_fraction))` before them test, the rest train. Validation is the
hold-out a two-way split makes (`split_arrays`, `test_fraction=0`), so holding out a test
split moves no validation image. Where a class is too small to give train, validation
and test one file each, no class gives test: the test split is empty and its note says
why (a test score on a handful of images, or on the validation images, would mislead).

Listing reads names only; whether every file decodes is checked where a split is
loaded (`keras_vitmix.datasets.files`), which names every bad file at once.
"""

import dataclasses
import pathlib

import numpy as np

from keras_vitmix.datasets.info import DatasetInfo, check_fractions, check_split, percent

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# The first bytes of each accepted image format.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")
_FORMATS = "JPEG, PNG, BMP or GIF"


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """One split of a folder: its files and labels, and how it was made."""

    root: str
    split: str
    paths: list
    labels: list
    class_names: tuple
    note: str
    sample: str  # a file of the split (of train/ for an empty split): the default image size
    seed: int
    validation_fraction: float
    test_fraction: float  # None: the test/ folder; 0.0: no test split

    def info(self, image_shape):
        """The split's `DatasetInfo`, its images shaped `image_shape`."""
        return DatasetInfo(
            name=self.root, split=self.split, class_names=self.class_names, num_classes=len(self.class_names),
            num_examples=len(self.paths), image_shape=tuple(image_shape), source="folder", note=self.note,
            validation_fraction=self.validation_fraction, test_fraction=self.test_fraction, seed=self.seed,
        )


def list_folder(root, split="train", seed=0, validation_fraction=0.1, test_fraction=0.1):
    """The image files and labels of a folder's split, as `load` reads them (no TensorFlow).

    Args:
        root: a folder with `train/<class>/*.jpg|png` and optionally `test/<class>/`.
        split: "train", "validation" or "test".
        seed: int, shuffles each class before the hold-outs.
        validation_fraction: float in (0, 1), the part of each class of `train/` held
            out as validation.
        test_fraction: float in [0, 1), the part of each class of `train/` held out as
            test (disjoint from validation) when there is no `test/` folder; 0 holds
            out none. Ignored with a `test/` folder.

    Returns:
        `(paths, labels, class_names, note)`: lists of file paths and int labels, the
        class names in label order (sorted folder names), and how the split was made.
        The test split is empty (its note says why) when `test_fraction` is 0 or a
        class of `train/` is too small to give train, validation and test a file each.
    """
    part = folder_split(root, split, seed, validation_fraction, test_fraction)
    return part.paths, part.labels, part.class_names, part.note


def folder_split(root, split="train", seed=0, validation_fraction=0.1, test_fraction=0.1):
    """`list_folder`'s split as a `FolderSplit` (which also makes its `DatasetInfo`)."""
    check_split(split)
    check_fractions(validation_fraction, test_fraction)
    root = pathlib.Path(root)
    if not (root / "train").is_dir():
        raise ValueError(
            f"Expected a folder with train/<class>/*.jpg|png (and optionally test/). Received: {root!s}"
        )
    classes = [p.name for p in class_folders(root / "train")]
    files = {}
    for name in classes:
        files[name] = image_files(root / "train" / name)
        if not files[name]:
            raise ValueError(f"Class folder {root / 'train' / name} holds no .jpg/.png images.")
    has_test_folder = (root / "test").is_dir()
    reason = "" if has_test_folder else no_test_reason(
        {name: len(paths) for name, paths in files.items()}, validation_fraction, test_fraction
    )
    held_test = 0.0 if has_test_folder or reason else test_fraction
    if split == "test" and has_test_folder:
        paths, labels = _test_folder(root / "test", classes)
    else:
        paths, labels = _hold_out(files, classes, seed, validation_fraction, held_test)[split]
    return FolderSplit(
        root=str(root), split=split, paths=paths, labels=labels, class_names=tuple(classes),
        note=_note(split, seed, validation_fraction, test_fraction, has_test_folder, reason),
        sample=paths[0] if paths else files[classes[0]][0], seed=seed, validation_fraction=validation_fraction,
        test_fraction=None if has_test_folder else held_test,
    )


def hold_out_sizes(count, validation_fraction, test_fraction=0.0):
    """(validation, test) files held out of a class of `count`: each at least one (test
    none when `test_fraction` is 0)."""
    validation = max(1, int(round(count * validation_fraction)))
    test = max(1, int(round(count * test_fraction))) if test_fraction else 0
    return validation, test


def require_images(part):
    """Raises unless the split holds images (an empty test split is allowed: its note says why)."""
    if not part.paths and part.split != "test":
        raise ValueError(
            f"The {part.split!r} split of {part.root} holds no images (each class of train/ gives at least one "
            "image to validation: a class of one image gives train none)."
        )


def no_test_reason(counts, validation_fraction, test_fraction, source="train/", remedy="add images, or a test/ folder"):
    """Why classes of `counts` ({class name: members}) give no test split, or "" when
    they give one: `test_fraction` is 0, or a class cannot give train, validation and
    test one member each."""
    if not test_fraction:
        return f"test_fraction=0, so no test images are held out of {source}"
    for name, count in counts.items():
        validation, test = hold_out_sizes(count, validation_fraction, test_fraction)
        if count - validation - test < 1:
            return (
                f"class {name!r} of {source} has {count} image{'s' * (count != 1)}, too few to give train, "
                f"validation and test one each (validation_fraction={validation_fraction}, "
                f"test_fraction={test_fraction}); {remedy}"
            )
    return ""


def hold_out_indices(counts, seed, validation_fraction, test_fraction=0.0):
    """The hold-out rule of folders and arrays: for classes of `counts` members each, in
    label order, one `np.random.RandomState(seed)` shuffles each class; its last
    `validation` members are validation, the `test` before them test, the rest train
    (`hold_out_sizes`). Returns, per class, {split: sorted member indices}."""
    rng = np.random.RandomState(seed)
    parts = []
    for count in counts:
        order = rng.permutation(count)
        validation, test = hold_out_sizes(count, validation_fraction, test_fraction)
        parts.append({
            "train": np.sort(order[: count - validation - test]),
            "test": np.sort(order[count - validation - test: count - validation]),
            "validation": np.sort(order[count - validation:]),
        })
    return parts


def _hold_out(files, classes, seed, validation_fraction, test_fraction):
    """{split: (paths, labels)} of train/, held out by `hold_out_indices`."""
    parts = {split: ([], []) for split in ("train", "validation", "test")}
    counts = [len(files[name]) for name in classes]
    for label, (name, chosen) in enumerate(zip(classes, hold_out_indices(counts, seed, validation_fraction, test_fraction))):
        for split, indices in chosen.items():
            parts[split][0].extend(files[name][i] for i in indices)
            parts[split][1].extend([label] * len(indices))
    return parts


def _note(split, seed, validation_fraction, test_fraction, has_test_folder, reason):
    """How the split was made, in words (for an empty test split: why it is empty)."""
    held = f"{percent(validation_fraction)} of each class, seed {seed}"
    if has_test_folder:
        notes = {
            "train": f"train/ minus the validation hold-out ({held})",
            "validation": f"held out of train/: {held}; test is the test/ folder",
            "test": "test/ folder",
        }
    elif reason:
        notes = {
            "train": f"train/ minus the validation hold-out ({held}); no test split: {reason}",
            "validation": f"held out of train/: {held}; no test split: {reason}",
            "test": reason,
        }
    else:
        notes = {
            "train": f"train/ minus the validation and test hold-outs ({percent(validation_fraction)} and "
                     f"{percent(test_fraction)} of each class, seed {seed})",
            "validation": f"held out of train/: {held}, disjoint from test",
            "test": f"held out of train/: {percent(test_fraction)} of each class, seed {seed}, "
                    "disjoint from validation",
        }
    return notes[split]


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


def class_folders(root):
    """The class sub-folders of `root`, sorted by name (the label order)."""
    folders = sorted(p for p in pathlib.Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(
            f"The folder has no class sub-folders; expected <folder>/<class>/*.jpg|png. Received: {root!s}"
        )
    return folders


def image_files(folder):
    """The image files of one class folder (by suffix), sorted. Their content is checked
    where a split is loaded, every bad file named at once."""
    return sorted(
        str(p) for p in pathlib.Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


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
    pixels, problem = decode(path)
    if problem is not None:
        raise ValueError(f"{problem}. Received: {path}")
    return pixels


def image_problem(path):
    """None when `path` decodes whole, else what is wrong with it (one line)."""
    return decode(path, rgb=False)[1]


def decode(path, rgb=True):
    """`(pixels, None)` for a file that decodes whole (pixels None unless `rgb`), else
    `(None, what is wrong)`: missing, not an image, or truncated or corrupt."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # decode every byte now: a truncated file fails here
            return (np.asarray(image.convert("RGB")) if rgb else None), None
    except FileNotFoundError:
        return None, "No such image file"
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # Pillow's ways to say "bad data"
        with open(path, "rb") as handle:
            head = handle.read(8)
        if not any(head.startswith(magic) for magic in _MAGIC):
            return None, f"Not a {_FORMATS} image (corrupt file? it starts with {head!r})"
        detail = str(error).replace(f" '{path}'", "")  # Pillow may quote the path, which the caller names
        return None, f"Not a complete {_FORMATS} image (truncated or corrupt file? {type(error).__name__}: {detail})"
