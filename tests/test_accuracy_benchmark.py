"""benchmarks/accuracy.py's NumPy pipeline (for machines without TensorFlow): the light
augmentation is a crop of the zero-padded image, maybe flipped; MixUp/CutMix labels are
the mixed images' shares; batches cover the split once per epoch. `--image-size`
overrides a model's input size."""

import numpy as np
import pytest

from tests.benchmark_utils import benchmark_script


@pytest.fixture(scope="module")
def script():
    with benchmark_script("accuracy") as module:
        yield module


def test_light_augment_is_a_padded_crop_or_its_flip(script):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 3)).astype(np.uint8)
    out = script.light_augment(images, np.random.default_rng(1))
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))  # 8 px: pad 1
    flips = 0
    for i in range(len(images)):
        found = [(dy, dx, f) for dy in range(3) for dx in range(3) for f in (False, True)
                 if np.array_equal((padded[i, dy:dy + 8, dx:dx + 8, :][:, ::-1] if f else padded[i, dy:dy + 8, dx:dx + 8, :]), out[i])]
        assert found, f"image {i} is no crop of its padded self"
        flips += all(f for *_, f in found)
    assert out.dtype == np.uint8 and 0 < flips < len(images)


def test_mix_labels_are_the_kept_shares(script):
    images = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(6)])  # image i is all i
    labels = np.arange(6) % 3
    kinds = set()
    for seed in range(12):
        mixed, soft = script.mix(images, labels, 3, np.random.default_rng(seed))
        np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
        assert mixed.shape == images.shape and soft.shape == (6, 3)
        cutmix = np.isin(mixed, np.arange(6)).all()  # whole pixels moved, none blended
        kinds.add("cutmix" if cutmix else "mixup")
        if cutmix:
            for i in range(6):  # CutMix: the label weight of image i's class >= its kept pixel share
                kept = (mixed[i] == i).mean()
                assert soft[i, labels[i]] >= kept - 1e-6
    assert kinds == {"cutmix", "mixup"}


def test_batches_cover_the_split_once_per_epoch(script):
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)
    labels = np.arange(10, dtype=np.int32)
    batches = script.numpy_batches(images, labels, 4, False, seed=0)
    assert len(batches) == 3
    seen = np.concatenate([batches[i][1] for i in range(len(batches))])
    np.testing.assert_array_equal(seen, labels)  # unaugmented: in order
    shuffled = script.numpy_batches(images, labels, 4, "light", seed=0)
    first = np.concatenate([shuffled[i][1] for i in range(3)])
    shuffled.on_epoch_end()
    second = np.concatenate([shuffled[i][1] for i in range(3)])
    assert sorted(first) == sorted(second) == list(range(10)) and list(first) != list(second)
    x, y = shuffled[0]
    assert x.dtype == np.float32 and x.shape == (4, 8, 8, 3)


def test_input_size_is_the_models_unless_image_size_is_given(script):
    assert script.input_size("seed_vit") == (72, 72)  # the seed notebook's upscaled input
    assert script.input_size("convmixer_256_8") == (32, 32)
    assert script.input_size("seed_vit", 32) == (32, 32)


def _archive(tmp_path, per_class=10):
    """A gzipped tar of train/<class>/*.png in the CIFAR archive's layout: two classes
    of 32x32 images, dark and bright, so that a model can tell them apart."""
    import tarfile

    from PIL import Image

    source = tmp_path / "source"
    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "light")):
        (source / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 96, (32, 32, 3)) + 150 * label
            Image.fromarray(pixels.astype(np.uint8)).save(source / "train" / name / f"{i:04d}.png")
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "train", arcname="train")
    return archive


def test_extract_replaces_a_killed_extraction_and_runs_once(script, tmp_path, monkeypatch):
    archive = _archive(tmp_path)
    cache = tmp_path / "cache"
    killed = cache / "cifar10-train-jpeg" / "train" / "dark"
    killed.mkdir(parents=True)
    (killed / "0000.png").write_bytes(b"\x89PNG")  # truncated, and no completion marker
    folder = script.extract(archive, cache)
    assert folder == cache / "cifar10-train-jpeg"
    expected = (tmp_path / "source" / "train" / "dark" / "0000.png").read_bytes()
    assert (folder / "train" / "dark" / "0000.png").read_bytes() == expected
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["dark", "light"]
    assert [p.name for p in cache.iterdir()] == ["cifar10-train-jpeg"]  # no staging folder left

    def fail(*args, **kwargs):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(script.tarfile, "open", fail)
    assert script.extract(archive, cache) == folder  # complete: not extracted again


def test_extract_keeps_the_copy_another_run_completed(script, tmp_path, monkeypatch):
    """Two runs on one cache: the one that finishes second drops its own copy."""
    archive = _archive(tmp_path, per_class=2)
    cache = tmp_path / "cache"
    real_open = script.tarfile.open

    def other_run_finishes_first(*args, **kwargs):
        monkeypatch.setattr(script.tarfile, "open", real_open)
        script.extract(archive, cache)  # the other run, complete before this one renames
        (cache / "cifar10-train-jpeg" / "theirs").touch()
        return real_open(*args, **kwargs)

    monkeypatch.setattr(script.tarfile, "open", other_run_finishes_first)
    folder = script.extract(archive, cache)
    assert (folder / "theirs").exists() and (folder / ".complete").exists()
    assert [p.name for p in cache.iterdir()] == ["cifar10-train-jpeg"]


def test_train_numpy_writes_its_metrics_and_keeps_the_split_across_seeds(script, tmp_path, monkeypatch):
    import json
    import sys

    import keras

    # the decoding workers are spawned: they find `_decode` by its module's name
    monkeypatch.setitem(sys.modules, script.__name__, script)
    folder = script.extract(_archive(tmp_path), tmp_path / "cache")
    runs = {}
    for seed in (0, 1):
        output = tmp_path / f"run{seed}"
        metrics = script.train_numpy(
            "seed_convmixer", folder, tmp_path / "cache", 2, 6, 1e-2, 1e-4, False, False, str(output),
            seed=seed, augment=False,
        )
        assert json.loads((output / "metrics.json").read_text()) == metrics
        runs[seed] = metrics
    first = runs[0]
    parameters = keras_vitmix_parameters("seed_convmixer", classes=2)
    assert first["parameters"] == parameters and first["epochs"] == 2 and first["epochs_run_now"] == 2
    # 18 training images (the last 10% of each class is held out): images/s counts them
    assert first["images_per_second"] * first["seconds_per_epoch"] == pytest.approx(18)
    assert first["test_examples"] == runs[1]["test_examples"] == 2
    assert first["test_split"] == runs[1]["test_split"]  # the seed leaves the validation split alone
    assert first["test_loss"] != runs[1]["test_loss"]  # ...and re-draws the initialization
    assert keras.config.dtype_policy().name == "float32"


def keras_vitmix_parameters(name, **kwargs):
    from keras_vitmix.applications import create_model

    return create_model(name, **kwargs).count_params()
