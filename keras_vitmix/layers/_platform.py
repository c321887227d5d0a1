"""Where a computation runs, for the routes that are faster on one backend and device."""

import keras
from keras.src.backend.common import global_state as _global_state


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
    if _direct_call_allowed(layer):
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


def direct_graph_calls():
    """Whether a functional model's `call` should run its graph with `call_graph_node`."""
    return DIRECT_SUBLAYER_CALLS and keras.backend.backend() == "torch"


def _direct_call_allowed(layer):
    return (
        DIRECT_SUBLAYER_CALLS
        and keras.backend.backend() == "torch"
        and layer.built
        and (layer.autocast or not layer._layers)  # autocast=False: Keras clears the scope for sublayers
        and layer.dtype_policy.quantization_mode is None
        and getattr(layer, "_remat_mode", None) is None
    )


def call_graph_node(layer, training, /, *args, **kwargs):
    """One node of a functional model's graph, run from the model's `call`: under
    torch, `layer.call` with what Keras's `Layer.__call__` would have done for it.

    The model's own `__call__` has converted the images and resolved `training`. A
    ViT-Ti has 20 layers at its top level, and their `__call__`s took about 6 of its
    49 ms at batch 1 on one CPU; with `call_sublayer`, inference took 0.64x the time of
    Keras's route (benchmarks/torch_routes.py, RESULTS.md). For a built layer with one tensor
    argument, no mask and no activity regularizer, this does the rest of `__call__`'s
    work itself: casts a floating input to the layer's input dtype, enters the autocast
    scope Keras would enter (mixed precision), and passes `training` where the layer's
    `call` takes it. Any other node goes through `__call__`, with `training` as Keras's
    functional models pass it.
    """
    from keras.src import backend as keras_backend

    if kwargs.get("mask", True) is None:
        del kwargs["mask"]  # recorded by Keras for a layer that takes a mask
    if not (
        isinstance(layer, keras.layers.Layer)
        and len(args) == 1
        and set(kwargs) <= {"training"}
        and _direct_call_allowed(layer)
        and layer.activity_regularizer is None
        and type(layer).compute_mask is keras.layers.Layer.compute_mask
        and keras_backend.is_tensor(args[0])
        and keras_backend.get_keras_mask(args[0]) is None
    ):
        if training is not None and "training" in getattr(layer, "_call_context_args", ()):
            kwargs["training"] = training  # as Keras's functional `call` passes it
        return layer(*args, **kwargs)
    if training is not None and layer._call_has_context_arg.get("training", False):
        kwargs["training"] = training
    (x,) = args
    if layer.autocast and keras_backend.standardize_dtype(x.dtype) != layer.input_dtype:
        x = layer.dtype_policy.convert_input(x, layer.autocast, layer.input_dtype)
    scope = keras_backend.get_autocast_scope()
    compute = layer.compute_dtype
    if scope is not None:
        if not layer.autocast or not keras_backend.is_float_dtype(compute):
            scope = keras_backend.AutocastScope(None)
        elif scope.dtype != compute:
            scope = keras_backend.AutocastScope(compute)
        else:
            scope = None
    elif compute != layer.variable_dtype:
        scope = keras_backend.AutocastScope(compute)
    if scope is None:
        return layer.call(x, **kwargs)
    with scope:
        return layer.call(x, **kwargs)


def torch_variable_value(variable):
    """`variable.value` under torch, read without Keras's per-read work where that work
    changes nothing.

    Keras's torch `Variable.value` looks up the stateless scope, the autocast scope and
    the current device (as a string, to build a stand-in on the "meta" device), and casts
    through `keras.ops.cast`'s dtype checks: 5 us per read inside a bfloat16 autocast
    scope on one CPU, and a ViT-Ti forward pass reads 150 variables. Here, for an
    initialized variable outside a stateless scope and off the "meta" device, the
    autocast is done directly: a floating variable that autocasts, inside a scope with a
    dtype, is cast to that dtype with `Tensor.to` (what Keras's cast ends in); otherwise
    the stored tensor is returned, as Keras would. Anything else is Keras's own `value`.
    """
    value = variable._value
    state = _global_state.GLOBAL_STATE_TRACKER
    device = getattr(state, "torch_device", None)
    if value is None or getattr(state, "stateless_scope", None) is not None or (
        device is not None and str(device) == "meta"
    ):
        return variable.value
    scope = getattr(state, "autocast_scope", None)
    if scope is not None and scope.dtype is not None and variable._autocast and value.is_floating_point():
        dtype = _TORCH_DTYPES.get(scope.dtype)
        if dtype is None:
            return variable.value
        if value.dtype != dtype:
            value = value.to(dtype)
    return value


def _torch_dtypes():
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


_TORCH_DTYPES = _torch_dtypes() if keras.backend.backend() == "torch" else {}
