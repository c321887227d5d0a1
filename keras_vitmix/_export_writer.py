"""The TensorFlow side of `keras_vitmix.export`: writes a SavedModel or ONNX file.

Both formats come from one `tf.function`, `serve(images)`, that casts the images to
float32 and calls the model, and both keep every output of the model under the same
names (`output_names`) and its class names (`resolve_class_names`); with attention, the
model served is `with_attention(model)`. Writing runs where TensorFlow is the Keras
backend: in the exporting process under TensorFlow, and in
`keras_vitmix._export_worker`'s subprocess under JAX and torch; the checks also run in
a JAX or torch process, before a model is handed over. `keras_vitmix.export` and the
worker both import this module; it imports neither. TensorFlow and tf2onnx are imported
only when writing.
"""

import json
import logging
import os
import shutil
import tempfile

import keras

from keras_vitmix import _internals, _serving_attention, saving

ENDPOINT = "serve"
INPUT_NAME = "images"
OUTPUT_NAME = "output_0"  # what Keras names a SavedModel signature's only output
CLASS_NAMES = "class_names"  # the SavedModel's endpoint and the ONNX metadata key
CLASS_NAMES_FILE = "class_names.txt"  # the SavedModel's asset, one name a line
PROBABILITIES = "probabilities"  # the output that class names label, among several


def write(
    model,
    path,
    format="tf_saved_model",
    image_dtype="uint8",
    batch_size=None,
    opset=None,
    class_names=None,
    attention=False,
    origin=None,
):
    """Writes `model` (a `keras.Model` or a `.keras` path) to `path`, atomically.

    Arguments as `keras_vitmix.export.export`'s, already checked there; `attention`
    serves `with_attention(model)`; `path` is replaced if it exists. `origin`: where a
    `.keras` file that the export saved for TensorFlow came from (e.g. "model 'vit'
    from the torch backend"); a failure to load it then names that model rather than
    the temporary file. Must run under the TensorFlow backend.

    Returns:
        A dict: "outputs", the served output names; "class_names", the names written
        (None for none); "note", why the model's class names were not written, or None.
    """
    if not isinstance(model, keras.Model):
        try:
            model = saving.load_model(model, compile=False, argument="model_or_path")
        except ValueError as error:
            if origin is None:
                raise
            while (error.__cause__ or error.__context__) is not None:  # Keras wraps the
                error = error.__cause__ or error.__context__  # missing class in generic errors
            raise not_reloadable(origin, f"it does not load there: {short_error(error)}") from None
    check_model(model, image_dtype)
    if attention:
        model = with_attention(model)
    names = output_names(model)
    class_names, note = resolve_class_names(model, class_names)
    write_atomically(path, lambda tmp: _write(model, tmp, format, image_dtype, batch_size, opset, class_names))
    return {"outputs": names, "class_names": class_names, "note": note}


def with_attention(model):
    """`model` in float32 with its attention beside its outputs, as `export(...,
    attention=True)` serves it (`keras_vitmix._serving_attention.serving_model`): its
    own outputs keep their names, but a classifier's only output is served as
    "probabilities", the name that class names label among several outputs."""
    names = output_names(model)
    single = PROBABILITIES if class_count(model) is not None else OUTPUT_NAME
    return _serving_attention.serving_model(float32_model(model), names, single)


def not_reloadable(origin, reason):
    """The error for a model from JAX or torch that cannot reach TensorFlow."""
    return ValueError(
        f"The {origin} cannot be exported: TensorFlow writes every export, so the model is "
        f"saved as .keras and re-loaded under TensorFlow, and {reason}. Make its custom "
        "layers serializable (`get_config`, and `keras.saving.register_keras_serializable` "
        "in a module the TensorFlow process imports), or export under the TensorFlow backend."
    )


def short_error(error):
    """`error`'s type and first paragraph, on one line (Keras follows some with code)."""
    paragraph = str(error).strip().split("\n\n")[0]
    return f"{type(error).__name__}: {' '.join(paragraph.split())[:500]}"


