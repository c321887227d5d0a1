import numpy as np
import pytest

from keras_vitmix.layers import MLP

from . import _layer_checks as lc

SHAPE = (lc.BATCH, lc.TOKENS, lc.DIM)
HIDDEN = 64


class TestMLPLayer(lc.LayerTestCase):
    def test_run_layer_test(self):
        self.check_layer(
            MLP,
            {"hidden_dim": HIDDEN, "dropout_rate": 0.1},
            input_shape=SHAPE,
            expected_output_shape=SHAPE,
            expected_num_trainable_weights=4,
            expected_num_non_trainable_weights=0,
        )

    def test_run_layer_test_output_dim_no_bias(self):
        self.check_layer(
            MLP,
            {"hidden_dim": HIDDEN, "output_dim": 8, "activation": "relu", "use_bias": False},
            input_shape=SHAPE,
            expected_output_shape=(lc.BATCH, lc.TOKENS, 8),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=0,
        )


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_mixed_precision(policy):
    lc.check_mixed_precision(MLP, {"hidden_dim": HIDDEN, "dropout_rate": 0.1}, SHAPE, policy)


def test_saved_model_roundtrip(tmp_path):
    lc.check_saved_model_roundtrip(MLP(HIDDEN, output_dim=24, dropout_rate=0.2), SHAPE, tmp_path)


def test_config_matches_signature():
    lc.check_config_matches_signature(MLP(HIDDEN, output_dim=8, activation="relu", dropout_rate=0.1))


def test_output_dim_defaults_to_input_dim():
    layer = MLP(HIDDEN)
    out = layer(lc.random_array(SHAPE))
    assert tuple(out.shape) == SHAPE
    assert tuple(layer.fc1.kernel.shape) == (lc.DIM, HIDDEN)
    assert tuple(layer.fc2.kernel.shape) == (HIDDEN, lc.DIM)
    assert layer.compute_output_shape((None, 5, 12)) == (None, 5, 12)
    assert MLP(HIDDEN, output_dim=7).compute_output_shape((None, 5, 12)) == (None, 5, 7)


def test_parameter_count():
    layer = MLP(HIDDEN, output_dim=8)
    layer.build(SHAPE)
    assert lc.count_params(layer.trainable_weights) == lc.DIM * HIDDEN + HIDDEN + HIDDEN * 8 + 8


def test_matches_numpy_gelu_reference():
    layer = MLP(HIDDEN)
    x = lc.random_array(SHAPE, seed=3, scale=2.0)
    layer.build(SHAPE)
    lc.randomize_weights(layer, seed=4)
    out = lc.to_numpy(layer(x))
    np.testing.assert_allclose(out, lc.reference_mlp(layer, x), atol=1e-5)
    # The tanh approximation is measurably different here, so the GELU is the exact one.
    tanh = lc.reference_mlp(layer, x, lambda h: 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3))))
    assert np.abs(out - tanh).max() > 1e-4


def test_relu_activation_reference():
    layer = MLP(HIDDEN, activation="relu")
    x = lc.random_array(SHAPE, seed=5)
    out = lc.to_numpy(layer(x))
    np.testing.assert_allclose(out, lc.reference_mlp(layer, x, lambda h: np.maximum(h, 0)), atol=1e-5)


def test_dropout_only_in_training():
    layer = MLP(HIDDEN, dropout_rate=0.5)
    x = lc.random_array(SHAPE, seed=6)
    layer.build(x.shape)
    reference = lc.reference_mlp(layer, x)
    for training in (False, None):
        np.testing.assert_allclose(lc.to_numpy(layer(x, training=training)), reference, atol=1e-5)
    trained = lc.to_numpy(layer(x, training=True))
    zero_fraction = np.mean(trained == 0)
    assert 0.35 < zero_fraction < 0.65  # the output dropout zeroes about half
    assert not np.allclose(trained, reference, atol=1e-3)


@pytest.mark.parametrize(
    "name, value",
    [("hidden_dim", 0), ("hidden_dim", -3), ("output_dim", 0), ("dropout_rate", -0.1), ("dropout_rate", 1.0)],
)
def test_bad_arguments_raise(name, value):
    lc.check_bad_argument(MLP, {"hidden_dim": HIDDEN}, name, value)


def test_non_integer_hidden_dim_raises_type_error():
    lc.check_bad_argument(MLP, {}, "hidden_dim", 2.5, errors=TypeError)
