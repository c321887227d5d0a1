"""`_internals.call_graph` (route "sublayer_calls_torch"): under torch, a model's `call` runs the layers of its graph without
Keras's `Layer.__call__`. Values, gradients, updated statistics, the training flag an
outer model passes down and mixed-precision dtypes are those of Keras's route."""

import keras
import numpy as np
import pytest

from keras_vitmix import _internals, config

from tests.backend_utils import input_gradient
from tests.layers import _layer_checks as lc
from tests.small_models import FAMILIES, small

# Seeded dropout and stochastic depth wherever the family has them: their masks match
# only if both routes pass the same training flags to the same layers in the same order.
REGULARIZED = {
    "ViT": dict(dropout_rate=0.3, attention_dropout=0.2, drop_path_rate=0.2),
    "MLPMixer": dict(dropout_rate=0.3, drop_path_rate=0.2),
    "ConvMixer": {},  # BatchNormalization at the top level and in every block
    "HybridMixerViT": dict(dropout_rate=0.3, attention_dropout=0.2, drop_path_rate=0.2),
    "HybridConvMixerMixer": dict(dropout_rate=0.3, drop_path_rate=0.2),
}


def _build(family, seed, **overrides):
    keras.utils.set_random_seed(seed)  # the dropout layers' seed generators
    model = small(family, **{**REGULARIZED[family], **overrides})
    lc.randomize_weights(model, seed=seed)
    return model


def _both_routes(run):
    results = []
    for direct in (True, False):
        with config.fast_routes(direct, routes="sublayer_calls_torch"):
            results.append(run())
    return results


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_direct_graph_calls_give_the_keras_route_results(family):
    """Outputs at inference and in training, the weights after a training call
    (BatchNormalization's moving statistics) and the input gradient agree."""
    x = lc.random_array((4, 16, 16, 3), seed=1, scale=100.0) + 127.0
    dy = keras.ops.convert_to_tensor(lc.random_array((4, 10), seed=2))

    def run():
        model = _build(family, seed=3)
        outputs = [lc.to_numpy(model(x, training=training)) for training in (False, True)]
        weights = [lc.to_numpy(w) for w in model.weights]  # before JAX's grad traces the call
        gradient = input_gradient(lambda t: keras.ops.sum(model(t, training=True) * dy), x)
        return outputs, gradient, weights

    (direct_out, direct_grad, direct_weights), (keras_out, keras_grad, keras_weights) = _both_routes(run)
    assert not np.allclose(direct_out[0], direct_out[1])  # training mode did change something
    for got, expected in zip(direct_out + [direct_grad] + direct_weights, keras_out + [keras_grad] + keras_weights):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(direct_grad).sum() > 0


