"""keras_vitmix.datasets: the embedded digits, folders (CIFAR-10 JPEGs), TFDS (mocked)."""

import pathlib
import tarfile

import keras
import numpy as np
import pytest

from keras_vitmix import datasets
from keras_vitmix.datasets import files

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = 20


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """No test writes to ~/.cache (decoded arrays, the marks of checked files)."""
    monkeypatch.setenv(files.CACHE_ENV, str(tmp_path / "default-cache"))


def collect(ds):
    images, labels = zip(*[(np.asarray(x), np.asarray(y)) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    """The first PER_CLASS JPEGs of each class of ../shared/data, in train/<class>/."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is missing")
    root = tmp_path_factory.mktemp("cifar")
    counts = {}
    with tarfile.open(SHARED) as archive:
        for member in archive:
            parts = pathlib.PurePosixPath(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] != "train":
                continue
            label = parts[-2]
            if counts.get(label, 0) < PER_CLASS:
                counts[label] = counts.get(label, 0) + 1
                target = root / "train" / label / parts[-1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
            if len(counts) == 10 and all(c == PER_CLASS for c in counts.values()):
                break
    return root


def test_digits_split_is_fixed_stratified_and_real():
    sizes = {}
    data = {}
    for split in datasets.SPLITS:
        ds, info = datasets.load("digits", split, batch_size=100)
        images, labels = collect(ds)
        sizes[split] = len(labels)
        data[split] = (images, labels)
        assert info.num_examples == len(labels) and info.num_classes == 10
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.float32
        assert images.min() >= 0 and images.max() == 255
        assert labels.dtype == np.int32
        assert np.bincount(labels, minlength=10).min() >= 0.08 * len(labels)  # stratified
        np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray as RGB
    assert sizes == {"train": 1257, "validation": 180, "test": 360}
    # Same split on every load (train is shuffled, so compare sorted label counts).
    again = collect(datasets.load("digits", "test", batch_size=100)[0])
    np.testing.assert_array_equal(again[1], data["test"][1])
    # Real, aligned data: a linear classifier on the pixels generalizes.
    from sklearn.linear_model import LogisticRegression

    flat = lambda x: x[:, ::4, ::4, 0].reshape(len(x), -1) / 255.0  # noqa: E731
    clf = LogisticRegression(max_iter=2000).fit(flat(data["train"][0]), data["train"][1])
    assert clf.score(flat(data["test"][0]), data["test"][1]) > 0.9


def test_drop_remainder_keeps_full_batches_only():
    ds, info = datasets.load("digits", "train", batch_size=100, drop_remainder=True)
    assert int(ds.cardinality()) == 12  # 1,257 images: 12 full batches, 57 left out
    epochs = [collect(ds) for _ in range(2)]
    for images, labels in epochs:
        assert images.shape[0] == 1200 and labels.shape == (1200,)
    # Reshuffled: the images left out differ between epochs (as sets of pixel sums).
    sums = [set(np.round(images.sum(axis=(1, 2, 3))).tolist()) for images, _ in epochs]
    assert sums[0] != sums[1]
    # A split smaller than one batch is kept whole rather than emptied.
    images, labels = collect(datasets.load("digits", "validation", batch_size=500, drop_remainder=True)[0])
    assert len(labels) == 180
    # Off by default: the last batch is partial.
    assert sum(len(y) for _, y in datasets.load("digits", "test", batch_size=100)[0]) == 360


def test_image_size_and_augmentation_only_on_train():
    ds, info = datasets.load("digits", "validation", image_size=16, batch_size=180, augment=True)
    augmented_val = collect(ds)[0]
    plain_val = collect(datasets.load("digits", "validation", image_size=16, batch_size=180)[0])[0]
    assert info.image_shape == (16, 16, 3) and augmented_val.shape == (180, 16, 16, 3)
    np.testing.assert_array_equal(augmented_val, plain_val)
    plain = collect(datasets.load("digits", "train", batch_size=64, shuffle=False)[0])[0]
    ds, info = datasets.load("digits", "train", batch_size=64, shuffle=False, augment=True)
    augmented = collect(ds)[0]
    assert info.flip_invariant is False  # digits are not flipped
    assert augmented.shape == plain.shape
    assert np.mean(np.any(augmented != plain, axis=(1, 2, 3))) > 0.5


def test_strong_augmentation_mixes_labels():
    ds, _ = datasets.load("digits", "train", batch_size=32, augment="strong")
    images, labels = next(iter(ds))
    labels = np.asarray(labels)
    assert labels.shape == (32, 10)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert np.any((labels > 0) & (labels < 1))  # some mixed
    assert np.asarray(images).min() >= 0 and np.asarray(images).max() <= 255


def test_folder_of_cifar_jpegs(cifar_folder):
    ds, info = datasets.load(cifar_folder, "train", batch_size=50, shuffle=False)
    train_images, train_labels = collect(ds)
    val_ds, _ = datasets.load(cifar_folder, "validation", batch_size=50)
    val_images, val_labels = collect(val_ds)
    assert info.class_names == CIFAR_CLASSES and info.source == "folder"
    assert info.image_shape == (32, 32, 3)
    assert len(train_labels) == 10 * (PER_CLASS - 4) and len(val_labels) == 10 * 2
    assert np.bincount(val_labels).tolist() == [2] * 10
    test_ds, test_info = datasets.load(cifar_folder, "test", batch_size=50, shuffle=False)
    test_images, test_labels = collect(test_ds)
    assert np.bincount(test_labels).tolist() == [2] * 10 and test_info.num_examples == 20
    assert "disjoint from validation" in test_info.note and "seed 0" in test_info.note
    # Held out: no image is in two splits.
    sets = [{img.tobytes() for img in images.astype(np.uint8)} for images in (train_images, val_images, test_images)]
    assert sum(map(len, sets)) == len(set.union(*sets)) == 10 * PER_CLASS
    # The split depends on the seed.
    other = collect(datasets.load(cifar_folder, "validation", batch_size=50, seed=1, shuffle=False)[0])[0]
    assert {i.tobytes() for i in other.astype(np.uint8)} != {i.tobytes() for i in val_images.astype(np.uint8)}


def test_folder_training_stream_mixes_classes_past_the_shuffle_buffer(cifar_folder, monkeypatch):
    """A folder lists its images class by class. With a shuffle buffer smaller than the
    split (CIFAR-10's 45,000 training images against 20,000), an epoch used to start
    with the first classes and end with the last. Here the buffer holds 4 of 180 images:
    each quarter of an epoch must still draw on most classes, and the epoch holds every
    image once."""
    monkeypatch.setattr(datasets.pipeline, "SHUFFLE_BUFFER", 4)
    sorted_labels = datasets.list_folder(cifar_folder, "train")[1]
    epochs = []
    ds, info = datasets.load(cifar_folder, "train", batch_size=45)
    for _ in range(2):
        epochs.append(collect(ds)[1])
    for labels in epochs:
        assert sorted(labels.tolist()) == sorted(sorted_labels)
        for quarter in np.array_split(labels, 4):
            assert len(set(quarter.tolist())) >= 7, quarter  # in class order: 2 or 3 classes
    assert epochs[0].tolist() != epochs[1].tolist()  # reshuffled each epoch
    # The permutation follows the seed; without shuffling the stream keeps list order.
    again = collect(datasets.load(cifar_folder, "train", batch_size=45)[0])[1]
    np.testing.assert_array_equal(again, epochs[0])
    plain = collect(datasets.load(cifar_folder, "train", batch_size=45, shuffle=False)[0])[1]
    np.testing.assert_array_equal(plain, sorted_labels)


def test_list_folder_gives_the_files_load_reads(cifar_folder):
    """`list_folder` (no TensorFlow: benchmarks/accuracy.py's NumPy pipeline uses it)
    names the images of each split that `load` yields, labels included."""
    from PIL import Image

    for split in datasets.SPLITS:
        paths, labels, classes, note = datasets.list_folder(cifar_folder, split, seed=0)
        images, loaded_labels = collect(datasets.load(cifar_folder, split, batch_size=50, shuffle=False)[0])
        assert classes == CIFAR_CLASSES and "train/" in note
        np.testing.assert_array_equal(loaded_labels, labels)
        decoded = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])
        assert np.abs(decoded - images).mean() < 1.0  # PIL's and TensorFlow's JPEG decoders
    train, held, test = (set(datasets.list_folder(cifar_folder, split)[0]) for split in datasets.SPLITS)
    assert not train & held and not test & (train | held) and len(train | held | test) == 10 * PER_CLASS
    with pytest.raises(ValueError, match="split='val'"):
        datasets.list_folder(cifar_folder, "val")


def test_folder_with_test_split_grayscale_and_odd_sizes(cifar_folder, tmp_path):
    from PIL import Image

    for split, count in (("train", 4), ("test", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i, src in enumerate(sorted((cifar_folder / "train" / label).iterdir())[:count]):
                (folder / f"{i}.jpg").write_bytes(src.read_bytes())
    Image.fromarray(np.full((17, 23), 200, np.uint8), mode="L").save(tmp_path / "test" / "dog" / "gray.png")
    ds, info = datasets.load(tmp_path, "test", image_size=32, batch_size=10, shuffle=False)
    images, labels = collect(ds)
    assert info.class_names == ("cat", "dog") and info.note == "test/ folder"
    assert images.shape == (5, 32, 32, 3) and labels.tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_allclose(images[-1], 200.0, atol=1)  # the gray PNG, resized, as RGB


def test_tfds_through_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        ds, info = datasets.load("cifar10", "train", batch_size=4)
        images, labels = next(iter(ds))
        assert info.source == "tfds" and info.num_classes == len(info.class_names) == 10
        assert tuple(images.shape) == (4, 32, 32, 3) and labels.dtype.name == "int32"
        ds, info = datasets.load("mnist", "test", batch_size=3, image_size=32)
        images, _ = next(iter(ds))
        assert info.num_classes == 10 and tuple(images.shape) == (3, 32, 32, 3)


def test_tfds_offline_names_the_way_out(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(ValueError) as info:
        datasets.load("cifar10", "train", data_dir="/nonexistent-tfds-dir")
    message = str(info.value)
    assert "'cifar10'" in message and "digits" in message and "TFDS_DATA_DIR" in message


def test_resolve_falls_back_only_when_unavailable(monkeypatch, capsys):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        name, info = datasets.resolve("cifar10")
    assert name == "cifar10" and info.source == "tfds"
    assert capsys.readouterr().out.startswith("Dataset: cifar10 (tfds, 12 training images, 10 classes)")

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    name, info = datasets.resolve("cifar10", data_dir="/nonexistent-tfds-dir")
    assert name == "digits" and info.name == "digits" and info.num_examples == 1257
    out = capsys.readouterr().out
    assert "Dataset: digits (embedded" in out and "'cifar10' is unavailable here: ConnectionError: no network" in out
    with pytest.raises(ValueError, match="Unknown dataset"):  # a typo is not "unavailable"
        datasets.resolve("cifar-ten")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name_or_path="cifar-ten"), "Unknown dataset. Received: name_or_path='cifar-ten'"),
        (dict(name_or_path="./no/such/folder"), "No such folder"),
        (dict(batch_size=0), "Received: batch_size=0"),
        (dict(split="dev"), "Received: split='dev'"),
        (dict(image_size=(32,)), r"Received: image_size=\(32,\)"),
        (dict(augment="heavy"), "Received: augment='heavy'"),
        (dict(test_fraction=-0.1), "Received: test_fraction=-0.1"),
        (dict(test_fraction=0.5, validation_fraction=0.5), "Received: validation_fraction=0.5, test_fraction=0.5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.load(**{"name_or_path": "digits", **kwargs})


def test_bad_folders(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class sub-folders"):
        datasets.load(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="train/<class>"):
        datasets.load(tmp_path / "flat")
    (tmp_path / "hollow" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no .jpg/.png images"):
        datasets.load(tmp_path / "hollow")
    corrupt = tmp_path / "corrupt" / "train" / "cat"
    corrupt.mkdir(parents=True)
    (corrupt / "0.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="holds no images"):  # a class of one image: all validation
        datasets.load(tmp_path / "corrupt")
    with pytest.raises(ValueError, match=r"0.jpg: Not a JPEG, PNG, BMP or GIF image \(corrupt file\? it starts with"):
        datasets.load(tmp_path / "corrupt", "validation")


def test_a_truncated_or_corrupt_image_is_named(cifar_folder, tmp_path):
    """A file with a JPEG header but cut short passes the header check while listing; it
    fails where it is decoded eagerly, with a ValueError naming it."""
    source = sorted((cifar_folder / "train" / "cat").iterdir())[0]
    whole = datasets.read_image(source)
    assert whole.shape == (32, 32, 3) and whole.dtype == np.uint8
    (tmp_path / "truncated" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "truncated" / "train" / "cat" / "0.jpg").write_bytes(source.read_bytes())
    cut = tmp_path / "truncated" / "test" / "cat" / "0.jpg"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(source.read_bytes()[:300])
    for read in (lambda: datasets.read_image(cut), lambda: datasets.load(tmp_path / "truncated", "test")):
        with pytest.raises(ValueError, match="Not a complete JPEG, PNG, BMP or GIF image") as info:
            read()
        assert str(cut) in str(info.value)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))  # a PNG header, then noise
    with pytest.raises(ValueError, match="garbage.png"):
        datasets.read_image(garbage)
    with pytest.raises(ValueError, match="No such image file"):
        datasets.read_image(tmp_path / "missing.jpg")
