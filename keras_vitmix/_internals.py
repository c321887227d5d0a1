"""The one module of keras_vitmix that touches private Keras or TensorFlow API.

Everything here exists because a fast route or a convenience needs a symbol that Keras
or TensorFlow do not make public. Each function has a fallback to the public path that
gives the same numbers, taken when the symbol is missing (an older or newer Keras) or
when its fast route is off (`keras_vitmix.config`). tests/test_internals_layers.py,
tests/test_internals_graph.py and tests/test_export_internals.py simulate the absence of
each symbol and check that the fallback gives the same result. No other module of the
package names a `keras.src` import or an underscored attribute of a Keras object.
"""

import functools
import importlib

import keras

from keras_vitmix import config as _config


# --- augmentation ---

_EQUALIZATION_HISTOGRAM = "_custom_histogram_fixed_width"  # a private method of Equalization


def use_bincount_histograms(layer):
    """Makes the `keras.layers.Equalization` of `layer` (itself, or the `equalization`
    of a `keras.layers.RandAugment`) count each histogram with one `tf.math.bincount`
    when it runs inside tf.data; returns whether it did.

    Keras chooses the histogram's form from the global backend: under JAX a loop over
    the 256 bins, though inside tf.data the layer computes with TensorFlow, where the
    loop makes a RandAugment pipeline several times slower to build and to start
    (docs/performance.md). The override replaces Keras's private method
    `Equalization._custom_histogram_fixed_width` on this one layer. Where that method is
    missing, or `keras_vitmix.config.fast_routes_enabled()` is false, the layer keeps
    Keras's own counting: the same counts, slower under JAX.
    """
    return _replace_histogram(layer, _bincount_histogram)


def use_segment_sum_histograms(layer):
    """Makes the `keras.layers.Equalization` of `layer` (itself, or a RandAugment's)
    count each histogram with one `keras.ops.segment_sum` when it runs in a compiled
    training step (the device pipeline); returns whether it did.

    Under JAX, Keras counts with a loop over the 256 bins, each comparing every pixel:
    XLA kept all 256 comparisons alive, 1,534 MiB of temporary memory for one batch of
    512 CIFAR images (2,256 MiB for the whole "medium" policy, against 19 MiB for
    "light"; docs/performance.md). One segment sum counts in a single pass on every
    backend. The same private method as `use_bincount_histograms` is replaced, with the
    same fallback.
    """
    return _replace_histogram(layer, _segment_sum_histogram)


def _replace_histogram(layer, counter):
    if not isinstance(layer, keras.layers.Equalization):
        layer = getattr(layer, "equalization", None)
    if not isinstance(layer, keras.layers.Equalization):
        return False
    if not _config.fast_routes_enabled() or not hasattr(type(layer), _EQUALIZATION_HISTOGRAM):
        return False
    setattr(layer, _EQUALIZATION_HISTOGRAM, counter)
    return True


def _segment_sum_histogram(values, value_range, nbins):
    """Keras's fixed-width histogram, counted by `keras.ops.segment_sum`."""
    ops = keras.ops
    low, high = (float(v) for v in value_range)
    scaled = (ops.cast(values, "float32") - low) * (nbins - 1) / (high - low)
    indices = ops.reshape(ops.clip(ops.cast(scaled, "int32"), 0, nbins - 1), (-1,))
    ones = ops.ones_like(indices, dtype="float32")
    return ops.cast(ops.segment_sum(ones, indices, num_segments=nbins), "int32")


def _bincount_histogram(values, value_range, nbins):
    """Keras's fixed-width histogram (the integer part of the value scaled to
    [0, nbins - 1]), counted by `tf.math.bincount`."""
    import tensorflow as tf

    low, high = (tf.cast(v, "float32") for v in value_range)
    scaled = (tf.cast(values, "float32") - low) * (nbins - 1) / (high - low)
    indices = tf.clip_by_value(tf.cast(scaled, "int32"), 0, nbins - 1)
    return tf.math.bincount(tf.reshape(indices, [-1]), minlength=nbins, maxlength=nbins, dtype="int32")


# --- layers and applications ---
#
# Under torch every call runs in Python, op by op, and Keras's per-call work (converting
# inputs, binding the call signature, name and autocast scopes) costs as much as the
# small matrix products of a ViT-Ti. The layers' torch routes skip the parts of it that
# change nothing for a built layer called from its parent's `call`. Keras makes none of
# the pieces needed public; each function falls back to the public path (`layer(...)`,
# `keras.Model.call`) when one is missing, and when its route is switched off in
# `keras_vitmix.config`; tests/test_internals_layers.py makes each symbol missing in
# turn.
#
# TensorFlow: whether a function is being compiled by XLA has no public spelling either.

try:  # AutocastScope, get_autocast_scope, get_keras_mask, is_tensor
    from keras.src import backend as _keras_backend
except ImportError:
    _keras_backend = None

