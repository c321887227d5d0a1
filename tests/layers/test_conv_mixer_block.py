import numpy as np
import pytest

from keras_vitmix.layers import ConvMixerBlock

from . import _layer_checks as lc

KERNEL, SIDE = 3, 4
SHAPE = (lc.BATCH, SIDE, SIDE, lc.DIM)
BN_EPSILON = 1e-5


def pointwise_branch(layer, x, activation):
    """BN(act(x @ W + b)) with BatchNorm in inference, from the layer's weights."""
    kernel, bias = (lc.to_numpy(w).astype("float64") for w in layer.pointwise.weights)
    gamma, beta, mean, var = (lc.to_numpy(w) for w in layer.pointwise_norm.weights)
    h = activation(x.astype("float64") @ kernel.reshape(lc.DIM, lc.DIM) + bias)
    return (h - mean) / np.sqrt(var + BN_EPSILON) * gamma + beta


class TestConvMixerBlockLayer(lc.LayerTestCase):
    def test_run_layer_test(self):
        self.check_layer(
            ConvMixerBlock,
            {"kernel_size": KERNEL},
            input_shape=SHAPE,
            expected_output_shape=SHAPE,
            # depthwise kernel + bias, 2 BN x (gamma, beta), pointwise kernel + bias
            expected_num_trainable_weights=8,
            expected_num_non_trainable_weights=4,  # 2 BN x (moving mean, variance)
        )


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
@pytest.mark.parametrize("training", [False, True])
def test_mixed_precision(policy, training):
    lc.check_mixed_precision(ConvMixerBlock, {"kernel_size": KERNEL}, SHAPE, policy, {"training": training})


def test_saved_model_roundtrip(tmp_path):
    lc.check_saved_model_roundtrip(ConvMixerBlock(KERNEL, activation="relu"), SHAPE, tmp_path)


def test_config_matches_signature():
    lc.check_config_matches_signature(ConvMixerBlock(KERNEL, activation="relu"))


@pytest.mark.parametrize("kernel_size", [KERNEL, 5])
def test_weight_shapes_and_counts(kernel_size):
    dim = lc.DIM
    layer = ConvMixerBlock(kernel_size)
    layer.build(SHAPE)
    assert tuple(layer.depthwise.kernel.shape) == (kernel_size, kernel_size, dim, 1)
    assert tuple(layer.pointwise.kernel.shape) == (1, 1, dim, dim)
    depthwise = kernel_size * kernel_size * dim + dim
    pointwise = dim * dim + dim
    assert lc.count_params(layer.trainable_weights) == depthwise + 2 * (2 * dim) + pointwise
    assert lc.count_params(layer.non_trainable_weights) == 2 * (2 * dim)


@pytest.mark.parametrize("activation, function", [("gelu", lc.gelu), ("relu", lambda h: np.maximum(h, 0))])
def test_residual_with_zero_depthwise(activation, function):
    """Zero depthwise kernel and bias: act(0) = 0, BN(0) = 0 at init, so the residual
    branch vanishes and the output is BN(act(pointwise(x)))."""
    layer = ConvMixerBlock(KERNEL, activation=activation)
    layer.build(SHAPE)
    for weight in layer.depthwise.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    x = lc.random_array(SHAPE, seed=1)
    expected = pointwise_branch(layer, x, function)
    for training in (False, None):
        np.testing.assert_allclose(lc.to_numpy(layer(x, training=training)), expected, atol=1e-5)


def test_depthwise_branch_is_residual():
    """With BN statistics set and a centered-delta depthwise kernel, the block input
    to the pointwise conv is x + BN(act(x)); checked against NumPy."""
    layer = ConvMixerBlock(KERNEL, activation="relu")
    layer.build(SHAPE)
    lc.randomize_weights(layer, seed=2)
    kernel = np.zeros((KERNEL, KERNEL, lc.DIM, 1), "float32")
    kernel[KERNEL // 2, KERNEL // 2] = 1.0  # identity depthwise conv
    layer.depthwise.kernel.assign(kernel)
    layer.depthwise.bias.assign(np.zeros((lc.DIM,), "float32"))
    gamma, beta, mean, var = (lc.to_numpy(w) for w in layer.depthwise_norm.weights)
    x = lc.random_array(SHAPE, seed=3)
    mixed = x + (np.maximum(x, 0) - mean) / np.sqrt(var + BN_EPSILON) * gamma + beta
    expected = pointwise_branch(layer, mixed, lambda h: np.maximum(h, 0))
    np.testing.assert_allclose(lc.to_numpy(layer(x)), expected, atol=1e-4)


def test_depthwise_mixes_only_neighbours():
    layer = ConvMixerBlock(KERNEL)
    x = lc.random_array(SHAPE, seed=4)
    base = lc.to_numpy(layer(x))
    changed = x.copy()
    changed[0, 0, 0] += 1.0
    moved = np.abs(lc.to_numpy(layer(changed)) - base).max(axis=-1) > 1e-6
    expected = np.zeros((lc.BATCH, SIDE, SIDE), bool)
    expected[0, :2, :2] = True  # a 3x3 "same" kernel reaches one pixel away
    np.testing.assert_array_equal(moved, expected)


def test_batch_norm_uses_batch_statistics_in_training():
    layer = ConvMixerBlock(KERNEL)
    x = lc.random_array(SHAPE, seed=5, scale=3.0) + 2.0
    out = lc.to_numpy(layer(x, training=True))
    # The last op is BN over (B, h, w) with gamma 1, beta 0: zero mean, unit variance.
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.var(axis=(0, 1, 2)), 1.0, atol=2e-2)
    moving_mean = lc.to_numpy(layer.pointwise_norm.moving_mean)
    assert np.abs(moving_mean).max() > 0  # momentum 0.9 updated the statistics


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="not_an_activation"):
        ConvMixerBlock(KERNEL, activation="not_an_activation")


def test_non_grid_input_raises():
    with pytest.raises(ValueError, match="grid"):
        ConvMixerBlock(KERNEL).build((lc.BATCH, lc.TOKENS, lc.DIM))


@pytest.mark.parametrize("value", [0, -3])
def test_bad_kernel_size_raises(value):
    lc.check_bad_argument(ConvMixerBlock, {}, "kernel_size", value)
