import numpy as np
import pytest

from keras_vitmix.layers import MixerBlock

from . import _layer_checks as lc

TOKEN_MLP, CHANNEL_MLP = 8, 64
SHAPE = (lc.BATCH, lc.TOKENS, lc.DIM)
ARGS = {"token_mlp_dim": TOKEN_MLP, "channel_mlp_dim": CHANNEL_MLP}
ALL_OPTIONS = {**ARGS, "dropout_rate": 0.1, "drop_path_rate": 0.2, "layer_norm_epsilon": 1e-5}


def mixer_params(n, t, c, d):
    """Token MLP N->t->N, channel MLP D->c->D, two LayerNorms over D."""
    return 2 * (n * t) + t + n + 2 * (d * c) + c + d + 4 * d


class TestMixerBlockLayer(lc.LayerTestCase):
    def test_run_layer_test(self):
        # DropPath runs in the fit step; the MLP's dropout is fit-tested in test_mlp.py
        # (JAX compiles every Dropout for seconds on CPU).
        self.check_layer(
            MixerBlock,
            {**ALL_OPTIONS, "dropout_rate": 0.0},
            input_shape=SHAPE,
            expected_output_shape=SHAPE,
            expected_num_trainable_weights=12,  # 2 LN x 2 + 2 MLPs x (2 kernels + 2 biases)
            expected_num_non_trainable_weights=0,
        )


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_mixed_precision(policy):
    lc.check_mixed_precision(MixerBlock, ALL_OPTIONS, SHAPE, policy)


def test_saved_model_roundtrip(tmp_path):
    loaded = lc.check_saved_model_roundtrip(MixerBlock(**ALL_OPTIONS), SHAPE, tmp_path)
    assert loaded.get_layer(index=1).num_tokens == lc.TOKENS


def test_config_matches_signature():
    lc.check_config_matches_signature(MixerBlock(**ALL_OPTIONS))
    assert "num_tokens" not in MixerBlock(**ARGS).get_config()


@pytest.mark.parametrize("tokens", [lc.TOKENS, 9])
def test_parameter_count_formula(tokens):
    layer = MixerBlock(**ARGS)
    layer.build((lc.BATCH, tokens, lc.DIM))
    assert layer.num_tokens == tokens
    assert lc.count_params(layer.trainable_weights) == mixer_params(tokens, TOKEN_MLP, CHANNEL_MLP, lc.DIM)


def test_num_tokens_read_from_input():
    counts = {}
    for tokens in (16, 9):
        layer = MixerBlock(**ARGS)
        out = layer(lc.random_array((lc.BATCH, tokens, lc.DIM)))
        assert tuple(out.shape) == (lc.BATCH, tokens, lc.DIM)
        assert layer.num_tokens == tokens
        assert tuple(layer.token_mixing.fc1.kernel.shape) == (tokens, TOKEN_MLP)
        assert tuple(layer.token_mixing.fc2.kernel.shape) == (TOKEN_MLP, tokens)
        counts[tokens] = lc.count_params(layer.trainable_weights)
    assert counts[16] != counts[9]
    assert counts[16] - counts[9] == (16 - 9) * (2 * TOKEN_MLP + 1)


def test_unknown_token_count_raises():
    with pytest.raises(ValueError, match="tokens"):
        MixerBlock(**ARGS).build((None, None, lc.DIM))


def test_matches_numpy_reference():
    """x + TokenMLP(LN(x)^T)^T, then + ChannelMLP(LN(.)), computed with NumPy."""
    layer = MixerBlock(**ARGS)
    layer.build(SHAPE)
    lc.randomize_weights(layer, seed=2)
    x = lc.random_array(SHAPE, seed=3)
    g1, b1 = (lc.to_numpy(w) for w in layer.norm1.weights)
    g2, b2 = (lc.to_numpy(w) for w in layer.norm2.weights)
    tokens = lc.reference_mlp(layer.token_mixing, (lc.layer_norm(x) * g1 + b1).transpose(0, 2, 1))
    h = x + tokens.transpose(0, 2, 1)
    expected = h + lc.reference_mlp(layer.channel_mixing, lc.layer_norm(h) * g2 + b2)
    np.testing.assert_allclose(lc.to_numpy(layer(x)), expected, atol=1e-4)


def test_token_mixing_spreads_a_change_to_every_token():
    layer = MixerBlock(**ARGS)
    x = lc.random_array(SHAPE, seed=4)
    base = lc.to_numpy(layer(x))
    changed = x.copy()
    changed[:, 0] = lc.random_array((lc.BATCH, lc.DIM), seed=5)  # only token 0 changes ...
    out = lc.to_numpy(layer(changed))
    assert not np.allclose(out[:, 1:], base[:, 1:], atol=1e-4)  # ... yet all tokens move


def test_drop_path_only_in_training():
    lc.check_random_only_in_training(MixerBlock(**ARGS, drop_path_rate=0.5), SHAPE)


@pytest.mark.parametrize(
    "name, value",
    [
        ("token_mlp_dim", 0),
        ("channel_mlp_dim", -1),
        ("dropout_rate", -0.1),
        ("dropout_rate", 1.0),
        ("drop_path_rate", -0.3),
        ("drop_path_rate", 2.0),
    ],
)
def test_bad_arguments_raise(name, value):
    lc.check_bad_argument(MixerBlock, ARGS, name, value)