_MISSING = object()
# The private attributes read below, by name, so that a test can make each one missing.
_SUBLAYERS = "_layers"  # a layer's tracked sublayers
_REMAT_MODE = "_remat_mode"  # a layer's rematerialization setting
_STANDARDIZE_INPUTS = "_standardize_inputs"  # a functional model's input flattening
_RUN_THROUGH_GRAPH = "_run_through_graph"  # a functional model's graph walk
_CALL_HAS_CONTEXT_ARG = "_call_has_context_arg"  # {"training": whether `call` takes it}
_CALL_CONTEXT_ARGS = "_call_context_args"  # the context arguments `call` takes


def call_sublayer(layer, *args, **kwargs):
    """`layer(*args, **kwargs)` from a parent layer's `call`; under torch, `layer.call`
    (route "sublayer_calls_torch").

    Keras's `Layer.__call__` converts inputs, binds the call signature, enters name
    scopes and looks up training flags and masks: 15 times per ViT-Ti block. A built
    sublayer called from its parent's `call` needs none of it: the parent's `__call__`
    has converted the inputs and entered the dtype policy's autocast scope, and the
    parent passes `training` itself. The parent layers check their input shape
    (`input_spec`), so a wrong input is still a `ValueError`.

    Keras's `__call__` stays for an unbuilt, quantized or rematerialized sublayer, for
    one that turns autocasting off for sublayers of its own, and where this Keras lacks
    `layer._layers` or `layer._remat_mode`. Under JAX and TensorFlow the step is traced
    once, so `__call__` costs nothing per step there.
    """
    if _direct_call_allowed(layer):
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


def _direct_call_allowed(layer):
    if not (
        keras.backend.backend() == "torch"
        and _config.fast_routes_enabled("sublayer_calls_torch")
        and layer.built
        and layer.dtype_policy.quantization_mode is None
    ):
        return False
    sublayers = getattr(layer, _SUBLAYERS, None)
    remat = getattr(layer, _REMAT_MODE, _MISSING)
    if sublayers is None or (remat is _MISSING and hasattr(keras, "RematScope")):
        return False  # cannot tell whether Keras's __call__ would do more
    # autocast=False: Keras's __call__ clears the autocast scope for the sublayers.
    return (layer.autocast or not sublayers) and remat in (None, _MISSING)


def graph_calls_available(model):
    """Whether `call_graph(model, ...)` can run here: under torch (route
    "sublayer_calls_torch"), with the Keras internals it needs present."""
    return (
        keras.backend.backend() == "torch"
        and _config.fast_routes_enabled("sublayer_calls_torch")
        and callable(getattr(model, _STANDARDIZE_INPUTS, None))
        and callable(getattr(model, _RUN_THROUGH_GRAPH, None))
        and isinstance(getattr(model, _CALL_HAS_CONTEXT_ARG, None), dict)
        and getattr(model, _CALL_CONTEXT_ARGS, None) is not None
        and all(
            callable(getattr(_keras_backend, name, None))
            for name in ("AutocastScope", "get_autocast_scope", "get_keras_mask", "is_tensor")
        )
    )


def call_graph(model, inputs, training):
    """A functional `model`'s `call` on `inputs`, each layer of its graph run by
    `call_graph_node` (torch). Check `graph_calls_available(model)` first; otherwise
    `keras.Model.call` is the public path.
    """
    flat = getattr(model, _STANDARDIZE_INPUTS)(inputs)
    outputs = getattr(model, _RUN_THROUGH_GRAPH)(
        flat, operation_fn=lambda layer: functools.partial(call_graph_node, layer, training)
    )
    return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def call_graph_node(layer, training, /, *args, **kwargs):
    """One node of a functional model's graph, run from the model's `call` (torch):
    `layer.call` with what Keras's `Layer.__call__` would have done for it.

    The model's own `__call__` has converted the images and resolved `training`. For a
    built layer with one tensor argument, no mask and no activity regularizer, this does
    the rest of `__call__`'s work itself: casts a floating input to the layer's input
    dtype, enters the autocast scope Keras would enter (mixed precision), and passes
    `training` where the layer's `call` takes it. Any other node goes through
    `__call__`, with `training` as Keras's functional models pass it. Only called where
    `graph_calls_available` holds.
    """
    backend = _keras_backend
    if kwargs.get("mask", True) is None:
        del kwargs["mask"]  # recorded by Keras for a layer that takes a mask
    if not (
        isinstance(layer, keras.layers.Layer)
        and len(args) == 1
        and set(kwargs) <= {"training"}
        and _direct_call_allowed(layer)
        and layer.activity_regularizer is None
        and type(layer).compute_mask is keras.layers.Layer.compute_mask
        and backend.is_tensor(args[0])
        and backend.get_keras_mask(args[0]) is None
    ):
        if training is not None and "training" in getattr(layer, _CALL_CONTEXT_ARGS, ()):
            kwargs["training"] = training  # as Keras's functional `call` passes it
        return layer(*args, **kwargs)
    if training is not None and getattr(layer, _CALL_HAS_CONTEXT_ARG).get("training", False):
        kwargs["training"] = training
    (x,) = args
    if layer.autocast and keras.backend.standardize_dtype(x.dtype) != layer.input_dtype:
        x = layer.dtype_policy.convert_input(x, layer.autocast, layer.input_dtype)
    scope = backend.get_autocast_scope()
    compute = layer.compute_dtype
    if scope is not None:
        if not layer.autocast or not keras.backend.is_float_dtype(compute):
            scope = backend.AutocastScope(None)
        elif scope.dtype != compute:
            scope = backend.AutocastScope(compute)
        else:
            scope = None
    elif compute != layer.variable_dtype:
        scope = backend.AutocastScope(compute)
    if scope is None:
        return layer.call(x, **kwargs)
    with scope:
        return layer.call(x, **kwargs)


