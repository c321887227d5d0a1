import keras
import numpy as np
import pytest

from keras_vitmix.layers import DropPath

from . import _layer_checks as lc

SHAPE = (lc.BATCH, lc.TOKENS, lc.DIM)


class TestDropPathLayer(lc.LayerTestCase):
    def test_run_layer_test(self):
        self.check_layer(
            DropPath,
            {"rate": 0.5, "seed": 3},
            input_shape=SHAPE,
            call_kwargs={"training": True},
            expected_output_shape=SHAPE,
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=1,
            supports_masking=True,
        )


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_mixed_precision(policy):
    (out,) = lc.check_mixed_precision(DropPath, {"rate": 0.5, "seed": 1}, SHAPE, policy, {"training": True})
    # Rounded to the compute dtype, each sample is still all zeros or 2 * input.
    x = lc.to_numpy(keras.ops.cast(lc.random_array(SHAPE), policy.split("_")[1]))
    for sample, reference in zip(out, x):
        assert np.all(sample == 0) or np.array_equal(sample, 2.0 * reference)


def test_saved_model_roundtrip(tmp_path):
    lc.check_saved_model_roundtrip(DropPath(0.3, seed=2), SHAPE, tmp_path)


def test_config_matches_signature():
    lc.check_config_matches_signature(DropPath(0.1, seed=7))


@pytest.mark.parametrize("training", [False, None])
def test_identity_at_inference(training):
    x = lc.random_array(SHAPE)
    np.testing.assert_array_equal(lc.to_numpy(DropPath(0.9, seed=0)(x, training=training)), x)


def test_zero_rate_is_identity_in_training():
    x = lc.random_array(SHAPE)
    np.testing.assert_array_equal(lc.to_numpy(DropPath(0.0)(x, training=True)), x)


def test_whole_samples_dropped_and_rescaled():
    x = lc.random_array((64, 5, 3))
    out = lc.to_numpy(DropPath(0.5, seed=11)(x, training=True))
    dropped = kept = 0
    for sample, reference in zip(out, x):
        if np.all(sample == 0):
            dropped += 1
        else:
            # keep = 0.5 exactly, so input / (1 - rate) is exact in float32.
            np.testing.assert_array_equal(sample, reference / np.float32(0.5))
            kept += 1
    assert dropped > 0 and kept > 0


def test_non_power_of_two_rate_rescales_by_one_over_keep():
    x = lc.random_array((64, 4))
    out = lc.to_numpy(DropPath(0.2, seed=5)(x, training=True))
    kept = ~np.all(out == 0, axis=1)
    assert 0 < kept.sum() < 64
    np.testing.assert_array_equal(out[~kept], 0.0)
    np.testing.assert_allclose(out[kept], x[kept] / np.float32(0.8), rtol=1e-6)


def test_kept_fraction_matches_rate():
    rate, batch = 0.3, 4000
    out = lc.to_numpy(DropPath(rate, seed=123)(np.ones((batch, 2), "float32"), training=True))
    assert set(np.unique(out)) <= {0.0, np.float32(1.0) / np.float32(0.7)}
    kept_fraction = np.mean(out[:, 0] != 0)
    assert abs(kept_fraction - (1.0 - rate)) < 0.04  # ~5.5 standard deviations


def test_same_seed_gives_same_masks():
    x = np.ones((256, 3), "float32")
    first, second, other = DropPath(0.5, seed=42), DropPath(0.5, seed=42), DropPath(0.5, seed=43)
    masks = []
    for _ in range(2):  # each call advances the SeedGenerator; both layers in step
        a, b = lc.to_numpy(first(x, training=True)), lc.to_numpy(second(x, training=True))
        np.testing.assert_array_equal(a, b)
        masks.append(a[:, 0] != 0)
    assert not np.array_equal(masks[0], masks[1]), "seed state did not advance"
    c = lc.to_numpy(other(x, training=True))
    assert not np.array_equal(c[:, 0] != 0, masks[0]), "different seeds gave one mask"


def test_unseeded_layers_are_reproducible_under_global_seed():
    x = np.ones((256, 1), "float32")
    keras.utils.set_random_seed(0)
    a = lc.to_numpy(DropPath(0.5)(x, training=True))
    keras.utils.set_random_seed(0)
    b = lc.to_numpy(DropPath(0.5)(x, training=True))
    np.testing.assert_array_equal(a, b)


def test_works_on_rank_two_and_four_inputs():
    for shape in [(8, 3), (8, 2, 2, 3)]:
        x = lc.random_array(shape)
        out = lc.to_numpy(DropPath(0.5, seed=1)(x, training=True))
        assert out.shape == shape
        for sample, reference in zip(out, x):
            assert np.all(sample == 0) or np.array_equal(sample, 2.0 * reference)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rate_out_of_range_raises(rate):
    lc.check_bad_argument(DropPath, {}, "rate", rate, errors=ValueError)


def test_rate_of_wrong_type_raises():
    lc.check_bad_argument(DropPath, {}, "rate", "0.5", errors=TypeError)
