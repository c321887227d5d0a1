"""Where a computation runs, for the routes that are faster on one backend and device."""

import functools

import keras


def jax_on_cpu():
    """Whether Keras runs under JAX with the CPU as JAX's default device."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def torch_tensor(tensor):
    """Whether Keras runs under torch and `tensor` is a torch tensor with data (on a CPU
    or an accelerator, not on the "meta" device of Keras's shape inference)."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return isinstance(tensor, torch.Tensor) and tensor.device.type != "meta"


def cpu_threads():
    """How many CPUs this process may run on (XLA:CPU sizes its thread pool by this)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def jax_on_gpu():
    """Whether Keras runs under JAX with a GPU as JAX's default device."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "gpu"


@functools.cache
def gpu_compute_capability():
    """The CUDA compute capability of JAX's first GPU as (major, minor), or None (no
    CUDA GPU, or a JAX that does not say)."""
    import jax

    try:
        device = jax.local_devices(backend="gpu")[0]
    except (RuntimeError, IndexError):
        return None
    try:
        return tuple(int(part) for part in str(device.compute_capability).split(".")[:2])
    except (AttributeError, ValueError):
        return None
