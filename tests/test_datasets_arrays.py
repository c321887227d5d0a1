"""keras_vitmix.datasets.arrays: every in-memory source as NumPy, the same data as `load`,
without TensorFlow; user arrays checked, described and split."""

import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import datasets
from keras_vitmix.datasets import arrays, files
from tests.test_datasets import CIFAR_CLASSES, PER_CLASS, cifar_folder, collect  # noqa: F401 (a fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """No test writes to ~/.cache: the default cache folder is a temporary one."""
    monkeypatch.setenv(arrays.CACHE_ENV, str(tmp_path / "default-cache"))


def test_digits_arrays_are_the_pipelines_digits():
    for split, count in (("train", 1257), ("validation", 180), ("test", 360)):
        images, labels, info = datasets.load_arrays("digits", split)
        assert images.shape == (count, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.int32
        assert images.min() == 0 and images.max() == 255
        np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray as RGB
        assert np.bincount(labels, minlength=10).min() >= 0.08 * count  # stratified
        ds, loaded_info = datasets.load("digits", split, batch_size=500, shuffle=False)
        loaded_images, loaded_labels = collect(ds)
        assert info == loaded_info and info.num_examples == count and info.flip_invariant is False
        np.testing.assert_array_equal(labels, loaded_labels)
        np.testing.assert_array_equal(images, loaded_images)  # one implementation: identical pixels
    small = datasets.load_arrays("digits", "test", image_size=(16, 24))
    assert small[0].shape == (360, 16, 24, 3) and small[2].image_shape == (16, 24, 3)


def test_digits_resize_keeps_tensorflows_bicubic_values():
    """The digits moved from `tf.image.resize(..., "bicubic")` to Pillow's bicubic: at
    the default upscale to 32x32 the pixels differ by rounding at most."""
    tf = pytest.importorskip("tensorflow")
    images = datasets.load_arrays("digits", "test")[0][..., 0].astype(np.int16)
    original = datasets.load_arrays("digits", "test", image_size=8)[0][..., :1]  # not resized: 0..16 * 255/16
    levels = np.round(original / (255.0 / 16.0)) * (255.0 / 16.0)
    before = np.clip(np.round(tf.image.resize(levels, (32, 32), method="bicubic").numpy()), 0, 255)[..., 0]
    difference = np.abs(images - before)
    assert difference.max() <= 1 and difference.mean() < 1e-4, (difference.max(), difference.mean())


# TensorFlow as if not installed: `import tensorflow` raises ModuleNotFoundError and
# `importlib.util.find_spec("tensorflow")` answers None. (A `sys.meta_path` finder that
# raises ImportError would be stricter than a missing package: torch._dynamo probes
# optional packages with find_spec at import and would fail on the raise.)
WITHOUT_TENSORFLOW = """
import importlib.util
import json
import sys

sys.modules["tensorflow"] = None
from keras_vitmix import datasets

digits, digit_labels, info = datasets.load_arrays("digits", "validation")
folder, folder_labels, folder_info = datasets.load_arrays(sys.argv[1], "train", cache_dir=sys.argv[2])
try:
    import tensorflow
    blocked = False
except ImportError:
    blocked = importlib.util.find_spec("tensorflow") is None
imported = sys.modules["tensorflow"] is not None or any(m.startswith("tensorflow.") for m in sys.modules)
print("REPORT" + json.dumps(dict(
    digits=list(digits.shape), digit_classes=info.num_classes, folder=list(folder.shape),
    folder_labels=folder_labels.tolist(), blocked=blocked, imported=imported,
)))
"""


@pytest.mark.slow
def test_digits_and_folders_load_without_tensorflow(cifar_folder, tmp_path):
    backend = keras.backend.backend()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "KERAS_BACKEND": "jax" if backend == "tensorflow" else backend}
    run = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, str(cifar_folder), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("REPORT"))[6:])
    assert report["blocked"] and not report["imported"], report
    assert report["digits"] == [180, 32, 32, 3] and report["digit_classes"] == 10
    assert report["folder"] == [10 * (PER_CLASS - 4), 32, 32, 3]
    assert report["folder_labels"] == datasets.list_folder(cifar_folder, "train")[1]


