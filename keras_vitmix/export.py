"""SavedModel and ONNX export with an image serving signature, from any backend.

Both formats are written by TensorFlow from one `tf.function`, `serve(images)`, that
casts the images to float32 and calls the model; the model's own preprocessing then maps
pixels in [0, 255] to its input statistics, and its head returns class probabilities.
TensorFlow writes them whatever the current backend: under TensorFlow in this process;
under JAX and torch the model's `.keras` file is re-loaded under TensorFlow in a
subprocess (one per Python session, kept for later exports: importing TensorFlow is most
of an export's time). That gives one artifact per model, identical from every backend, that runs on
any TensorFlow Serving device (a JAX-native SavedModel embeds XLA code compiled for the
exporting platform) and that tf2onnx can convert (it cannot convert JAX's XLA calls, and
torch's ONNX exporter cannot take a dynamic batch on Keras models).

Writing is atomic: the export goes to a temporary path beside `path` and is moved into
place only once complete, so a failed export never leaves a half-written model behind.

Example:

```python
model = keras_vitmix.applications.create_model("vit_cifar_patch4_32", classes=10)
export(model, "serving/vit/1")                        # SavedModel, serve(uint8 images)
export(model, "vit.onnx", format="onnx")              # ONNX, input "images"

import tensorflow as tf                                # anywhere, no Keras needed
served = tf.saved_model.load("serving/vit/1")         # keep a reference while serving
probabilities = served.serve(images_uint8)             # (batch, classes)
```
"""

import importlib.util
import logging
import os
import shutil
import tempfile

import keras

from keras_vitmix import _export_worker

FORMATS = ("tf_saved_model", "onnx")
IMAGE_DTYPES = ("uint8", "float32")
ENDPOINT = "serve"
INPUT_NAME = "images"
OUTPUT_NAME = "output_0"  # what Keras names a SavedModel signature's output


def export(
    model_or_path,
    path,
    format="tf_saved_model",
    image_dtype="uint8",
    batch_size=None,
    overwrite=False,
    opset=None,
    verbose=True,
):
    """Exports a model for serving, with the signature `serve(images) -> probabilities`.

    Args:
        model_or_path: a `keras.Model` taking (batch, height, width, channels) images, or
            the path to its `.keras` file.
        path: where to write: a directory for "tf_saved_model", a file for "onnx".
        format: "tf_saved_model" (TensorFlow Serving, `tf.saved_model.load`) or "onnx"
            (onnxruntime; needs the `tf2onnx` package).
        image_dtype: dtype of the served images. "uint8" (default): pixels as decoded
            from an image file. "float32": the model's own float input, i.e. pixels in
            [0, 255] as floats, or, for a model built with
            `include_preprocessing=False`, already normalized values (such a model
            needs "float32").
        batch_size: None for any batch size (the default), or a fixed batch size.
        overwrite: bool, whether to replace an existing export at `path`.
        opset: ONNX opset version (default: tf2onnx's). Only for "onnx".
        verbose: bool, print where the export was written.

    Returns:
        `path`.

    The served model always computes in float32: a model trained under a mixed
    precision policy is rebuilt in float32 with the same weights (ONNX has no bfloat16
    kernels on most runtimes, and neither does CPU serving).

    Example:

    >>> export("runs/demo/model.keras", "runs/demo/saved_model")
    """
    path = os.fspath(path)
    _check_arguments(format, image_dtype, batch_size, opset, path, overwrite)
    if not isinstance(model_or_path, keras.Model):
        model_or_path = _check_keras_file(model_or_path)
    if keras.backend.backend() == "tensorflow":
        model = model_or_path if isinstance(model_or_path, keras.Model) else _load(model_or_path)
        _check_model(model, image_dtype)
        _write_atomically(path, lambda tmp: _write(model, tmp, format, image_dtype, batch_size, opset))
    else:
        options = dict(format=format, image_dtype=image_dtype, batch_size=batch_size, opset=opset)
        if isinstance(model_or_path, keras.Model):
            _check_model(model_or_path, image_dtype)
            with tempfile.TemporaryDirectory(prefix="keras_vitmix_export_") as scratch:
                model_or_path.save(os.path.join(scratch, "model.keras"))
                _export_worker.export(os.path.join(scratch, "model.keras"), path, **options)
        else:
            _export_worker.export(model_or_path, path, **options)
    if verbose:
        what = "SavedModel" if format == "tf_saved_model" else "ONNX model"
        print(f"Exported {what} with {ENDPOINT}({INPUT_NAME}: {image_dtype}) to {path}")
    return path


def _check_arguments(format, image_dtype, batch_size, opset, path, overwrite):
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}. Received: format={format!r}")
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"`image_dtype` must be one of {IMAGE_DTYPES}. Received: image_dtype={image_dtype!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"`batch_size` must be None or a positive int. Received: batch_size={batch_size!r}")
    if opset is not None and format != "onnx":
        raise ValueError(f"`opset` is an ONNX option. Received: opset={opset!r} with format={format!r}")
    if os.path.lexists(path) and not overwrite:
        raise ValueError(
            f"An export already exists at path={path!r}. Pass overwrite=True (--overwrite) "
            "to replace it, or choose another path."
        )
    if format == "onnx" and os.path.isdir(path):
        raise ValueError(f"An ONNX export is a file, and path={path!r} is a directory.")
    needed = ["tensorflow"] + (["tf2onnx"] if format == "onnx" else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"Exporting format={format!r} needs {' and '.join(missing)}, which is not "
            f"installed (TensorFlow writes the export under every Keras backend). "
            f"Install it with: pip install {' '.join(missing)}"
        )


def _check_keras_file(path):
    path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(path, str):
        raise TypeError(
            f"`model_or_path` must be a keras.Model or the path to a .keras file. "
            f"Received: {type(path).__name__}"
        )
    if not path.endswith(".keras") or not os.path.isfile(path):
        raise ValueError(f"`model_or_path` must be a keras.Model or an existing .keras file. Received: {path!r}")
    return path


def _load(path):
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # a zip that is not a model, a truncated file, ...
        raise ValueError(f"Could not load the model file {path!r}: {type(error).__name__}: {error}") from None


def _check_model(model, image_dtype):
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


def _float32_model(model):
    """The model itself, or, if it computes in a mixed precision, a float32 rebuild of it."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model._flatten_layers()):
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

    model = _float32_model(model)
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
    from keras.src.export.tf2onnx_lib import patch_tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Freeze first: tf2onnx's own from_function turns the constants the model captures
    # (the Normalization statistics) into extra graph inputs that no one feeds.
    frozen = convert_variables_to_constants_v2(
        function.get_concrete_function(), lower_control_flow=False, aggressive_inlining=True
    )
    patch_tf2onnx()  # tf2onnx 1.17 predates NumPy 2; Keras's own ONNX export patches it too
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
            frozen.graph.as_graph_def(),
            input_names=[frozen.inputs[0].name],
            output_names=[frozen.outputs[0].name],
            # The names of the SavedModel's signature, so both formats read alike.
            tensors_to_rename={frozen.inputs[0].name: INPUT_NAME, frozen.outputs[0].name: OUTPUT_NAME},
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


def _write_atomically(path, write):
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
