"""Three splits named as what they are (issue #33): train, validation (model selection)
and test (never selected on) are disjoint for folders and TFDS, follow from (seed,
fractions), are the same through `load` and `load_arrays`, and a test split that cannot
be made is empty with a note saying why, never a copy of validation."""

import numpy as np
import pytest

from keras_vitmix import datasets
from keras_vitmix.datasets import files, sources
from tests.test_datasets import collect

COUNTS = {"ant": 10, "bee": 20, "cow": 31}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv(files.CACHE_ENV, str(tmp_path / "default-cache"))


def write_folder(root, counts, split="train", seed=0):
    """PNG files of 6x6 random pixels (lossless: each file's pixels name it)."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    for name, count in counts.items():
        (root / split / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.randint(0, 256, (6, 6, 3), np.uint8)).save(root / split / name / f"{i:03d}.png")
    return root


def test_folder_splits_are_disjoint_with_exact_counts_per_class(tmp_path):
    root = write_folder(tmp_path / "pets", COUNTS)
    kwargs = dict(seed=4, validation_fraction=0.1, test_fraction=0.2)
    parts = {split: datasets.list_folder(root, split, **kwargs) for split in datasets.SPLITS}
    # max(1, round(n * fraction)) of each class: n = 10, 20, 31.
    expected = {"validation": [1, 2, 3], "test": [2, 4, 6], "train": [7, 14, 22]}
    for split, (paths, labels, classes, note) in parts.items():
        assert classes == ("ant", "bee", "cow")
        assert np.bincount(labels, minlength=3).tolist() == expected[split], split
    paths = {split: set(part[0]) for split, part in parts.items()}
    assert not paths["train"] & paths["validation"] and not paths["test"] & (paths["train"] | paths["validation"])
    assert sum(map(len, paths.values())) == len(set.union(*paths.values())) == sum(COUNTS.values())
    assert parts["test"][3] == "held out of train/: 20% of each class, seed 4, disjoint from validation"
    assert parts["validation"][3] == "held out of train/: 10% of each class, seed 4, disjoint from test"
    assert parts["train"][3] == "train/ minus the validation and test hold-outs (10% and 20% of each class, seed 4)"
    # Reproducible from (seed, fractions); another seed, another split.
    assert datasets.list_folder(root, "test", **kwargs)[0] == parts["test"][0]
    assert set(datasets.list_folder(root, "test", **{**kwargs, "seed": 5})[0]) != paths["test"]
    # Holding out a test split moves no validation file.
    assert datasets.list_folder(root, "validation", 4, 0.1, 0.0)[0] == parts["validation"][0]


def test_load_and_load_arrays_give_the_same_three_splits(tmp_path):
    root = write_folder(tmp_path / "pets", COUNTS)
    seen = []
    for split in datasets.SPLITS:
        images, labels, info = datasets.load_arrays(root, split, seed=2, cache_dir=tmp_path / "cache")
        ds, loaded_info = datasets.load(root, split, seed=2, batch_size=16, shuffle=False)
        loaded_images, loaded_labels = collect(ds)
        assert info == loaded_info and info.num_examples == len(labels) > 0
        assert (info.validation_fraction, info.test_fraction, info.seed) == (0.1, 0.1, 2)
        np.testing.assert_array_equal(labels, loaded_labels)
        np.testing.assert_array_equal(images, loaded_images)  # PNG: both decoders agree exactly
        assert labels.tolist() == datasets.list_folder(root, split, seed=2)[1]
        seen.append({image.tobytes() for image in images})
    assert sum(map(len, seen)) == len(set.union(*seen)) == sum(COUNTS.values())  # no image in two splits


def test_a_test_folder_is_the_test_split(tmp_path):
    root = write_folder(tmp_path / "pets", COUNTS)
    write_folder(root, {"ant": 3, "cow": 2}, split="test", seed=1)
    test_paths, test_labels, _, note = datasets.list_folder(root, "test")
    assert note == "test/ folder" and test_labels == [0, 0, 0, 2, 2]
    assert all("/test/" in path for path in test_paths)
    train, validation = (datasets.list_folder(root, split)[:2] for split in ("train", "validation"))
    assert np.bincount(validation[1]).tolist() == [1, 2, 3]  # only validation is held out of train/
    assert len(train[0]) + len(validation[0]) == sum(COUNTS.values())
    _, info = datasets.load(root, "validation", batch_size=4)
    assert info.note == "held out of train/: 10% of each class, seed 0; test is the test/ folder"
    assert (info.validation_fraction, info.test_fraction, info.seed) == (0.1, None, 0)
    assert datasets.load_arrays(root, "test", cache_dir=tmp_path / "cache")[2].num_examples == 5


@pytest.mark.parametrize("counts", [{"ant": 2, "bee": 20}, {"ant": 3, "bee": 3}])
def test_a_folder_too_small_for_a_test_split_gives_an_empty_one_with_a_note(tmp_path, counts):
    """A class of 2 cannot give train, validation and test an image each (3 can): no
    class gives test, and validation and train are the two-way split's."""
    root = write_folder(tmp_path / "tiny", counts)
    if min(counts.values()) >= 3:
        assert np.bincount(datasets.list_folder(root, "test")[1]).tolist() == [1, 1]
        return
    ds, info = datasets.load(root, "test", batch_size=4)
    images, labels, array_info = datasets.load_arrays(root, "test", cache_dir=tmp_path / "cache")
    assert info == array_info and info.num_examples == 0 and info.test_fraction == 0.0
    assert sum(len(y) for _, y in ds) == 0
    assert images.shape == (0, 6, 6, 3) and images.dtype == np.uint8 and labels.shape == (0,)
    assert info.note == (
        "class 'ant' of train/ has 2 images, too few to give train, validation and test one each "
        "(validation_fraction=0.1, test_fraction=0.1); add images, or a test/ folder"
    )
    for split in ("train", "validation"):
        assert datasets.list_folder(root, split)[0] == datasets.list_folder(root, split, test_fraction=0)[0]
        assert f"no test split: {info.note}" in datasets.list_folder(root, split)[3]
    _, info = datasets.load(root, "test", test_fraction=0, batch_size=4)
    assert info.num_examples == 0 and info.note == "test_fraction=0, so no test images are held out of train/"


