"""`keras_vitmix.config`'s fast-route switch: off, every layer computes through Keras's
public path, and every registered family gives the fast routes' outputs and weight
gradients within 1e-5 (float32) on the current backend."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import config
from keras_vitmix.applications import list_models, model_info
from keras_vitmix.layers import BatchNormalization, Conv2D, Dense, DepthwiseConv2D, LayerNormalization

from tests.backend_utils import trainable_gradients
from tests.layers import _layer_checks as lc
from tests.small_models import FAMILIES, small


@pytest.fixture(autouse=True)
def _routes_restored():
    yield
    config.set_fast_routes(True)


def test_every_registered_family_has_a_small_model():
    """A new family in the registry needs a small configuration here to be covered."""
    registered = {model_info(name)["family"].__name__ for name in list_models()}
    assert registered == set(FAMILIES)


def _outputs_and_gradients(model, weights, x, y):
    model.set_weights(weights)  # the same BatchNormalization statistics for each run
    inference = lc.to_numpy(model(x, training=False))
    training = lc.to_numpy(model(x, training=True))
    model.set_weights(weights)
    return [inference, training, *trainable_gradients(model, x, y)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_routes_off_give_the_same_outputs_and_gradients(family):
    """Inference and training outputs, and every weight's gradient (training=True; these
    models have no dropout), with the routes on and off."""
    keras.utils.set_random_seed(0)
    model = small(family)
    lc.randomize_weights(model, seed=1)
    weights = model.get_weights()
    x = lc.random_array((4, 16, 16, 3), seed=2, scale=60.0) + 127.0
    y = np.arange(4) % 10
    fast = _outputs_and_gradients(model, weights, x, y)
    with config.fast_routes(False):
        public = _outputs_and_gradients(model, weights, x, y)
    assert len(fast) == 2 + len(model.trainable_weights)
    for index, (got, expected) in enumerate(zip(fast, public, strict=True)):
        assert got is not None and expected is not None, index
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"result {index}")


@pytest.mark.parametrize(
    "ours, theirs, kwargs, shape, call_kwargs",
    [
        (Dense, keras.layers.Dense, dict(units=8, activation="gelu"), (2, 5, 16), {}),
        (LayerNormalization, keras.layers.LayerNormalization, dict(epsilon=1e-6), (2, 5, 16), {}),
        (BatchNormalization, keras.layers.BatchNormalization, dict(), (2, 4, 4, 8), dict(training=False)),
        (Conv2D, keras.layers.Conv2D, dict(filters=8, kernel_size=4, strides=4), (2, 8, 8, 16), {}),
        (Conv2D, keras.layers.Conv2D, dict(filters=8, kernel_size=1), (2, 4, 4, 64), {}),
        (DepthwiseConv2D, keras.layers.DepthwiseConv2D, dict(kernel_size=3, padding="same"), (2, 8, 8, 16), {}),
    ],
    ids=["Dense", "LayerNormalization", "BatchNormalization", "Conv2D-patches", "Conv2D-pointwise", "DepthwiseConv2D"],
)
def test_routes_off_compute_as_keras_layers_bit_for_bit(ours, theirs, kwargs, shape, call_kwargs):
    """Off, a layer runs Keras's own computation: the same bits as `keras.layers`."""
    layers = [ours(**kwargs), theirs(**kwargs)]
    for layer in layers:
        layer.build(shape)
    lc.randomize_weights(layers[0], seed=3)
    layers[1].set_weights(layers[0].get_weights())
    x = lc.random_array(shape, seed=4)
    with config.fast_routes(False):
        got = lc.to_numpy(layers[0](x, **call_kwargs))
    np.testing.assert_array_equal(got, lc.to_numpy(layers[1](x, **call_kwargs)))


def test_routes_off_take_no_route():
    """Each layer's test for its route says no once the routes are off."""
    shape = (2, 8, 8, 16)
    x = keras.ops.zeros(shape)
    conv, depthwise, norm = Conv2D(8, 4, strides=4), DepthwiseConv2D(3, padding="same"), BatchNormalization()
    for layer in (conv, depthwise, norm):
        layer.build(shape)
    with config.fast_routes(False):
        assert not conv._torch_applies(x)
        assert not depthwise._shifted_applies(keras.KerasTensor(shape))
        assert not depthwise._torch_applies(x)
        assert not norm._fused_applies(x, False, None)


