"""Where a computation runs, for the routes that are faster on one backend and device."""

import keras


def jax_on_cpu():
    """Whether Keras runs under JAX with the CPU as JAX's default device."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def cpu_threads():
    """How many CPUs this process may run on (XLA:CPU sizes its thread pool by this)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