def test_digits_keep_their_fixed_split():
    for split, count in (("train", 1257), ("validation", 180), ("test", 360)):
        info = datasets.load_arrays("digits", split, seed=3, test_fraction=0)[2]
        assert info.num_examples == count and "fixed stratified 70/10/20" in info.note
        assert (info.validation_fraction, info.test_fraction, info.seed) == (0.1, 0.2, None)


@pytest.mark.parametrize(
    "sizes, fractions, expected",
    [
        ({"train": 1000}, (0.1, 0.1), ("train[:800]", "train[900:]", "train[800:900]")),
        ({"train": 1000}, (0.1, 0.0), ("train[:900]", "train[900:]", None)),
        ({"train": 1000, "test": 50}, (0.2, 0.1), ("train[:800]", "train[800:]", "test")),
        ({"train": 1000, "validation": 50}, (0.1, 0.05), ("train[:950]", "validation", "train[950:1000]")),
        ({"train": 1000, "validation": 5, "test": 9}, (0.1, 0.1), ("train", "validation", "test")),
        ({"train": 2}, (0.1, 0.1), ("train[:1]", "train[1:]", None)),  # too small: no test split
        ({}, (0.1, 0.1), ("train[:80%]", "train[90%:]", "train[80%:90%]")),  # sizes unknown (mocked)
    ],
)
def test_tfds_slices_never_make_test_the_validation_split(sizes, fractions, expected):
    got = tuple(sources.tfds_split("x", split, sizes, *fractions)[0] for split in datasets.SPLITS)
    assert got == expected


