"""The XLA options our models' Keras steps compile with under JAX on the CPU."""

import warnings

import keras
import numpy as np
import pytest

from keras_vitmix.applications import _jax_compile
from keras_vitmix.applications._common import Application

from tests.small_models import small

JAX = keras.backend.backend() == "jax"
BOGUS = {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"}


def batch(n=8):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (n, 16, 16, 3)).astype("float32"), np.arange(n) % 10


def compiled_model(**overrides):
    keras.utils.set_random_seed(0)
    model = small("ViT", **overrides)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture
def jit_calls(monkeypatch):
    """Records the keyword arguments of every `jit` Keras's JAX trainer makes."""
    from keras.src.backend.jax import trainer

    calls, original = [], trainer.jit

    def recording_jit(fn, **kwargs):
        calls.append(kwargs)
        return original(fn, **kwargs)

    monkeypatch.setattr(trainer, "jit", recording_jit)
    yield calls
    assert trainer.jit is recording_jit  # restored after each make_*_function


@pytest.mark.skipif(not JAX, reason="the options are for Keras's JAX trainer")
def test_every_step_compiles_with_the_cpu_options(jit_calls):
    import jax

    model = compiled_model()
    x, y = batch()
    model.train_on_batch(x, y)
    model.test_on_batch(x, y)
    model.predict_on_batch(x)
    expected = _jax_compile.JAX_CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    assert [call.get("compiler_options") for call in jit_calls] == [expected] * 3


@pytest.mark.skipif(not JAX, reason="the options are for Keras's JAX trainer")
def test_empty_options_restore_xla_defaults(jit_calls):
    model = compiled_model()
    model.jax_cpu_compiler_options = {}
    model.predict_on_batch(batch()[0])
    assert [call.get("compiler_options") for call in jit_calls] == [None]
    assert Application.jax_cpu_compiler_options == _jax_compile.JAX_CPU_COMPILER_OPTIONS


@pytest.mark.skipif(not JAX, reason="the options are for Keras's JAX trainer")
def test_the_options_change_nothing_but_speed():
    x, y = batch()
    results = {}
    for name, options in (("defaults", {}), ("ours", _jax_compile.JAX_CPU_COMPILER_OPTIONS)):
        model = compiled_model(dropout_rate=0.0)
        model.jax_cpu_compiler_options = options
        probabilities = model.predict_on_batch(x)
        loss = model.train_on_batch(x, y)
        results[name] = probabilities, loss, model.predict_on_batch(x)
    for ours, defaults in zip(results["ours"], results["defaults"]):
        np.testing.assert_allclose(ours, defaults, rtol=1e-4, atol=1e-5)
    # The step learned something: the predictions moved after one SGD step.
    assert np.abs(results["ours"][2] - results["ours"][0]).max() > 1e-4


@pytest.mark.skipif(not JAX, reason="the options are for Keras's JAX trainer")
def test_options_xla_rejects_warn_and_compile_with_defaults(jit_calls):
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("the options apply on the CPU only")
    model = compiled_model()
    model.jax_cpu_compiler_options = BOGUS
    x = batch()[0]
    with pytest.warns(UserWarning, match="XLA rejected the compiler options .*NOT_A_FUSION_TYPE"):
        probabilities = model.predict_on_batch(x)
    assert [call.get("compiler_options") for call in jit_calls] == [None]
    np.testing.assert_allclose(probabilities, keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(JAX, reason="other backends ignore the options")
def test_other_backends_ignore_the_options():
    model = compiled_model(dropout_rate=0.0)
    model.jax_cpu_compiler_options = BOGUS  # rejected, with a warning, under JAX
    x, y = batch()
    direct = keras.ops.convert_to_numpy(model(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probabilities = model.predict_on_batch(x)
        model.train_on_batch(x, y)
    assert not [w for w in caught if "XLA rejected" in str(w.message)]
    np.testing.assert_allclose(probabilities, direct, rtol=1e-5, atol=1e-6)
    assert np.abs(model.predict_on_batch(x) - probabilities).max() > 1e-4
