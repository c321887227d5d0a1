"""Where a computation runs, for the routes that are faster on one backend and device."""

import keras


def jax_on_cpu():
    """Whether Keras runs under JAX with the CPU as JAX's default device."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"