def test_tfds_notes_say_how_each_split_was_made():
    assert sources.tfds_split("x", "validation", {"train": 1000, "validation": 50}, 0.1, 0.05) == (
        "validation", "TFDS split 'validation'", None, 0.05)
    assert sources.tfds_split("x", "train", {"train": 1000, "validation": 50}, 0.1, 0.05) == (
        "train[:950]", "TFDS split 'train[:950]': 'train' minus the examples held out as test (5%)", None, 0.05)
    split, note, _, test_fraction = sources.tfds_split("x", "test", {"train": 2}, 0.1, 0.1)
    assert split is None and test_fraction == 0.0 and note == (
        "TFDS 'x' has no test split and its train split (2 examples) is too small to hold out validation and "
        "test (validation_fraction=0.1, test_fraction=0.1)")
    assert sources.tfds_split("x", "train", {"train": 2}, 0.1, 0.1)[1] == (
        f"TFDS split 'train[:1]': 'train' minus the examples held out as validation (10%); no test split: {note}")


def test_tfds_without_a_test_split_through_mock_data():
    """Mocked TFDS knows no split names: validation and test are slices of train, never
    the same one, and test_fraction=0 gives no test split."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        infos = {split: datasets.load("cifar10", split, batch_size=4)[1] for split in datasets.SPLITS}
        no_test = datasets.load("cifar10", "test", batch_size=4, test_fraction=0)
        arrays = datasets.load_arrays("cifar10", "test", test_fraction=0)
    assert infos["test"].note == (
        "TFDS split 'train[80%:90%]': 10% of 'train' held out as test (TFDS has none), disjoint from validation"
    )
    assert infos["validation"].note.startswith("TFDS split 'train[90%:]': the last 10% of 'train' held out")
    assert infos["train"].note.startswith("TFDS split 'train[:80%]'")
    assert (infos["test"].validation_fraction, infos["test"].test_fraction, infos["test"].seed) == (0.1, 0.1, None)
    assert no_test[1].num_examples == 0 and sum(len(y) for _, y in no_test[0]) == 0
    assert no_test[1].note == "TFDS 'cifar10' has no test split and test_fraction=0"
    assert arrays[0].shape == (0, 32, 32, 3) and arrays[1].shape == (0,) and arrays[2] == no_test[1]


@pytest.fixture(scope="module")
def tfds_train_only(tmp_path_factory):
    """A real, locally prepared TFDS dataset with a train split only: 50 examples whose
    pixels are their index."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class VitmixTinyTrainOnly(tfds.core.GeneratorBasedBuilder):
        # A one-part module name: TFDS then looks for no checksums file beside a package.
        __module__ = "vitmix_tiny_tfds"
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {"image": tfds.features.Image(shape=(4, 4, 3)), "label": tfds.features.ClassLabel(num_classes=3)}
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                         supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(50):
                yield i, {"image": np.full((4, 4, 3), i, np.uint8), "label": i % 3}

    data_dir = tmp_path_factory.mktemp("tfds")
    VitmixTinyTrainOnly(data_dir=data_dir).download_and_prepare()
    return "vitmix_tiny_train_only", str(data_dir)


def test_tfds_train_only_gives_three_disjoint_splits(tfds_train_only):
    name, data_dir = tfds_train_only
    ids = {}
    for split in datasets.SPLITS:
        images, labels, info = datasets.load_arrays(name, split, data_dir=data_dir, test_fraction=0.2)
        ds, loaded_info = datasets.load(name, split, data_dir=data_dir, test_fraction=0.2, shuffle=False)
        assert info == loaded_info and info.num_examples == len(labels)
        np.testing.assert_array_equal(collect(ds)[0], images)
        ids[split] = images[:, 0, 0, 0].tolist()
        np.testing.assert_array_equal(labels, np.asarray(ids[split]) % 3)
    assert [len(ids[split]) for split in datasets.SPLITS] == [35, 5, 10]  # 50 - 5 - 10, 10%, 20%
    assert sorted(sum(ids.values(), [])) == list(range(50))  # each example in one split
    info = datasets.load_arrays(name, "test", data_dir=data_dir, test_fraction=0)[2]
    assert info.num_examples == 0 and "has no test split and test_fraction=0" in info.note
