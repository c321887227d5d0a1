"""Where a computation runs, for the routes that are faster on one backend and device."""

import keras


def jax_on_cpu():
    """Whether Keras runs under JAX with the CPU as JAX's default device."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def torch_on_cpu(tensor):
    """Whether Keras runs under torch and `tensor` is a torch tensor on the CPU."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu"


def cpu_threads():
    """How many CPUs this process may run on (XLA:CPU sizes its thread pool by this)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


DIRECT_SUBLAYER_CALLS = True  # tests and benchmarks switch it off to compare


def call_sublayer(layer, *args, **kwargs):
    """`layer(*args, **kwargs)` from a parent layer's `call`; under torch, `layer.call`.

    Under torch every call runs in Python, op by op, and Keras's `Layer.__call__` costs
    about 0.1 ms there (converting inputs, binding the call signature, name scopes,
    looking up training flags and masks): 15 times per ViT-Ti block. A built sublayer
    called from its parent's `call` needs none of it: the parent's `__call__` has
    converted the inputs and entered the dtype policy's autocast scope, and the parent
    passes `training` itself. So under torch such a sublayer is called directly: ViT-Ti
    inference at batch 1 took 0.72x the time (benchmarks/torch_routes.py, RESULTS.md).
    The parent layers check their input shape (`input_spec`), so a wrong input is still
    a `ValueError`.

    Keras's `__call__` stays for an unbuilt, quantized or rematerialized sublayer, and
    for one that turns autocasting off for sublayers of its own. Under JAX and
    TensorFlow the step is traced once, so `__call__` costs nothing per step there.
    """
    if (
        DIRECT_SUBLAYER_CALLS
        and keras.backend.backend() == "torch"
        and layer.built
        and (layer.autocast or not layer._layers)  # autocast=False: Keras clears the scope for sublayers
        and layer.dtype_policy.quantization_mode is None
        and getattr(layer, "_remat_mode", None) is None
    ):
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)
