"""The one module of keras_vitmix that touches private Keras or TensorFlow API.

Everything here exists because a fast route or a convenience needs a symbol that Keras
or TensorFlow do not make public. Each function has a fallback to the public path that
gives the same numbers, taken when the symbol is missing (an older or newer Keras) or
when `keras_vitmix.config.fast_routes_enabled()` is false; tests/test_internals.py
simulates the absence of each symbol and checks the fallback. No other module of the
package names a `keras.src` import or an underscored attribute of a Keras object.
"""


# --- graphs and augmentation ---
#
# Keras makes public a layer's first call (`layer.input`, `layer.output`) and a
# functional model's layers, inputs and outputs (`keras.Function`), but not a layer's
# later calls nor the constant arguments of a call. Attention maps need the call of each
# block inside the inspected model, with its mask.

_NODES_BY_DEPTH = "_nodes_by_depth"  # of a functional model: its calls of layers
_INBOUND_NODES = "_inbound_nodes"  # of a layer: every call of it, in any model
_NODE_ARGUMENTS = "arguments"  # of a node: the call's args and kwargs


def first_call_arguments(graph, layer):
    """The arguments of the first call of `layer` inside the functional model `graph`.

    Keras's graph nodes (`graph._nodes_by_depth`, `layer._inbound_nodes`) keep every
    call of a layer with all its arguments, so a layer shared with another model is
    found at its call in `graph`, and a constant argument (a NumPy attention mask) is
    kept. Without them (another Keras), the public `layer.input` gives the tensors of
    the layer's first call anywhere: keyword tensors come back as positional arguments
    after the others, constant arguments are lost, and a layer whose first call lies
    outside `graph` (a shared layer, with several calls) raises a ValueError.

    Args:
        graph: a functional `keras.Model` (an instance of `keras.Function`).
        layer: one of `graph.layers`.

    Returns:
        (args, kwargs): the call's positional arguments as a tuple, its keyword
        arguments as a dict.
    """
    calls = _graph_node_calls(graph, layer)
    if calls is None:
        return _first_call_from_layer_input(graph, layer)
    if not calls:
        raise ValueError(f"Layer '{layer.name}' is not called in model '{graph.name}'.")
    return calls[0]


def _graph_node_calls(graph, layer):
    """[(args, kwargs)] of each call of `layer` in `graph`, in call order; None when
    this Keras lacks the node attributes."""
    nodes_by_depth = getattr(graph, _NODES_BY_DEPTH, None)
    inbound_nodes = getattr(layer, _INBOUND_NODES, None)
    if nodes_by_depth is None or inbound_nodes is None:
        return None
    in_graph = {id(node) for nodes in nodes_by_depth.values() for node in nodes}
    calls = []
    for node in inbound_nodes:
        arguments = getattr(node, _NODE_ARGUMENTS, None)
        if arguments is None:
            return None
        if id(node) in in_graph:
            calls.append((tuple(arguments.args), dict(arguments.kwargs)))
    return calls


def _first_call_from_layer_input(graph, layer):
    import keras

    tensors = layer.input  # the first call's input tensors, flattened
    tensors = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
    try:
        keras.Function(graph.inputs, tensors)  # raises when they are not computed in `graph`
    except ValueError as error:
        raise ValueError(
            f"Layer '{layer.name}' is called more than once, first outside model '{graph.name}' "
            "(a layer shared between models). This Keras shows only a layer's first call publicly "
            "(`layer.input`), so its call in the model cannot be found. Inspect the model that "
            "called it first, or build the model from its own layers."
        ) from error
    return tuple(tensors), {}


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
    import keras

    from keras_vitmix import config

    if not isinstance(layer, keras.layers.Equalization):
        layer = getattr(layer, "equalization", None)
    if not isinstance(layer, keras.layers.Equalization):
        return False
    if not config.fast_routes_enabled() or not hasattr(type(layer), _EQUALIZATION_HISTOGRAM):
        return False
    setattr(layer, _EQUALIZATION_HISTOGRAM, _bincount_histogram)
    return True


def _bincount_histogram(values, value_range, nbins):
    """Keras's fixed-width histogram (the integer part of the value scaled to
    [0, nbins - 1]), counted by `tf.math.bincount`."""
    import tensorflow as tf

    low, high = (tf.cast(v, "float32") for v in value_range)
    scaled = (tf.cast(values, "float32") - low) * (nbins - 1) / (high - low)
    indices = tf.clip_by_value(tf.cast(scaled, "int32"), 0, nbins - 1)
    return tf.math.bincount(tf.reshape(indices, [-1]), minlength=nbins, maxlength=nbins, dtype="int32")


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
    import keras

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
    import keras

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
    import importlib

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
    import importlib

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
