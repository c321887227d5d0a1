"""The TensorFlow side of `keras_vitmix.export`: writes a SavedModel or ONNX file.

Both formats come from one `tf.function`, `serve(images)`, that casts the images to
float32 and calls the model. This module runs where TensorFlow is the Keras backend:
in the exporting process under TensorFlow, and in `keras_vitmix._export_worker`'s
subprocess under JAX and torch. `keras_vitmix.export` and the worker both import it;
it imports neither. TensorFlow and tf2onnx are imported only when writing.
"""

import logging
import os
import shutil
import tempfile

import keras

from keras_vitmix import _internals, saving

ENDPOINT = "serve"
INPUT_NAME = "images"
OUTPUT_NAME = "output_0"  # what Keras names a SavedModel signature's output


def write(model, path, format="tf_saved_model", image_dtype="uint8", batch_size=None, opset=None):
    """Writes `model` (a `keras.Model` or a `.keras` path) to `path`, atomically.

    Arguments as `keras_vitmix.export.export`'s, already checked there; `path` is
    replaced if it exists. Must run under the TensorFlow backend.
    """
    if not isinstance(model, keras.Model):
        model = saving.load_model(model, compile=False, argument="model_or_path")
    check_model(model, image_dtype)
    write_atomically(path, lambda tmp: _write(model, tmp, format, image_dtype, batch_size, opset))


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


def _write(model, target, format, image_dtype, batch_size, opset):
    import tensorflow as tf

    model = float32_model(model)
    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.as_dtype(image_dtype), name=INPUT_NAME)

    def serve(images):
        # A concrete signature does not check shapes when called, and the preprocessing
        # would broadcast a 1-channel image to 3: check them in the graph.
        images = tf.ensure_shape(images, spec.shape)
        return model(tf.cast(images, "float32"), training=False)

    if format == "tf_saved_model":
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(ENDPOINT, serve, input_signature=[spec])
        archive.write_out(target, verbose=False)
    else:
        _to_onnx(tf.function(serve, input_signature=[spec]), model.name, opset, target)


def _to_onnx(function, name, opset, target):
    import tf2onnx

    # Freeze first: tf2onnx's own from_function turns the constants the model captures
    # (the Normalization statistics) into extra graph inputs that no one feeds.
    graph_def, input_name, output_name = _internals.frozen_graph(function.get_concrete_function())
    _internals.patch_tf2onnx()  # tf2onnx 1.17 predates NumPy 2, as Keras's ONNX export knows
    # tf2onnx logs an op it cannot convert and writes the model anyway, which then fails
    # in onnxruntime: collect its errors and refuse instead.
    errors = _LogCollector()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(errors)
    levels = {name: logging.getLogger(name).level for name in ("tf2onnx", "tensorflow")}
    for name in levels:  # their INFO lines and TF1 deprecation notes are not for our users
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        tf2onnx.convert.from_graph_def(
            graph_def,
            input_names=[input_name],
            output_names=[output_name],
            # The names of the SavedModel's signature, so both formats read alike.
            tensors_to_rename={input_name: INPUT_NAME, output_name: OUTPUT_NAME},
            opset=opset,
            custom_op_handlers={"Erfc": (_onnx_erfc, [])},
            output_path=target,
        )
    except Exception as error:
        errors.messages.append(f"{type(error).__name__}: {error}")
    finally:
        logger.removeHandler(errors)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    if errors.messages:
        raise ValueError(
            f"ONNX cannot carry model '{name}' as converted by tf2onnx (opset={opset}): "
            + "; ".join(errors.messages[:5])
        )


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