def test_folder_arrays_are_the_pipelines_images(cifar_folder, tmp_path):
    """Same files, labels, order and info as `load(..., shuffle=False)`. The pixels differ
    only by JPEG decoding: TensorFlow's `decode_image` runs libjpeg's fast IDCT, Pillow
    the accurate one (measured here: at most 4 levels, 1.0 on average); decoded with
    TensorFlow's accurate IDCT, the images are identical."""
    tf = pytest.importorskip("tensorflow")
    for split, size in (("train", None), ("validation", None), ("validation", 24)):
        images, labels, info = datasets.load_arrays(cifar_folder, split, image_size=size, cache_dir=tmp_path)
        ds, loaded_info = datasets.load(cifar_folder, split, image_size=size, batch_size=50, shuffle=False)
        loaded_images, loaded_labels = collect(ds)
        assert info == loaded_info and info.class_names == CIFAR_CLASSES
        assert images.dtype == np.uint8 and images.shape == (info.num_examples, *info.image_shape)
        np.testing.assert_array_equal(labels, loaded_labels)
        assert labels.dtype == np.int32 and labels.tolist() == datasets.list_folder(cifar_folder, split)[1]
        difference = np.abs(images - loaded_images)
        assert difference.max() <= 6 and difference.mean() < 1.5, (difference.max(), difference.mean())
        paths = datasets.list_folder(cifar_folder, split)[0]
        accurate = [tf.io.decode_jpeg(tf.io.read_file(p), channels=3, dct_method="INTEGER_ACCURATE") for p in paths]
        if size is None:
            np.testing.assert_array_equal(images, np.stack(accurate))
        else:  # Pillow's and TensorFlow's antialiased bilinear resize: rounding apart
            resized = np.stack([datasets.sources.resize(image, (size, size)).numpy() for image in accurate])
            assert np.abs(images.astype(np.int16) - resized).max() <= 1


def test_a_decoded_folder_is_cached_until_a_file_changes(cifar_folder, tmp_path, monkeypatch):
    first = datasets.load_arrays(cifar_folder, "validation", cache_dir=tmp_path)
    # Written whole, no temporary left; with the mark that the files decode (for `load`).
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".checked", ".npz"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(arrays, "decode_files", no_decoding)
    again = datasets.load_arrays(cifar_folder, "validation", cache_dir=tmp_path)
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])
    assert again[2] == first[2]
    # Another split, seed or size, or a touched file, is another cache entry.
    for kwargs in (dict(split="train"), dict(seed=1), dict(image_size=16), dict(test_fraction=0.2)):
        with pytest.raises(AssertionError, match="decoded again"):
            datasets.load_arrays(cifar_folder, **{"split": "validation", **kwargs}, cache_dir=tmp_path)
    touched = datasets.list_folder(cifar_folder, "validation")[0][0]
    stat = os.stat(touched)
    try:
        os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        with pytest.raises(AssertionError, match="decoded again"):
            datasets.load_arrays(cifar_folder, "validation", cache_dir=tmp_path)
    finally:
        os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # The default cache folder: $KERAS_VITMIX_CACHE (a temporary folder in these tests).
    monkeypatch.undo()
    monkeypatch.setenv(arrays.CACHE_ENV, str(tmp_path / "from-env"))
    datasets.load_arrays(cifar_folder, "validation")
    assert len(list((tmp_path / "from-env").glob("*-validation-*.npz"))) == 1


def test_an_unreadable_cache_is_decoded_again(cifar_folder, tmp_path):
    images = datasets.load_arrays(cifar_folder, "validation", cache_dir=tmp_path)[0]
    (cache,) = tmp_path.glob("*.npz")
    cache.write_bytes(b"PK\x03\x04 cut short")
    np.testing.assert_array_equal(datasets.load_arrays(cifar_folder, "validation", cache_dir=tmp_path)[0], images)
    assert np.load(cache)["images"].shape == images.shape  # rewritten whole