def check_model(model, image_dtype):
    """Refuses a model that cannot be served images of `image_dtype`."""
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or None in shape[1:]:
        raise ValueError(
            "Only models with one image input of fixed size (batch, height, width, channels) "
            f"export with an image signature. Received: input shape {model.input_shape}"
        )
    from keras_vitmix.applications._common import Application

    config = model.get_config() if isinstance(model, Application) else {}
    if image_dtype == "uint8" and config.get("include_preprocessing") is False:
        raise ValueError(
            f"Model '{model.name}' was built with include_preprocessing=False and expects "
            "normalized float inputs, so uint8 pixels cannot be served to it. Received: "
            "image_dtype='uint8'; export with image_dtype='float32'."
        )


def output_names(model):
    """The names under which the export serves `model`'s outputs, in the model's order:
    ["output_0"] for one tensor (Keras's name for a SavedModel signature's only output),
    a dict's keys, or a list's `model.output_names` (the layers that produce them).

    Raises:
        ValueError: nested outputs, a name given twice, or an output named like the
            input ("images"); an export keeps every output or is refused.
    """
    return list(_named_outputs(model))


def _named_outputs(model):
    """{serving name: symbolic output} of `model`, checked as `output_names` says."""
    try:
        structure = model.output  # a functional model's own structure, dict keys kept
    except (AttributeError, ValueError):  # a subclassed model: traced once
        structure = model.compute_output_spec(keras.KerasTensor(model.input_shape))
    if isinstance(structure, dict):
        outputs = dict(structure)
    elif isinstance(structure, (list, tuple)):
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(structure):
            names = [f"output_{i}" for i in range(len(structure))]
        outputs = dict(zip(names, structure))
    else:
        outputs = {OUTPUT_NAME: structure}
    nested = [name for name, value in outputs.items() if keras.tree.is_nested(value)]
    if nested:
        raise ValueError(
            f"Model '{model.name}' cannot be exported with every output named: an export "
            f"serves a flat set of named tensors, and its outputs {nested} are nested. "
            f"Received: outputs {_describe(structure)}. Return a flat dict of tensors instead."
        )
    if isinstance(structure, (list, tuple)) and len(outputs) != len(structure):
        raise ValueError(
            f"Model '{model.name}' cannot be exported with every output named: its "
            f"{len(structure)} outputs come from layers named {model.output_names}, and an "
            "export would name two of them alike. Return a dict of tensors instead."
        )
    if any(not isinstance(name, str) or not name or name == INPUT_NAME for name in outputs):
        raise ValueError(
            f"Model '{model.name}' cannot be exported with every output named: an output's "
            f"name must be a non-empty str other than {INPUT_NAME!r}, the export's input. "
            f"Received: output names {list(outputs)}"
        )
    return outputs


def _describe(structure):
    return keras.tree.map_structure(lambda tensor: tuple(tensor.shape), structure)


def check_class_names(class_names):
    """`class_names` as a list of str; refuses what a `class_names.txt` (one name a
    line) could not hold."""
    if not isinstance(class_names, (list, tuple)):
        raise TypeError(
            f"`class_names` must be a list of str, one per class. Received: class_names={class_names!r}"
        )
    bad = [name for name in class_names if not isinstance(name, str)]
    if bad:
        raise TypeError(f"`class_names` must hold str only. Received: {bad[0]!r} of type {type(bad[0]).__name__}")
    bad = [name for name in class_names if not name or "\n" in name or "\r" in name]
    if bad:
        raise ValueError(f"A class name must be a non-empty line of text. Received: {bad[0]!r} in class_names")
    return list(class_names)


