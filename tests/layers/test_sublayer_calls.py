"""`_internals.call_sublayer` (route "sublayer_calls_torch"): under torch, a block calls its built sublayers' `call` directly and
skips Keras's `Layer.__call__`. Values, gradients, updated statistics and mixed-precision
dtypes are those of the Keras route, and a wrong input shape is still a `ValueError`
raised at the block."""

import keras
import numpy as np
import pytest

from keras_vitmix import _internals, config
from keras_vitmix.layers import MLP, ConvMixerBlock, Dense, MixerBlock, MultiHeadSelfAttention, PatchEmbedding, TransformerBlock

from tests.backend_utils import input_gradient

from . import _layer_checks as lc

BLOCKS = [
    (TransformerBlock, dict(num_heads=2, mlp_dim=16, layer_scale_init=0.5), (2, 5, 8)),
    # Seeded dropout: the masks match only if both routes pass the same training flags.
    (TransformerBlock, dict(num_heads=2, mlp_dim=16, dropout_rate=0.3, attention_dropout=0.2, drop_path_rate=0.2),
     (4, 5, 8)),
    (MixerBlock, dict(token_mlp_dim=4, channel_mlp_dim=16, dropout_rate=0.3, drop_path_rate=0.2), (4, 5, 8)),
    (MixerBlock, dict(token_mlp_dim=4, channel_mlp_dim=16), (2, 5, 8)),
    (ConvMixerBlock, dict(kernel_size=3), (2, 6, 6, 8)),  # BatchNormalization inside
    (MLP, dict(hidden_dim=16), (2, 5, 8)),
    (MultiHeadSelfAttention, dict(num_heads=2), (2, 5, 8)),
    (PatchEmbedding, dict(hidden_dim=8, patch_size=2, use_class_token=True), (2, 6, 6, 3)),
]
IDS = [cls.__name__ + ("-dropout" if "dropout_rate" in kwargs else "") for cls, kwargs, _ in BLOCKS]


def _model(cls, kwargs, shape, seed):
    keras.utils.set_random_seed(seed)  # the dropout layers' seed generators
    model = keras.Sequential([keras.Input(shape[1:]), cls(**kwargs)])
    lc.randomize_weights(model, seed=seed)
    return model


@pytest.mark.parametrize("cls, kwargs, shape", BLOCKS, ids=IDS)
def test_direct_calls_give_the_keras_route_results(cls, kwargs, shape):
    """The same weights run through both routes: outputs at inference and in training,
    the weights after the training call (BatchNormalization's moving statistics) and
    the input gradient agree."""
    x = lc.random_array(shape, seed=1)
    dy = keras.ops.convert_to_tensor(lc.random_array((shape[0], *_model(cls, kwargs, shape, 0).output_shape[1:]), seed=2))
    results = []
    for direct in (True, False):
        with config.fast_routes(direct, routes="sublayer_calls_torch"):
            model = _model(cls, kwargs, shape, seed=3)
            outputs = [lc.to_numpy(model(x, training=training)) for training in (False, True)]
            weights = [lc.to_numpy(w) for w in model.weights]  # before JAX's grad traces the call
            gradient = input_gradient(lambda t: keras.ops.sum(model(t, training=True) * dy), x)
        results.append((outputs, gradient, weights))
    (direct_out, direct_grad, direct_weights), (keras_out, keras_grad, keras_weights) = results
    for got, expected in zip(direct_out + [direct_grad] + direct_weights, keras_out + [keras_grad] + keras_weights):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert np.abs(direct_grad).sum() > 0


def test_torch_skips_keras_call_for_built_sublayers(monkeypatch):
    """A TransformerBlock's call goes through Keras's `Layer.__call__` once under torch
    (the block's own), and once per sublayer elsewhere."""
    from keras.src.layers.layer import Layer

    called = []
    keras_call = Layer.__call__

    def counting_call(self, *args, **kwargs):
        called.append(self.name)
        return keras_call(self, *args, **kwargs)

    block = TransformerBlock(num_heads=2, mlp_dim=16, name="block")
    x = lc.random_array((2, 5, 8), seed=4)
    block(x)  # builds
    monkeypatch.setattr(Layer, "__call__", counting_call)
    block(x)
    if keras.backend.backend() == "torch":
        assert called == ["block"]
    else:
        assert {"block", "norm1", "attention", "qkv", "proj", "norm2", "mlp", "fc1", "fc2"} <= set(called)


def test_unbuilt_sublayers_take_keras_call():
    """Keras's `__call__` builds a layer on its first call; the direct route never
    sees an unbuilt one."""
    layer = Dense(3)
    outputs = _internals.call_sublayer(layer, lc.random_array((2, 4), seed=5))
    assert layer.built and tuple(outputs.shape) == (2, 3)


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_mixed_precision_matches_keras_route(policy):
    """Sublayers called directly run inside the block's autocast scope: the output has
    the policy's compute dtype and the Keras route's values."""
    x = lc.random_array((2, 5, 8), seed=6)
    outputs = []
    for direct in (True, False):
        block = TransformerBlock(num_heads=2, mlp_dim=16, dtype=policy)
        model = keras.Sequential([keras.Input((5, 8)), block])
        lc.randomize_weights(model, seed=7)
        with config.fast_routes(direct, routes="sublayer_calls_torch"):
            y = model(x)
        assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
        outputs.append(lc.to_numpy(y))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)


@pytest.mark.parametrize(
    "cls, kwargs, shape, wrong",
    [
        (TransformerBlock, dict(num_heads=2, mlp_dim=16), (2, 5, 8), (2, 5, 6)),
        (MixerBlock, dict(token_mlp_dim=4, channel_mlp_dim=16), (2, 5, 8), (2, 4, 8)),
        (ConvMixerBlock, dict(kernel_size=3), (2, 6, 6, 8), (2, 6, 6, 4)),
        (MLP, dict(hidden_dim=16), (2, 5, 8), (2, 5, 6)),
        (MultiHeadSelfAttention, dict(num_heads=2), (2, 5, 8), (2, 5, 6)),
    ],
    ids=[cls.__name__ for cls in (TransformerBlock, MixerBlock, ConvMixerBlock, MLP, MultiHeadSelfAttention)],
)
def test_wrong_input_shape_is_a_value_error_at_the_block(cls, kwargs, shape, wrong):
    """The block checks its input before any sublayer (called directly under torch, so
    without its own check) meets it."""
    layer = cls(**kwargs)
    layer(lc.random_array(shape))
    axis = 1 if wrong[1] != shape[1] else -1
    with pytest.raises(ValueError, match=rf"expected axis {axis} of input shape to have value {shape[axis]}"):
        layer(lc.random_array(wrong))