@pytest.mark.slow
def test_worker_processes_decode_and_name_every_corrupt_file(cifar_folder, tmp_path, monkeypatch, capsys):
    """Past the first chunk, files go to spawned workers when the rest would take longer
    than `POOL_SECONDS` (here always): same pixels, progress as plain lines (stderr is
    not a terminal here), and files cut short, here and in the workers, all named."""
    monkeypatch.setattr(files, "POOL_SECONDS", 0.0)
    monkeypatch.setattr(files, "CHUNKSIZE", 64)
    monkeypatch.setattr(files, "PROGRESS_FILES", 100)
    paths = datasets.list_folder(cifar_folder, "train")[0]
    images = arrays.decode_files(paths)
    np.testing.assert_array_equal(images, np.stack([datasets.read_image(p) for p in paths]))
    err = capsys.readouterr().err
    assert f"Decoding the files: {len(paths)} files...\n" in err and f"{len(paths)}/{len(paths)} files in" in err
    assert "\r" not in err and "\x1b" not in err
    cuts = []
    for i in (10, 100, 150):  # one decoded here, two in the workers
        cuts.append(tmp_path / f"cut{i}.jpg")
        cuts[-1].write_bytes(pathlib.Path(paths[i]).read_bytes()[:300])
    with pytest.raises(ValueError) as info:
        arrays.decode_files(paths[:10] + [str(cuts[0])] + paths[10:99] + [str(cuts[1])] + paths[99:] + [str(cuts[2])])
    message = str(info.value)
    assert message.startswith(f"3 of the {len(paths) + 3} image files of the files cannot be decoded")
    assert all(f"{cut}: Not a complete JPEG" in message for cut in cuts), message


def test_a_corrupt_file_in_a_folder_is_named(cifar_folder, tmp_path):
    for name in CIFAR_CLASSES[:2]:
        (tmp_path / "train" / name).mkdir(parents=True)
        for source in sorted((cifar_folder / "train" / name).iterdir())[:3]:
            (tmp_path / "train" / name / source.name).write_bytes(source.read_bytes())
    victim = sorted((tmp_path / "train" / CIFAR_CLASSES[1]).iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:200] + b"\x00garbage" * 20)
    with pytest.raises(ValueError, match=re.escape(str(victim))):
        for split in ("train", "validation"):  # the victim is in one of them
            datasets.load_arrays(tmp_path, split, cache_dir=tmp_path / "cache")


def test_tfds_arrays_through_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        images, labels, info = datasets.load_arrays("cifar10", "test")
        loaded_images, loaded_labels = collect(datasets.load("cifar10", "test", batch_size=5)[0])
        _, loaded_info = datasets.load("cifar10", "test")
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert info == loaded_info and info.source == "tfds"
    np.testing.assert_array_equal(images, loaded_images)
    np.testing.assert_array_equal(labels, loaded_labels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name_or_path="cifar-ten"), "Unknown dataset. Received: name_or_path='cifar-ten'"),
        (dict(name_or_path="./no/such/folder"), "No such folder. Received: name_or_path='./no/such/folder'"),
        (dict(split="dev"), "Received: split='dev'"),
        (dict(image_size=(32,)), r"Received: image_size=\(32,\)"),
        (dict(validation_fraction=1.5), "Received: validation_fraction=1.5"),
        (dict(test_fraction=1.0), "Received: test_fraction=1.0"),
    ],
)
def test_load_arrays_refuses_what_load_refuses(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.load_arrays(**{"name_or_path": "digits", **kwargs})
    with pytest.raises(ValueError, match=match):
        datasets.load(**{"name_or_path": "digits", **kwargs})


def test_check_arrays_converts_gray_and_labels():
    gray = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    for images in (gray, gray[..., None]):
        rgb, labels = datasets.check_arrays(images, np.array([[3], [1]], np.int64), num_classes=4)
        assert rgb.shape == (2, 4, 5, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb[..., 1], gray)
        assert labels.dtype == np.int32 and labels.tolist() == [3, 1]
    color = np.zeros((3, 2, 2, 3), np.uint8)
    assert datasets.check_arrays(color, [0, 1, 2])[0] is color  # uint8 RGB passes as is


@pytest.mark.parametrize(
    "images, labels, num_classes, match",
    [
        (np.zeros((4, 8, 8, 3), np.float32), [0] * 4, None, r"images.dtype=float32 with values from 0.0 to 0.0"),
        (np.full((4, 8, 8, 3), 300.0), [0] * 4, None, r"float64 with values from 300.0 to 300.0 \(outside \[0, 255"),
        (np.full((4, 8, 8, 3), -1, np.int64), [0] * 4, None, r"dtype=int64 with values from -1 to -1 \(outside"),
        (np.zeros((4, 8), np.uint8), [0] * 4, None, r"Received: images.shape=\(4, 8\)"),
        (np.zeros((4, 8, 8, 4), np.uint8), [0] * 4, None, r"Received: images.shape=\(4, 8, 8, 4\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), [], None, r"non-empty .* Received: images.shape=\(0, 8, 8, 3\)"),
        (np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 2], None, "Received: 4 images and 3 labels"),
        (np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 10, 2], 10, "Received: largest label 10 with num_classes=10"),
        (np.zeros((4, 8, 8, 3), np.uint8), [0, -1, 2, 1], None, "Received: smallest label -1"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.eye(4), None, r"argmax.*Received: labels.shape=\(4, 4\)"),
        (np.zeros((4, 8, 8, 3), np.uint8), [0.0, 1.0, 2.0, 3.0], None, "labels.dtype=float64"),
        (np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 2, 3], 0, "Received: num_classes=0"),
    ],
)
def test_check_arrays_names_what_it_refuses(images, labels, num_classes, match):
    with pytest.raises(ValueError, match=match):
        datasets.check_arrays(images, labels, num_classes=num_classes)


