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
