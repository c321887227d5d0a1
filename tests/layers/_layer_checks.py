"""Checks shared by the layer tests (the files in this folder import it as `lc`).

Every layer gets the same four generic checks, each asserting values:
  * `LayerTestCase.check_layer`: Keras's own `run_layer_test` (config round-trip,
    build, symbolic and eager calls, a `fit` step) with exact weight counts and shapes;
  * `check_mixed_precision`: the layer built with a mixed policy returns the policy's
    compute dtype, finite values, and keeps float32 variables;
  * `check_saved_model_roundtrip`: a functional model holding the layer survives a
    `.keras` save/load with identical outputs, weights and layer config;
  * `check_config_matches_signature`: `get_config()` holds exactly the constructor's
    arguments (on top of the base Layer keys).
"""

import inspect

import keras
import numpy as np
import pytest
from keras.src import testing
from scipy.special import erf

BATCH, TOKENS, DIM = 2, 16, 32
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


class LayerTestCase(testing.TestCase):
    """Keras's layer-test base class with this project's `run_layer_test` defaults."""

    def check_layer(self, layer_cls, init_kwargs, run_training_check=True, **kwargs):
        # Keras skips its own mixed-precision check on torch CPU, so the mixed
        # policies are covered by `check_mixed_precision` on every backend instead.
        self.run_layer_test(
            layer_cls,
            init_kwargs,
            run_training_check=run_training_check,
            run_mixed_precision_check=False,
            **kwargs,
        )


def random_array(shape, seed=0, scale=1.0):
    """A float32 NumPy array of standard normals (deterministic in `seed`)."""
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype("float32")


def to_numpy(x):
    """Any backend tensor (float16/bfloat16 included) as a float32 NumPy array."""
    if isinstance(x, np.ndarray):
        return x.astype("float32")
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


def gelu(x):
    """Exact (erf) GELU, Keras's default `approximate=False`."""
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def layer_norm(x, eps=1e-6):
    """LayerNorm over the last axis at initialization (gamma 1, beta 0)."""
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def reference_mlp(layer, x, activation=gelu):
    """NumPy Dense -> activation -> Dense from an `MLP` layer's weights (float64)."""
    w1, b1 = (to_numpy(w).astype("float64") for w in layer.fc1.weights)
    w2, b2 = (to_numpy(w).astype("float64") for w in layer.fc2.weights)
    return activation(np.asarray(x, "float64") @ w1 + b1) @ w2 + b2


def count_params(weights):
    """Number of scalars in a list of weights."""
    return sum(int(np.prod(w.shape)) for w in weights)


def attention_param_count(dim, heads, head_dim, use_bias=True):
    """Trainable scalars of MultiHeadSelfAttention: qkv D -> 3*H*d, proj H*d -> D."""
    inner = heads * head_dim
    return dim * 3 * inner + dim * inner + (3 * inner + dim if use_bias else 0)


def constructor_params(layer_cls):
    """Names of `layer_cls.__init__`'s own parameters (no self / *args / **kwargs)."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    params = inspect.signature(layer_cls.__init__).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind not in variadic}


def check_config_matches_signature(layer):
    """`get_config()` = base Layer keys + exactly the constructor's arguments."""
    base_keys = set(keras.layers.Layer().get_config())
    config = layer.get_config()
    assert {"name", "trainable", "dtype"} <= set(config)
    assert set(config) - base_keys == constructor_params(type(layer))
    revived = type(layer).from_config(config)
    assert revived.get_config() == config


def check_mixed_precision(layer_cls, init_kwargs, input_shape, policy, call_kwargs=None):
    """Builds the layer with `dtype=policy`, calls it on float32 input, checks the output.

    Returns the outputs (a tuple when the layer returns several) as float32 NumPy arrays.
    """
    layer = layer_cls(**init_kwargs, dtype=policy)
    assert layer.dtype_policy.name == policy
    compute_dtype = keras.DTypePolicy(policy).compute_dtype
    assert compute_dtype in ("float16", "bfloat16")
    outputs = layer(random_array(input_shape), **(call_kwargs or {}))
    first = outputs[0] if isinstance(outputs, tuple) else outputs
    assert keras.backend.standardize_dtype(first.dtype) == compute_dtype
    arrays = tuple(to_numpy(o) for o in (outputs if isinstance(outputs, tuple) else (outputs,)))
    for array in arrays:
        assert np.isfinite(array).all(), f"non-finite output under {policy}"
    for weight in layer.weights:  # mixed precision keeps float32 variables
        assert keras.backend.standardize_dtype(weight.dtype) == "float32", weight.path
    return arrays


def randomize_weights(model, seed=0):
    """Assigns random values to every weight (variances stay positive), so a save/load
    round-trip cannot pass by re-initializing to the same defaults."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if "variance" in weight.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = 0.2 * rng.standard_normal(shape)
        weight.assign(value.astype("float32"))


def check_saved_model_roundtrip(layer, input_shape, tmp_path, call_kwargs=None):
    """Saves a functional model around `layer` (input `(batch,) + input_shape[1:]`) to
    `tmp_path / "m.keras"`, reloads it and compares outputs, weights and config."""
    inputs = keras.Input(shape=tuple(input_shape[1:]))
    model = keras.Model(inputs, layer(inputs, **(call_kwargs or {})))
    randomize_weights(model)
    x = random_array(input_shape, seed=1)
    expected = to_numpy(model(x, training=False))

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    np.testing.assert_allclose(to_numpy(loaded(x, training=False)), expected, atol=1e-6)
    reloaded = loaded.get_layer(layer.name)
    assert type(reloaded) is type(layer)
    assert reloaded.get_config() == layer.get_config()
    assert len(reloaded.weights) == len(layer.weights)
    for original, restored in zip(layer.weights, reloaded.weights):
        np.testing.assert_array_equal(to_numpy(restored), to_numpy(original))
    return loaded


def check_bad_argument(layer_cls, kwargs, name, value, errors=(ValueError, TypeError)):
    """Constructing with `name=value` raises and the message quotes the name and value."""
    with pytest.raises(errors) as info:
        layer_cls(**{**kwargs, name: value})
    message = str(info.value)
    assert name in message, message
    assert str(value) in message, message


def check_random_only_in_training(layer, shape):
    """Inference (training None or False) is deterministic; training=True changes the output."""
    x = random_array(shape)
    inference = to_numpy(layer(x))
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), inference)
    assert not np.allclose(to_numpy(layer(x, training=True)), inference, atol=1e-4)