def in_tf_xla_function():
    """True while TensorFlow traces a function it compiles with XLA (`jit_compile=True`).

    TensorFlow has no public test for it; `control_flow_util.GraphOrParentsInXlaContext`
    is what its own ops use. Where that is missing, False: the caller then takes the
    computation it uses outside XLA, which gives the same numbers.
    """
    module, name = _TF_XLA_CONTEXT
    try:
        in_xla = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    if in_xla is None:
        return False
    import tensorflow as tf

    return bool(in_xla(tf.compat.v1.get_default_graph()))


_TF_XLA_CONTEXT = ("tensorflow.python.ops.control_flow_util", "GraphOrParentsInXlaContext")


# --- export ---
#
# An export serves in float32, so it needs every layer of a model, nested ones included,
# to see whether any computes in a mixed precision; Keras lists a layer's sublayers only
# privately (`Layer._flatten_layers`). tf2onnx 1.17 predates NumPy 2, and Keras carries
# the fix for its own ONNX export in a private module. TensorFlow freezes a function's
# variables into constants (what ONNX needs) only in `tensorflow.python`.

_FLATTEN_LAYERS = "_flatten_layers"  # of a layer: itself and every nested sublayer
_TF2ONNX_PATCH_MODULE = "keras.src.export.tf2onnx_lib"
_CONVERT_TO_CONSTANTS_MODULE = "tensorflow.python.framework.convert_to_constants"


def flatten_layers(layer):
    """`layer` and every layer nested in it, each once, parents before their sublayers.

    Keras's `Layer._flatten_layers(include_self=True, recursive=True)` walks the
    sublayers Keras tracks. Without it (another Keras), the public path: a model's
    `layers`, and for any other layer the layers held by its attributes, directly or in
    lists, tuples and dicts (where Keras's tracking finds them too).
    """
    flatten = getattr(layer, _FLATTEN_LAYERS, None)
    if callable(flatten):
        try:
            return list(flatten(include_self=True, recursive=True))
        except TypeError:  # another signature: the public walk
            pass
    return _walk_layers(layer)


def _walk_layers(root):
    found, seen, stack = [], set(), [root]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        children = layer.layers if isinstance(layer, keras.Model) else _held_layers(vars(layer).values())
        stack.extend(reversed([child for child in children if id(child) not in seen]))
    return found


def _held_layers(values):
    layers, pending, opened = [], list(values), set()
    while pending:
        value = pending.pop(0)
        if isinstance(value, keras.layers.Layer):
            layers.append(value)
        elif isinstance(value, (list, tuple, dict)) and id(value) not in opened:
            opened.add(id(value))
            pending.extend(value.values() if isinstance(value, dict) else value)
    return layers


def patch_tf2onnx():
    """Applies Keras's fix of tf2onnx for NumPy 2 before a conversion; returns whether it
    did.

    tf2onnx 1.17 predates NumPy 2; Keras's own ONNX export patches its constant folding
    and its external-data attribute with `keras.src.export.tf2onnx_lib.patch_tf2onnx`
    (once per process). Where that module is missing (another Keras), nothing is patched:
    tf2onnx converts as it is, and its own errors are reported.
    """
    try:
        module = importlib.import_module(_TF2ONNX_PATCH_MODULE)
    except ImportError:
        return False
    patch = getattr(module, "patch_tf2onnx", None)
    if not callable(patch):
        return False
    patch()
    return True


def frozen_graph(concrete_function):
    """The graph of a one-input, one-output `tf.function`, its variables and captured
    tensors made constants: (GraphDef, input tensor name, output tensor name).

    TensorFlow's `convert_variables_to_constants_v2` (in `tensorflow.python`, as
    tf2onnx and Keras's ONNX export use it). Where that module is missing, tf2onnx's
    `tf_loader.from_function`, which freezes with it where it can and then prunes the
    graph with TensorFlow's graph optimizer: the same computation, for the same names.
    """
    try:
        convert = importlib.import_module(_CONVERT_TO_CONSTANTS_MODULE).convert_variables_to_constants_v2
    except (ImportError, AttributeError):
        convert = None
    if convert is not None:
        frozen = convert(concrete_function, lower_control_flow=False, aggressive_inlining=True)
        return frozen.graph.as_graph_def(), frozen.inputs[0].name, frozen.outputs[0].name
    from tf2onnx import tf_loader

    names = concrete_function.inputs[0].name, concrete_function.outputs[0].name
    return tf_loader.from_function(concrete_function, [names[0]], [names[1]]), names[0], names[1]
