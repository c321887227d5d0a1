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

Nothing is dropped on the way: an export serves every output of the model, under the
same names in both formats ("output_0" for a model with one output, a dict's keys, a
list's layer names), and carries the model's class names (`class_names()` and the asset
`class_names.txt` in a SavedModel, `metadata_props["class_names"]` in ONNX), so a served
answer can be read without the training run. A model whose outputs cannot all be named,
or that cannot reach TensorFlow, is refused with a `ValueError` that says why.

`attention=True` serves a model's attention beside its outputs, from the same pass:
each TransformerBlock's scores and the attention rollout as a map over the patch grid,
computed in the served graph, so a serving host draws attention without Keras
(`keras_vitmix._serving_attention`).

Writing is atomic: the export goes to a temporary path beside `path` and is moved into
place only once complete, so a failed export never leaves a half-written model behind.

Example:

```python
model = keras_vitmix.applications.create_model("vit_cifar_patch4_32", classes=10)
export(model, "serving/vit/1", class_names=names)     # SavedModel, serve(uint8 images)
export(model, "vit.onnx", format="onnx")              # ONNX, input "images"
export(model, "serving/vit_attention/1", attention=True)  # + attention_block_i, attention_rollout

import tensorflow as tf                                # anywhere, no Keras needed
served = tf.saved_model.load("serving/vit/1")         # keep a reference while serving
probabilities = served.serve(images_uint8)             # (batch, classes)
served.class_names()                                   # the names, (classes,) tf.string
```
"""

import importlib.util
import os
import tempfile

import keras

from keras_vitmix import _export_worker, _export_writer, saving
from keras_vitmix._export_writer import CLASS_NAMES, CLASS_NAMES_FILE, ENDPOINT, INPUT_NAME, OUTPUT_NAME  # noqa: F401

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
    class_names=None,
    attention=False,
    verbose=True,
):
    """Exports a model for serving, with the signature `serve(images) -> outputs`.

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
        class_names: list of str, the name of each class in label order, or None (the
            default) for the "class_names" of the model's metadata
            (`keras_vitmix.saving.model_metadata`), if any. There must be one per class
            of the model's class probabilities (its only output, or the output named
            "probabilities"). A model without such an output (e.g. built with
            `include_top=False`) exports without its metadata's names.
        attention: bool. True serves, beside the model's outputs, the attention
            scores (B, heads, N, N) of each TransformerBlock as "attention_<block>"
            (e.g. "attention_block_0") and the attention rollout as
            "attention_rollout", a (B, h, w) map over the patch grid: the class
            token's row of `inspection.attention_rollout` over the patches, or
            without a class token the mean of the patches' rows. They equal
            `inspection.attention_model(model)` and `attention_rollout` on the same
            images. A classifier's only output is then served as "probabilities"
            (its class names label it). For models with TransformerBlocks and a
            patch grid (ViT, DeiT, HybridMixerViT); costs one explicit softmax per
            block instead of a fused attention kernel (benchmarks/RESULTS.md,
            "Serving").
        verbose: bool, print what was written where.

    Returns:
        `path`.

    Outputs keep their names, in both formats: a model with one output serves
    "output_0"; a model whose output is a dict serves each entry under its key (e.g.
    `{"probabilities": ..., "features": ...}`); a list, each under the name of the layer
    that produces it. An export keeps every output or raises.

    Class names, when there are any: a SavedModel answers `class_names()` (also the
    signature "class_names", output "output_0"), a (classes,) tf.string tensor read from
    its asset `assets/class_names.txt`, one name a line; an ONNX model holds them as a
    JSON list in `metadata_props` under "class_names".

    The served model always computes in float32: a model trained under a mixed
    precision policy is rebuilt in float32 with the same weights (ONNX has no bfloat16
    kernels on most runtimes, and neither does CPU serving).

    Raises:
        ValueError: a bad argument; `attention=True` for a model without attention
            blocks (MLP-Mixer, ConvMixer); outputs that cannot all be named (nested,
            named alike, or named "images"); class names not one per class (both numbers
            named); a JAX or torch model that does not save as `.keras` or load
            back under TensorFlow (custom layers without `get_config` or registration).
        TypeError: `class_names` not a list of str, `model_or_path` neither a model nor
            a path.

    Example:

    >>> export("runs/demo/model.keras", "runs/demo/saved_model")
    """
    path = os.fspath(path)
    _check_arguments(format, image_dtype, batch_size, opset, path, overwrite, attention)
    if class_names is not None:
        class_names = _export_writer.check_class_names(class_names)
    if not isinstance(model_or_path, keras.Model):
        model_or_path = _check_keras_file(model_or_path)
    options = dict(format=format, image_dtype=image_dtype, batch_size=batch_size, opset=opset, attention=attention)
    if keras.backend.backend() == "tensorflow":
        written = _export_writer.write(model_or_path, path, class_names=class_names, **options)
    elif isinstance(model_or_path, keras.Model):
        written = _export_through_file(model_or_path, path, class_names, options)
    else:
        written = _export_worker.export(model_or_path, path, class_names=class_names, **options)
    if verbose:
        what = "SavedModel" if format == "tf_saved_model" else "ONNX model"
        names = written["class_names"]
        classes = f" and {len(names)} class names" if names else ""
        print(
            f"Exported {what} with {ENDPOINT}({INPUT_NAME}: {image_dtype}) -> "
            f"{', '.join(written['outputs'])}{classes} to {path}"
        )
        if written["note"]:
            print(written["note"])
    return path


def _export_through_file(model, path, class_names, options):
    """Under JAX and torch: checks `model` here, then has TensorFlow write it from a `.keras` file."""
    _export_writer.check_model(model, options["image_dtype"])
    _export_writer.output_names(model)
    served = _export_writer.with_attention(model) if options["attention"] else model
    class_names, _ = _export_writer.resolve_class_names(served, class_names)
    origin = f"model '{model.name}' from the {keras.backend.backend()} backend"
    with tempfile.TemporaryDirectory(prefix="keras_vitmix_export_") as scratch:
        file = os.path.join(scratch, "model.keras")
        try:
            model.save(file)
        except Exception as error:  # e.g. a layer built from arguments it cannot write
            raise _export_writer.not_reloadable(origin, f"it does not save: {_export_writer.short_error(error)}") from error
        return _export_worker.export(file, path, class_names=class_names, origin=origin, **options)


def _check_arguments(format, image_dtype, batch_size, opset, path, overwrite, attention):
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}. Received: format={format!r}")
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"`image_dtype` must be one of {IMAGE_DTYPES}. Received: image_dtype={image_dtype!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"`batch_size` must be None or a positive int. Received: batch_size={batch_size!r}")
    if not isinstance(attention, bool):
        raise ValueError(f"`attention` must be True or False. Received: attention={attention!r}")
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
