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
import os
import tempfile

import keras

from keras_vitmix import _export_worker, _export_writer, saving
from keras_vitmix._export_writer import ENDPOINT, INPUT_NAME, OUTPUT_NAME  # noqa: F401

FORMATS = ("tf_saved_model", "onnx")
IMAGE_DTYPES = ("uint8", "float32")


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
    options = dict(format=format, image_dtype=image_dtype, batch_size=batch_size, opset=opset)
    if keras.backend.backend() == "tensorflow":
        _export_writer.write(model_or_path, path, **options)
    else:
        if isinstance(model_or_path, keras.Model):
            _export_writer.check_model(model_or_path, image_dtype)
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
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`model_or_path` must be a keras.Model or the path to a .keras file. "
            f"Received: {type(path).__name__}"
        )
    path = os.fspath(path)
    if not path.endswith(".keras") or not os.path.isfile(path):
        raise ValueError(f"`model_or_path` must be a keras.Model or an existing .keras file. Received: {path!r}")
    # A truncated or corrupt file is named here, before TensorFlow is started for it.
    return saving.check_model_file(path, argument="model_or_path")
