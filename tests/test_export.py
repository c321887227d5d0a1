"""SavedModel and ONNX export, checked like production: in fresh processes that import
only TensorFlow (or only onnxruntime), against the Keras model's own outputs."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import _export_writer, _internals, export

from tests.small_models import FAMILIES, small

SUFFIX = {"tf_saved_model": "", "onnx": ".onnx"}

# Runs in a fresh interpreter with only TensorFlow imported: what a serving host has.
SAVED_MODEL_CHECK = """
import json, sys
sys.modules.update(keras=None, keras_vitmix=None)  # a serving host without them: imports fail
import numpy as np
import tensorflow as tf

report = {}
for name, (path, x, expected) in json.loads(sys.argv[1]).items():
    loaded = tf.saved_model.load(path)
    x = np.asarray(x, dtype=loaded.signatures["serve"].structured_input_signature[1]["images"].dtype.as_numpy_dtype)
    spec = loaded.signatures["serve"].structured_input_signature[1]["images"]
    out = loaded.serve(tf.constant(x)).numpy()
    signature_out = loaded.signatures["serving_default"](images=tf.constant(x))["output_0"].numpy()
    errors = []
    wrong_dtype = tf.constant(x, tf.float32 if spec.dtype == tf.uint8 else tf.int32)
    wrong_shapes = [x[..., :1], x[:, : x.shape[1] // 2]]
    for call, value in [(loaded.serve, wrong_dtype)] + [(loaded.signatures["serve"], tf.constant(v)) for v in wrong_shapes]:
        try:
            call(value) if call is loaded.serve else call(images=value)
            errors.append(None)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            errors.append(type(error).__name__)
    report[name] = dict(
        diff=float(np.max(np.abs(out - np.asarray(expected)))),
        signature_diff=float(np.max(np.abs(signature_out - out))),
        input=[spec.dtype.name, list(spec.shape)],
        errors=errors,
    )
print("REPORT" + json.dumps(report))
"""

ONNX_CHECK = """
import json, sys
sys.modules.update(keras=None, keras_vitmix=None, tensorflow=None)
import numpy as np
import onnxruntime

report = {}
for name, (path, x, expected) in json.loads(sys.argv[1]).items():
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}[spec.type]
    x = np.asarray(x, dtype=dtype)
    (out,) = session.run(["output_0"], {"images": x})
    errors = []
    for value in [x.astype(np.float32 if dtype is np.uint8 else np.int32), x[..., :1], x[:, : x.shape[1] // 2]]:
        try:
            session.run(None, {"images": value})
            errors.append(None)
        except Exception as error:  # onnxruntime raises its own InvalidArgument types
            errors.append(type(error).__name__)
    report[name] = dict(
        diff=float(np.max(np.abs(out - np.asarray(expected)))),
        signature_diff=0.0,
        input=[spec.type, spec.shape],
        errors=errors,
    )
print("REPORT" + json.dumps(report))
"""


def trained(model):
    """BatchNorm statistics moved away from their initial values (0 and 1), as training does."""
    rng = np.random.default_rng(0)
    for layer in _internals.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape))
    return model


def run_check(script, jobs):
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(jobs)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("REPORT"))
    return json.loads(line[len("REPORT"):])


@pytest.mark.slow
@pytest.mark.parametrize("format", export.FORMATS)
def test_every_family_serves_the_models_outputs_in_a_fresh_process(format, tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 16, 16, 3)).astype("uint8")
    jobs = {}
    for family in FAMILIES:
        model = trained(small(family))
        path = str(tmp_path / f"{family}{SUFFIX[format]}")
        assert export.export(model, path, format=format, verbose=False) == path
        expected = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
        jobs[family] = (path, images.tolist(), expected.tolist())
    # The float32 variant, fixed batch: a model whose inputs are already normalized.
    model = small("ViT", include_preprocessing=False)
    floats = rng.normal(size=(2, 16, 16, 3)).astype("float32")
    path = str(tmp_path / f"ViT_float{SUFFIX[format]}")
    export.export(model, path, format=format, image_dtype="float32", batch_size=2, verbose=False)
    jobs["ViT_float"] = (path, floats.tolist(), keras.ops.convert_to_numpy(model(floats)).tolist())

    result = run_check(SAVED_MODEL_CHECK if format == "tf_saved_model" else ONNX_CHECK, jobs)
    assert sorted(result) == sorted(jobs)
    for name, report in result.items():
        assert report["diff"] <= 1e-4 and report["signature_diff"] <= 1e-6, (name, report)
        assert None not in report["errors"], f"{name}: a wrong dtype or shape was served: {report}"
    uint8, float32 = result["ViT"]["input"], result["ViT_float"]["input"]
    if format == "tf_saved_model":
        assert uint8 == ["uint8", [None, 16, 16, 3]] and float32 == ["float32", [2, 16, 16, 3]]
    else:
        assert uint8[0] == "tensor(uint8)" and uint8[1][1:] == [16, 16, 3] and not isinstance(uint8[1][0], int)
        assert float32 == ["tensor(float)", [2, 16, 16, 3]]


def test_an_export_is_not_overwritten_unless_asked(tmp_path):
    model = small("MLPMixer")
    path = tmp_path / "served"
    export.export(model, path, verbose=False)
    stamp = (path / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(ValueError, match="An export already exists at path=.*overwrite=True"):
        export.export(model, path, verbose=False)
    assert (path / "saved_model.pb").stat().st_mtime_ns == stamp
    export.export(model, path, overwrite=True, verbose=False)
    assert (path / "saved_model.pb").stat().st_mtime_ns != stamp
    assert sorted(os.listdir(tmp_path)) == ["served"]  # no staging folder left behind


@pytest.mark.parametrize("existing", [None, "directory", "file"])
def test_a_failed_write_leaves_what_was_there(existing, tmp_path):
    path = tmp_path / "export"
    if existing == "directory":
        path.mkdir()
        (path / "saved_model.pb").write_text("old")
    elif existing == "file":
        path.write_text("old")

    def half_write(target):
        os.makedirs(target)
        (open(os.path.join(target, "saved_model.pb"), "w")).write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _export_writer.write_atomically(str(path), half_write)
    assert sorted(os.listdir(tmp_path)) == ([] if existing is None else ["export"])
    if existing == "directory":
        assert (path / "saved_model.pb").read_text() == "old"
    elif existing == "file":
        assert path.read_text() == "old"

    def write(target):
        os.makedirs(target)
        (open(os.path.join(target, "saved_model.pb"), "w")).write("new")

    if existing != "file":
        _export_writer.write_atomically(str(path), write)
        assert (path / "saved_model.pb").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["export"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(format="tflite"), "`format` must be one of .*Received: format='tflite'"),
        (dict(image_dtype="int8"), "`image_dtype` must be one of .*Received: image_dtype='int8'"),
        (dict(batch_size=0), "Received: batch_size=0"),
        (dict(opset=17), "`opset` is an ONNX option. Received: opset=17"),
        (dict(model_or_path="no/such/model.keras"), "an existing .keras file. Received: 'no/such/model.keras'"),
        (dict(model_or_path="corrupt"), r"corrupt\.keras' \(.* bytes\) is not a readable zip archive"),
        (dict(model_or_path="unpreprocessed"), "include_preprocessing=False .* Received: image_dtype='uint8'"),
        (dict(model_or_path="any_size"), "fixed size .* Received: input shape \\(None, None, None, 3\\)"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(kwargs, match, tmp_path):
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 not a model")
    inputs = keras.Input((None, None, 3))
    models = {
        "corrupt": str(tmp_path / "corrupt.keras"),
        "unpreprocessed": small("ViT", include_preprocessing=False),
        "any_size": keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs)),
    }
    arguments = {"model_or_path": small("ViT"), "path": str(tmp_path / "out"), **kwargs}
    arguments["model_or_path"] = models.get(arguments["model_or_path"], arguments["model_or_path"])
    with pytest.raises(ValueError, match=match):
        export.export(**arguments)
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["corrupt.keras"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="writes in this process under TensorFlow only")
def test_a_mixed_precision_model_is_served_in_float32(tmp_path):
    import tensorflow as tf

    def build():
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(8, 3, activation="gelu")(keras.layers.Rescaling(1 / 255)(inputs))
        x = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(x))
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", dtype="float32")(x))

    keras.config.set_dtype_policy("mixed_bfloat16")
    mixed = build()
    keras.config.set_dtype_policy("float32")
    reference = build()  # the same graph and weights under the float32 policy
    reference.set_weights(mixed.get_weights())
    export.export(mixed, tmp_path / "served", verbose=False)
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype("uint8")
    loaded = tf.saved_model.load(str(tmp_path / "served"))  # keep: its variables die with it
    served = loaded.serve(tf.constant(images)).numpy()
    expected = keras.ops.convert_to_numpy(reference(images.astype("float32")))
    in_bfloat16 = keras.ops.convert_to_numpy(mixed(images.astype("float32")))
    assert np.max(np.abs(in_bfloat16 - expected)) > 1e-4  # bfloat16 is visibly different
    np.testing.assert_allclose(served, expected, atol=1e-6)


def test_the_tensorflow_process_restarts_after_it_dies(tmp_path):
    # Under JAX and torch every export goes through this process; under TensorFlow it is
    # exercised directly here.
    from keras_vitmix import _export_worker

    small("MLPMixer").save(tmp_path / "model.keras")
    _export_worker.export(str(tmp_path / "model.keras"), str(tmp_path / "a"), format="tf_saved_model")
    first = _export_worker._worker.process
    first.kill()
    first.wait()
    _export_worker.export(str(tmp_path / "model.keras"), str(tmp_path / "b"), format="tf_saved_model")
    assert _export_worker._worker.process is not first and _export_worker._worker.alive()
    assert (tmp_path / "a" / "saved_model.pb").exists() and (tmp_path / "b" / "saved_model.pb").exists()
    with pytest.raises(RuntimeError, match="(?s)Exporting under TensorFlow failed:.*TypeError.*colour"):
        _export_worker.export(str(tmp_path / "model.keras"), str(tmp_path / "c"), colour="red")
