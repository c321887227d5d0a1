import numpy as np
import pytest

from keras_vitmix.layers import TransformerBlock

from . import _layer_checks as lc

HEADS, MLP_DIM = 4, 64
SHAPE = (lc.BATCH, lc.TOKENS, lc.DIM)
SCORES_SHAPE = (lc.BATCH, HEADS, lc.TOKENS, lc.TOKENS)
ARGS = {"num_heads": HEADS, "mlp_dim": MLP_DIM}
# Every constructor option away from its default.
ALL_OPTIONS = {
    **ARGS,
    "dropout_rate": 0.1,
    "attention_dropout": 0.1,
    "drop_path_rate": 0.2,
    "layer_scale_init": 0.1,
    "layer_norm_epsilon": 1e-5,
}


def block_params(dim, heads, mlp_dim, layer_scale=False):
    norms = 2 * 2 * dim
    mlp = dim * mlp_dim + mlp_dim + mlp_dim * dim + dim
    return norms + lc.attention_param_count(dim, heads, dim // heads) + mlp + (2 * dim if layer_scale else 0)


class TestTransformerBlockLayer(lc.LayerTestCase):
    def test_run_layer_test(self):
        self.check_layer(
            TransformerBlock,
            ARGS,
            input_shape=SHAPE,
            expected_output_shape=SHAPE,
            expected_num_trainable_weights=12,  # 2 LN x 2, qkv + proj x 2, fc1 + fc2 x 2
            expected_num_non_trainable_weights=0,
        )

    def test_run_layer_test_options(self):
        # DropPath and LayerScale run in the fit step; the dropouts are fit-tested in
        # test_mlp.py and test_attention.py (JAX compiles every Dropout for seconds).
        self.check_layer(
            TransformerBlock,
            {**ALL_OPTIONS, "dropout_rate": 0.0, "attention_dropout": 0.0},
            input_shape=SHAPE,
            expected_output_shape=SHAPE,
            expected_num_trainable_weights=14,  # + the two LayerScale vectors
            expected_num_non_trainable_weights=0,
        )


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_mixed_precision(policy):
    out, scores = lc.check_mixed_precision(
        TransformerBlock, {**ARGS, "layer_scale_init": 0.1}, SHAPE, policy, {"return_attention_scores": True}
    )
    assert scores.shape == SCORES_SHAPE
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)


def test_saved_model_roundtrip(tmp_path):
    lc.check_saved_model_roundtrip(TransformerBlock(**ALL_OPTIONS), SHAPE, tmp_path)


def test_config_matches_signature():
    lc.check_config_matches_signature(TransformerBlock(**ALL_OPTIONS))


@pytest.mark.parametrize("layer_scale", [False, True])
def test_parameter_count(layer_scale):
    layer = TransformerBlock(**ARGS, layer_scale_init=0.5 if layer_scale else None)
    layer.build(SHAPE)
    expected = block_params(lc.DIM, HEADS, MLP_DIM, layer_scale)
    assert lc.count_params(layer.trainable_weights) == expected
    # 4D^2 + 4D (attention) + 2DM + M + D (MLP) + 4D (norms), spelled out for D=32, M=64.
    assert block_params(32, 4, 64) == 4 * 32**2 + 4 * 32 + 2 * 32 * 64 + 64 + 32 + 4 * 32


def test_return_attention_scores():
    layer = TransformerBlock(**ARGS)
    x = lc.random_array(SHAPE)
    out, scores = layer(x, return_attention_scores=True)
    assert tuple(out.shape) == SHAPE and tuple(scores.shape) == SCORES_SHAPE
    scores = lc.to_numpy(scores)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(lc.to_numpy(out), lc.to_numpy(layer(x)), atol=1e-5)


def test_attention_mask_is_forwarded():
    layer = TransformerBlock(**ARGS)
    mask = np.arange(lc.TOKENS)[None, :] < np.array([[10], [5]])
    _, scores = layer(lc.random_array(SHAPE), attention_mask=mask, return_attention_scores=True)
    assert np.abs(lc.to_numpy(scores) * ~mask[:, None, None, :]).max() < 1e-9


def test_layer_scale_adds_two_vectors():
    layer = TransformerBlock(**ARGS, layer_scale_init=0.25)
    layer.build(SHAPE)
    plain = TransformerBlock(**ARGS)
    plain.build(SHAPE)
    assert len(layer.trainable_weights) == len(plain.trainable_weights) + 2
    for gamma in (layer.gamma1, layer.gamma2):
        assert tuple(gamma.shape) == (lc.DIM,)
        np.testing.assert_array_equal(lc.to_numpy(gamma), np.full((lc.DIM,), 0.25, "float32"))


def test_zero_layer_scale_makes_identity():
    x = lc.random_array(SHAPE)
    np.testing.assert_array_equal(lc.to_numpy(TransformerBlock(**ARGS, layer_scale_init=0.0)(x)), x)


def test_pre_norm_residual_structure():
    """With the MLP zeroed the block is x + MHSA(LN(x)), using the layer's own MHSA."""
    layer = TransformerBlock(**ARGS)
    x = lc.random_array(SHAPE, seed=1)
    layer.build(SHAPE)
    for weight in layer.mlp.fc2.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    expected = x + lc.to_numpy(layer.attention(lc.layer_norm(x)))
    np.testing.assert_allclose(lc.to_numpy(layer(x)), expected, atol=1e-5)


def test_dropout_and_drop_path_only_in_training():
    lc.check_random_only_in_training(TransformerBlock(**ALL_OPTIONS), SHAPE)


@pytest.mark.parametrize(
    "name, value",
    [
        ("num_heads", 0),
        ("mlp_dim", 0),
        ("dropout_rate", -0.1),
        ("dropout_rate", 1.0),
        ("attention_dropout", -0.5),
        ("drop_path_rate", -0.2),
        ("drop_path_rate", 1.5),
    ],
)
def test_bad_arguments_raise(name, value):
    lc.check_bad_argument(TransformerBlock, ARGS, name, value)


@pytest.mark.parametrize("name", ["dropout_rate", "attention_dropout", "drop_path_rate"])
def test_negative_rates_raise_value_error(name):
    lc.check_bad_argument(TransformerBlock, ARGS, name, -0.25, errors=ValueError)