def test_array_info_describes_user_arrays():
    images, labels = np.zeros((5, 6, 7), np.uint8), [0, 2, 2, 1, 0]
    info = datasets.array_info(images, labels)
    assert info == datasets.DatasetInfo(
        name="arrays", split="train", class_names=("0", "1", "2"), num_classes=3, num_examples=5,
        image_shape=(6, 7, 3), source="arrays", note="in-memory arrays passed by the caller (5 images)",
    )
    named = datasets.array_info(images, labels, class_names=["cat", "dog", "emu", "yak"], name="pets", split="test")
    assert named.class_names == ("cat", "dog", "emu", "yak") and named.num_classes == 4
    assert named.name == "pets" and named.split == "test" and named.flip_invariant is True
    assert datasets.array_info(images, labels, num_classes=7).class_names == tuple("0123456")
    with pytest.raises(ValueError, match="Received: num_classes=3 and 4 class_names"):
        datasets.array_info(images, labels, num_classes=3, class_names="abcd")
    with pytest.raises(ValueError, match="largest label 2 with num_classes=2"):
        datasets.array_info(images, labels, class_names=["a", "b"])
    with pytest.raises(ValueError, match="Received: split='val'"):
        datasets.array_info(images, labels, split="val")


def test_split_arrays_holds_out_each_class_with_the_seed():
    labels = np.random.RandomState(5).permutation(np.repeat([0, 1, 2], [10, 20, 1]))
    images = np.arange(len(labels) * 2, dtype=np.uint8).reshape(-1, 2)  # each row names its index
    (train_x, train_y), (val_x, val_y) = datasets.split_arrays(images, labels, validation_fraction=0.1)
    assert np.bincount(val_y, minlength=3).tolist() == [1, 2, 1]  # max(1, round(n / 10)) per class
    assert np.bincount(train_y, minlength=3).tolist() == [9, 18, 0]  # a class of one goes to validation
    train_ids, val_ids = train_x[:, 0] // 2, val_x[:, 0] // 2
    assert not set(train_ids) & set(val_ids) and len(set(train_ids) | set(val_ids)) == len(labels)
    assert np.all(np.diff(train_ids) > 0) and np.all(np.diff(val_ids) > 0)  # the arrays' order
    np.testing.assert_array_equal(labels[train_ids], train_y)
    again = datasets.split_arrays(images, labels, validation_fraction=0.1)
    np.testing.assert_array_equal(again[1][0], val_x)
    other = datasets.split_arrays(images, labels, validation_fraction=0.1, seed=1)
    assert other[1][0].tolist() != val_x.tolist()
    with pytest.raises(ValueError, match="Received: validation_fraction=0"):
        datasets.split_arrays(images, labels, validation_fraction=0)
    with pytest.raises(ValueError, match="Received: 31 images and 30 labels"):
        datasets.split_arrays(images[:31], labels[:30])


def test_split_arrays_follows_a_folders_hold_out(cifar_folder):
    """The rule `list_folder` applies to train/: the same seed holds out the same files
    as validation, with a test split held out or not (test_fraction=0)."""
    paths = sorted(sum((datasets.list_folder(cifar_folder, split)[0] for split in datasets.SPLITS), []))
    labels = [CIFAR_CLASSES.index(pathlib.Path(p).parent.name) for p in paths]
    for seed in (0, 3):
        (train, _), (held, _) = datasets.split_arrays(np.array(paths), labels, seed=seed)
        for test_fraction in (0.0, 0.1):
            assert held.tolist() == datasets.list_folder(cifar_folder, "validation", seed, 0.1, test_fraction)[0]
        assert train.tolist() == datasets.list_folder(cifar_folder, "train", seed=seed, test_fraction=0)[0]