def class_count(model):
    """The number of classes of `model`'s class probabilities: its only output's last
    axis, or among several outputs the one named "probabilities"; None when it has no
    such (batch, classes) output (e.g. an application built with `include_top=False`)."""
    from keras_vitmix.applications._common import Application

    if isinstance(model, Application) and not model.get_config().get("include_top", True):
        return None
    outputs = _named_outputs(model)
    output = next(iter(outputs.values())) if len(outputs) == 1 else outputs.get(PROBABILITIES)
    return None if output is None or len(output.shape) != 2 else output.shape[-1]


def resolve_class_names(model, class_names):
    """The class names the export of `model` carries, and why it carries none.

    `class_names` (checked by `check_class_names`) wins; None takes the model's
    metadata's ("class_names" of `keras_vitmix.saving.model_metadata`). Returns
    (list of str or None, note or None): a headless model's metadata names are not
    exported, and the note says so.

    Raises:
        ValueError: names given for a model without class probabilities, or not one
            name per class (both numbers named).
    """
    explicit = class_names is not None
    if not explicit:
        class_names = saving.model_metadata(model).get(CLASS_NAMES)
        if not class_names:
            return None, None
    class_names = check_class_names(class_names)
    count = class_count(model)
    source = "Received: class_names" if explicit else "Its metadata holds class_names"
    if count is None:
        reason = (
            f"model '{model.name}' has no class probabilities output (one output of shape "
            f"(batch, classes), or one named {PROBABILITIES!r} among several)"
        )
        if explicit:
            raise ValueError(f"Class names label a model's classes, and {reason}. {source}={class_names!r}")
        return None, f"The {len(class_names)} class names of the model's metadata are not exported: {reason}."
    if len(class_names) != count:
        raise ValueError(
            f"Model '{model.name}' has {count} classes, and {len(class_names)} class names "
            f"were given for them. {source}={class_names!r}"
        )
    return class_names, None


