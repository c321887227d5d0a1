"""`keras_vitmix._internals`, the layers' and applications' part: each private Keras or
TensorFlow symbol made missing in turn (as in an older or newer release), the public
path is taken, and it gives the same numbers as the route that uses the symbol."""

import types

import keras
import numpy as np
import pytest

from keras_vitmix import _internals
from keras_vitmix.layers import DepthwiseConv2D, TransformerBlock

from tests.backend_utils import input_gradient
from tests.layers import _layer_checks as lc
from tests.small_models import small

torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="a torch route's internals")

# The attribute names _internals reads, each pointing at a name no Keras object has.
CALL_SYMBOLS = ["_SUBLAYERS", "_STANDARDIZE_INPUTS", "_RUN_THROUGH_GRAPH", "_CALL_HAS_CONTEXT_ARG", "_CALL_CONTEXT_ARGS"]
BACKEND_SYMBOLS = ["AutocastScope", "get_autocast_scope", "get_keras_mask", "is_tensor"]


def _counting_keras_calls(monkeypatch):
    """Counts the layers that go through Keras's `Layer.__call__` from now on."""
    called = []
    keras_call = keras.layers.Layer.__call__

    def counting_call(self, *args, **kwargs):
        called.append(self.name)
        return keras_call(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__call__", counting_call)
    return called


def _run_model(model, x, dy):
    outputs = [lc.to_numpy(model(x, training=training)) for training in (False, True)]
    gradient = input_gradient(lambda t: keras.ops.sum(model(t, training=True) * dy), x)
    return outputs + [gradient]


def _model_results_without(monkeypatch, remove):
    """Results of a small HybridMixerViT (attention, mixing, LayerNormalization, Dense),
    first with every internal, then with `remove(monkeypatch)` applied, and the layers
    that went through Keras's `__call__` in the second run's inference call."""
    keras.utils.set_random_seed(1)
    model = small("HybridMixerViT", classifier_activation=None)
    lc.randomize_weights(model, seed=2)
    x = lc.random_array((2, 16, 16, 3), seed=3, scale=60.0) + 127.0
    dy = keras.ops.convert_to_tensor(lc.random_array((2, 10), seed=4))
    fast = _run_model(model, x, dy)
    remove(monkeypatch)
    called = _counting_keras_calls(monkeypatch)
    model(x)
    calls = list(called)
    public = _run_model(model, x, dy)
    return fast, public, calls


def _assert_same(fast, public, atol=1e-6):
    for got, expected in zip(fast, public, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=atol)


@torch_only
@pytest.mark.parametrize("symbol", CALL_SYMBOLS)
def test_missing_call_internal_takes_keras_call(symbol, monkeypatch):
    def remove(monkeypatch):
        monkeypatch.setattr(_internals, symbol, "_not_in_this_keras")

    fast, public, calls = _model_results_without(monkeypatch, remove)
    _assert_same(fast, public)
    assert "block_0" in calls  # the graph's layers went through Keras's __call__
    if symbol == "_SUBLAYERS":
        assert "norm1" in calls  # so did the blocks' sublayers


@torch_only
@pytest.mark.parametrize("symbol", BACKEND_SYMBOLS + [None])
def test_missing_keras_backend_symbol_takes_keras_call(symbol, monkeypatch):
    """`keras.src.backend` without one of its functions (None: the module is missing)."""

    def remove(monkeypatch):
        if symbol is None:
            monkeypatch.setattr(_internals, "_keras_backend", None)
        else:
            names = {n: getattr(_internals._keras_backend, n) for n in BACKEND_SYMBOLS if n != symbol}
            monkeypatch.setattr(_internals, "_keras_backend", types.SimpleNamespace(**names))

    fast, public, calls = _model_results_without(monkeypatch, remove)
    _assert_same(fast, public)
    assert "block_0" in calls and "norm1" not in calls  # the blocks still call their sublayers directly


@torch_only
def test_missing_remat_mode_takes_keras_call_where_keras_has_remat(monkeypatch):
    """Without `layer._remat_mode`, a Keras that has rematerialization (`keras.RematScope`)
    could remat the layer in `__call__`: the sublayers go through it."""
    if not hasattr(keras, "RematScope"):
        pytest.skip("this Keras has no rematerialization")

    def remove(monkeypatch):
        monkeypatch.setattr(_internals, "_REMAT_MODE", "_not_in_this_keras")

    fast, public, calls = _model_results_without(monkeypatch, remove)
    _assert_same(fast, public)
    assert {"block_0", "norm1", "qkv"} <= set(calls)


def test_public_paths_elsewhere_than_torch():
    """Under JAX and TensorFlow every call is Keras's: the internals are never read."""
    if keras.backend.backend() == "torch":
        pytest.skip("the torch routes are the internals' users")
    block = TransformerBlock(num_heads=2, mlp_dim=16)
    block.build((2, 5, 8))
    assert not _internals._direct_call_allowed(block)
    assert not _internals.graph_calls_available(small("ViT"))


def _xla_depthwise_results():
    import tensorflow as tf

    layer = DepthwiseConv2D(3, padding="same", activation="gelu")
    layer.build((2, 6, 6, 4))
    lc.randomize_weights(layer, seed=7)
    x = tf.constant(lc.random_array((2, 6, 6, 4), seed=8))
    routes = []

    @tf.function(jit_compile=True)
    def values_and_gradients(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(y))
        routes.append(layer._shifted_applies(x))
        return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

    return [t.numpy() for t in values_and_gradients(x)], routes


@pytest.mark.parametrize("missing", ["module", "function"])
def test_missing_tensorflow_xla_test_takes_keras_depthwise(missing, monkeypatch):
    """Without TensorFlow's private XLA-context test, DepthwiseConv2D inside an XLA
    function is Keras's own, with the shifted route's values and gradients."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the route exists under TensorFlow only")
    fast, routes = _xla_depthwise_results()
    assert routes == [True]
    module, name = _internals._TF_XLA_CONTEXT
    if missing == "module":
        monkeypatch.setattr(_internals, "_TF_XLA_CONTEXT", ("tensorflow.python.ops.not_in_this_release", name))
    else:
        monkeypatch.setattr(_internals, "_TF_XLA_CONTEXT", (module, "NotInThisRelease"))
    public, routes = _xla_depthwise_results()
    assert routes == [False]
    _assert_same(fast, public, atol=2e-5)