def test_one_named_route_off_leaves_the_others():
    backend = keras.backend.backend()
    route = {"jax": "dense_jax", "torch": "dense_torch", "tensorflow": "depthwise_tf_xla"}[backend]
    with config.fast_routes(False, routes=[route]):
        assert not config.fast_routes_enabled(route)
        assert config.fast_routes_enabled() and config.fast_routes_enabled("sublayer_calls_torch")
        if backend == "tensorflow":
            import tensorflow as tf

            layer = DepthwiseConv2D(3, padding="same")
            layer.build((2, 8, 8, 16))
            taken = []
            xla = tf.function(lambda t: taken.append(layer._shifted_applies(t)) or t, jit_compile=True)
            xla(tf.zeros((2, 8, 8, 16)))
            assert taken == [False]  # inside XLA, where the route would apply
        elif backend == "jax":
            import jax

            layer = Dense(8)
            layer.build((None, 16))
            jaxpr = jax.make_jaxpr(lambda t: layer(t))(lc.random_array((2, 5, 16), seed=5))
            products = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
            assert [tuple(e.invars[0].aval.shape) for e in products] == [(2, 5, 16)]  # Keras's 3-D product
        else:
            import torch

            calls = []
            linear = torch.nn.functional.linear
            torch.nn.functional.linear = lambda *args, **kwargs: calls.append(1) or linear(*args, **kwargs)
            try:
                Dense(8)(lc.random_array((2, 5, 16), seed=5))
            finally:
                torch.nn.functional.linear = linear
            assert not calls
    assert config.fast_routes_enabled(route)


def test_switch_api():
    assert config.fast_routes_enabled() and all(config.fast_routes_enabled(r) for r in config.FAST_ROUTES)
    config.set_fast_routes(False, routes=["dense_torch", "conv_torch"])
    assert {r for r in config.FAST_ROUTES if not config.fast_routes_enabled(r)} == {"dense_torch", "conv_torch"}
    with config.fast_routes(False):
        assert not config.fast_routes_enabled() and not config.fast_routes_enabled("dense_jax")
        with config.fast_routes(True, routes="dense_jax"):
            assert config.fast_routes_enabled() and config.fast_routes_enabled("dense_jax")
        assert not config.fast_routes_enabled("dense_jax")
    assert not config.fast_routes_enabled("dense_torch") and config.fast_routes_enabled("dense_jax")
    config.set_fast_routes(True)
    assert all(config.fast_routes_enabled(r) for r in config.FAST_ROUTES)


def test_switch_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"Received: enabled=0"):
        config.set_fast_routes(0)
    with pytest.raises(ValueError, match=r"Unknown fast route.*'dense_tpu'.*Received: routes=\['dense_tpu'\]"):
        config.set_fast_routes(False, routes=["dense_tpu"])
    with pytest.raises(TypeError, match=r"Received: routes=3"):
        config.set_fast_routes(False, routes=3)
    with pytest.raises(ValueError, match=r"Received: route='nope'"):
        config.fast_routes_enabled("nope")
    assert all(config.fast_routes_enabled(r) for r in config.FAST_ROUTES)  # nothing changed


@pytest.mark.parametrize("value, expected", [("0", False), ("off", False), ("1", True), (" Yes ", True)])
def test_environment_variable_values(value, expected):
    assert config._fast_routes_from_env({config.FAST_ROUTES_ENV: value}) is expected


def test_environment_variable_refuses_other_values():
    with pytest.raises(ValueError, match=r"Received: KERAS_VITMIX_FAST_ROUTES='maybe'"):
        config._fast_routes_from_env({config.FAST_ROUTES_ENV: "maybe"})


def test_environment_variable_is_read_at_import():
    code = "from keras_vitmix import config; print(config.fast_routes_enabled(), config.fast_routes_enabled('dense_jax'))"
    env = {**os.environ, config.FAST_ROUTES_ENV: "0", "KERAS_BACKEND": keras.backend.backend()}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["False", "False"]