def float32_model(model):
    """The model itself, or, if it computes in a mixed precision, a float32 rebuild of it."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in _internals.flatten_layers(model)):
        return model
    config = keras.saving.serialize_keras_object(model)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        rebuilt = keras.saving.deserialize_keras_object(_strip_dtype_policies(config))
    finally:
        keras.config.set_dtype_policy(previous)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _strip_dtype_policies(config):
    if isinstance(config, dict):
        return {
            key: _strip_dtype_policies(value)
            for key, value in config.items()
            if not (key == "dtype" and isinstance(value, dict) and value.get("class_name") == "DTypePolicy")
        }
    if isinstance(config, list):
        return [_strip_dtype_policies(value) for value in config]
    return config


def _write(model, target, format, image_dtype, batch_size, opset, class_names):
    import tensorflow as tf

    model = float32_model(model)
    names = output_names(model)
    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.as_dtype(image_dtype), name=INPUT_NAME)

    def serve(images):
        # A concrete signature does not check shapes when called, and the preprocessing
        # would broadcast a 1-channel image to 3: check them in the graph.
        images = tf.ensure_shape(images, spec.shape)
        outputs = model(tf.cast(images, "float32"), training=False)
        if isinstance(outputs, (list, tuple)):
            return dict(zip(names, outputs))  # a signature names a dict's outputs by key
        return dict(outputs) if isinstance(outputs, dict) else outputs

    if format == "onnx":
        return _to_onnx(tf.function(serve, input_signature=[spec]), model.name, names, opset, class_names, target)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(ENDPOINT, serve, input_signature=[spec])  # the first: serving_default
    # Creating the lookup table of class names eagerly files a None initializer in the
    # global graph's collection, which every later graph export (the ONNX one) warns of.
    initializers = tf.compat.v1.get_collection_ref(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS)
    before = list(initializers)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            if class_names:
                _add_class_names(archive, class_names, os.path.join(scratch, CLASS_NAMES_FILE))
            archive.write_out(target, verbose=False)
    finally:
        initializers[:] = before


def _add_class_names(archive, class_names, file):
    """`class_names()` on the SavedModel, read from its asset `class_names.txt`.

    A lookup table from line numbers to lines is the one way Keras's `ExportArchive`
    tracks an asset (`track` takes TensorFlow resources): SavedModel copies the file
    into `assets/` and points the table at the copy wherever the export is moved.
    """
    import tensorflow as tf

    with open(file, "w", encoding="utf-8") as stream:
        stream.write("".join(f"{name}\n" for name in class_names))
    lines = tf.lookup.TextFileInitializer(
        file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE
    )
    table = tf.lookup.StaticHashTable(lines, default_value="")
    archive.track(table)
    archive.add_endpoint(CLASS_NAMES, lambda: table.lookup(tf.range(len(class_names), dtype=tf.int64)), input_signature=[])


def _to_onnx(function, name, names, opset, class_names, target):
    import tf2onnx

    # Freeze first: tf2onnx's own from_function turns the constants the model captures
    # (the Normalization statistics) into extra graph inputs that no one feeds.
    concrete = function.get_concrete_function()
    graph_def, input_name, _ = _internals.frozen_graph(concrete)
    outputs = concrete.structured_outputs  # freezing keeps the function's tensor names
    outputs = outputs if isinstance(outputs, dict) else {OUTPUT_NAME: outputs}
    # The names of the SavedModel's signature, so both formats read alike.
    renames = {outputs[output].name: output for output in names}
    _internals.patch_tf2onnx()  # tf2onnx 1.17 predates NumPy 2, as Keras's ONNX export knows
    # tf2onnx logs an op it cannot convert and writes the model anyway, which then fails
    # in onnxruntime: collect its errors and refuse instead.
    errors = _LogCollector()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(errors)
    levels = {name: logging.getLogger(name).level for name in ("tf2onnx", "tensorflow")}
    for logger_name in levels:  # their INFO lines and TF1 deprecation notes are not for our users
        logging.getLogger(logger_name).setLevel(logging.ERROR)
    model_proto = None
    try:
        model_proto, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            input_names=[input_name],
            output_names=list(renames),
            tensors_to_rename={input_name: INPUT_NAME, **renames},
            opset=opset,
            custom_op_handlers={"Erfc": (_onnx_erfc, [])},
        )
    except Exception as error:
        errors.messages.append(f"{type(error).__name__}: {error}")
    finally:
        logger.removeHandler(errors)
        for logger_name, level in levels.items():
            logging.getLogger(logger_name).setLevel(level)
    kept = sorted(output.name for output in model_proto.graph.output) if model_proto is not None else sorted(names)
    if kept != sorted(names):  # never an output dropped on the way
        errors.messages.append(f"it has outputs {kept} for the model's {names}")
    if errors.messages:
        raise ValueError(
            f"ONNX cannot carry model '{name}' as converted by tf2onnx (opset={opset}): "
            + "; ".join(errors.messages[:5])
        )
    _write_onnx(model_proto, class_names, target)


def _write_onnx(model_proto, class_names, target):
    """Writes the ModelProto, its class names as the JSON list `metadata_props["class_names"]`."""
    if class_names:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = CLASS_NAMES, json.dumps(class_names)
    with open(target, "wb") as stream:
        stream.write(model_proto.SerializeToString())


class _LogCollector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _onnx_erfc(ctx, node, name, args):
    """tf2onnx handler: erfc(x) = 1 - erf(x). TensorFlow's exact GELU is
    0.5 * x * erfc(-x / sqrt(2)), and ONNX has Erf but no Erfc."""
    import numpy as np
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    erf = ctx.make_node("Erf", [node.input[0]])
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def write_atomically(path, write):
    """Runs `write(tmp)` on a temporary path beside `path`, then moves it into place."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        tmp = os.path.join(staging, "export")
        write(tmp)
        if os.path.isdir(path) and not os.path.islink(path):
            old = os.path.join(staging, "previous")
            os.rename(path, old)  # a directory cannot be replaced in one step
        os.replace(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
