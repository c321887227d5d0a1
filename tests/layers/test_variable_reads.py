"""`_internals.torch_variable_value` (route "variable_reads_torch"): under torch, the same tensor as Keras's
`Variable.value` in every scope a layer can be called in (autocast to a float dtype, an
autocast scope without a dtype, a stateless scope, no scope), for floating, integer and
non-autocasting variables. The layers' torch routes read their weights through it."""

import keras
import numpy as np
import pytest
from keras.src import backend as keras_backend
from keras.src.backend.common.stateless_scope import StatelessScope

from keras_vitmix import _internals

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="a torch route's variable reads")


def _variables():
    layer = keras.layers.LayerNormalization()  # gamma and beta do not autocast
    layer.build((2, 8))
    dense = keras.layers.Dense(4)
    dense.build((2, 8))
    counter = keras.Variable(np.arange(3, dtype="int32"), dtype="int32", trainable=False)
    return {"kernel": dense.kernel, "bias": dense.bias, "gamma": layer.gamma, "counter": counter}


def _same(ours, theirs):
    assert ours.dtype == theirs.dtype and tuple(ours.shape) == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.detach().float().numpy(), theirs.detach().float().numpy())


@pytest.mark.parametrize("scope_dtype", ["bfloat16", "float16", "float32", None, "no scope"])
def test_reads_match_keras_in_each_autocast_scope(scope_dtype):
    variables = _variables()
    for name, variable in variables.items():
        if scope_dtype == "no scope":
            ours, theirs = _internals.torch_variable_value(variable), variable.value
        else:
            with keras_backend.AutocastScope(scope_dtype):
                ours, theirs = _internals.torch_variable_value(variable), variable.value
        _same(ours, theirs)
        cast = scope_dtype in ("bfloat16", "float16") and name in ("kernel", "bias")
        assert str(ours.dtype) == (f"torch.{scope_dtype}" if cast else f"torch.{variable.dtype}"), name
        if not cast:
            assert ours is variable._value  # the stored tensor itself: gradients reach it


def test_stateless_scope_and_meta_device_are_keras_reads():
    import torch

    kernel = _variables()["kernel"]
    replacement = torch.full(tuple(kernel.shape), 3.0)
    with StatelessScope(state_mapping=[(kernel, replacement)]):
        with keras_backend.AutocastScope("bfloat16"):
            ours = _internals.torch_variable_value(kernel)
    assert ours.dtype == torch.bfloat16 and float(ours[0, 0]) == 3.0  # the scope's value, autocast
    with keras.device("meta"):
        assert _internals.torch_variable_value(kernel).device.type == "meta"  # Keras's stand-in


def test_mixed_precision_dense_reads_its_kernel_once_cast():
    """The Dense route's read, in the scope Keras's `__call__` enters under mixed_bfloat16,
    gives the product Keras's own Dense computes, to the bit."""
    from keras_vitmix.layers import Dense

    ours, theirs = Dense(6, dtype="mixed_bfloat16"), keras.layers.Dense(6, dtype="mixed_bfloat16")
    for layer in (ours, theirs):
        layer.build((3, 8))
    theirs.set_weights([w + 0.5 for w in ours.get_weights()])
    ours.set_weights(theirs.get_weights())
    x = keras.ops.cast(np.random.default_rng(0).standard_normal((3, 8)), "bfloat16")
    got, expected = ours(x), theirs(x)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got.float().detach().numpy(), expected.float().detach().numpy(), rtol=1e-2, atol=1e-2)