@pytest.mark.parametrize("family", ["ViT", "ConvMixer"])
def test_training_flag_from_an_outer_model_reaches_the_graph(family):
    """Called inside another model with `training=True`, the application gets the
    resolved flag: its dropout (ViT) or batch statistics (ConvMixer) act as in Keras's
    route, and not as at inference."""
    x = lc.random_array((4, 16, 16, 3), seed=4, scale=100.0) + 127.0

    def run():
        inner = _build(family, seed=5)
        outer = keras.Sequential([keras.Input((16, 16, 3)), inner])
        return lc.to_numpy(outer(x, training=True)), lc.to_numpy(inner(x, training=False))

    (direct_train, direct_infer), (keras_train, keras_infer) = _both_routes(run)
    np.testing.assert_allclose(direct_train, keras_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(direct_infer, keras_infer, rtol=1e-5, atol=1e-5)
    assert not np.allclose(direct_train, direct_infer)


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_mixed_precision_graph_matches_keras_route(policy):
    """Under a mixed policy each layer runs in the autocast scope Keras would give it:
    the same values, and the head's float32 softmax as Keras's route has it."""
    x = lc.random_array((2, 16, 16, 3), seed=6, scale=100.0) + 127.0

    def run():
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            model = _build("HybridMixerViT", seed=7)
            y = model(x)
            block = model.get_layer("block_0")(keras.ops.convert_to_tensor(lc.random_array((2, 64, 96), seed=8)))
        finally:
            keras.config.set_dtype_policy(previous)
        return keras.backend.standardize_dtype(y.dtype), keras.backend.standardize_dtype(block.dtype), lc.to_numpy(y)

    (direct_dtype, direct_block, direct), (keras_dtype, keras_block, expected) = _both_routes(run)
    assert (direct_dtype, direct_block) == (keras_dtype, keras_block) == ("float32", policy.split("_")[1])
    np.testing.assert_allclose(direct, expected, atol=1e-6)


def test_layer_with_an_activity_regularizer_keeps_keras_call():
    """A node the direct route cannot serve (here: an activity regularizer, which only
    `__call__` records) goes through Keras's `__call__`: the loss is there, as in
    Keras's route."""
    x = lc.random_array((2, 16, 16, 3), seed=9, scale=100.0) + 127.0

    def run():
        model = _build("MLPMixer", seed=10)
        model.get_layer("head").activity_regularizer = keras.regularizers.L2(0.1)
        y = model(x)
        return lc.to_numpy(y), [float(lc.to_numpy(loss)) for loss in model.losses]

    (direct, direct_losses), (expected, expected_losses) = _both_routes(run)
    np.testing.assert_allclose(direct, expected, rtol=1e-6, atol=1e-6)
    assert len(direct_losses) == 1 and direct_losses[0] > 0
    np.testing.assert_allclose(direct_losses, expected_losses, rtol=1e-6)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_torch_skips_keras_call_for_the_graph_layers(family, monkeypatch):
    """Under torch a forward pass goes through Keras's `Layer.__call__` once (the
    model's own); under JAX and TensorFlow through every layer's."""
    from keras.src.layers.layer import Layer

    model = small(family)
    x = lc.random_array((2, 16, 16, 3), seed=11)
    model(x)
    called = []
    keras_call = Layer.__call__

    def counting_call(self, *args, **kwargs):
        called.append(self.name)
        return keras_call(self, *args, **kwargs)

    monkeypatch.setattr(Layer, "__call__", counting_call)
    model(x)
    if keras.backend.backend() == "torch":
        assert called == [model.name]
    else:
        assert {model.name, "block_0", "block_1", "head"} <= set(called)


def test_wrong_image_shape_is_still_a_value_error():
    """The model checks the images before any layer of the graph meets them."""
    model = small("ViT")
    with pytest.raises(ValueError, match=r"expects images of shape \(None, 16, 16, 3\).*Received: images of shape \(2, 16, 16, 1\)"):
        model(lc.random_array((2, 16, 16, 1), seed=12))


@pytest.mark.parametrize(
    "layer_policy, outer_scope, expected_dtype",
    [("float32", "bfloat16", "float32"), ("mixed_bfloat16", None, "bfloat16"), ("mixed_bfloat16", "float16", "bfloat16")],
)
def test_graph_node_enters_the_autocast_scope_keras_would(layer_policy, outer_scope, expected_dtype):
    """A float32 layer inside a mixed model reads its kernel in float32, a mixed layer
    in a float32 model in bfloat16: the dtypes and values of Keras's `__call__`."""
    from keras.src import backend as keras_backend

    layer = keras.layers.Dense(4, dtype=layer_policy)  # reads its kernel through the scope
    layer.build((2, 3))
    lc.randomize_weights(layer, seed=13)
    x = keras.ops.convert_to_tensor(lc.random_array((2, 3), seed=14), dtype=outer_scope or "float32")

    def call(fn):
        if outer_scope is None:
            return fn()
        with keras_backend.AutocastScope(outer_scope):
            return fn()

    direct = call(lambda: _internals.call_graph_node(layer, None, x))
    expected = call(lambda: layer(x))
    assert keras.backend.standardize_dtype(direct.dtype) == keras.backend.standardize_dtype(expected.dtype) == expected_dtype
    np.testing.assert_array_equal(lc.to_numpy(direct), lc.to_numpy(expected))
