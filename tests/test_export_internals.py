"""The export's uses of private Keras and TensorFlow API (`keras_vitmix._internals`,
section "export"), each with its absence simulated: the public fallback gives the same
layers, the same float32 decision and the same served numbers."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import _export_writer, _internals

from tests.small_models import FAMILIES, small


def mixed_model():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        return small("HybridMixerViT")
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("family", [*FAMILIES, "mixed"])
def test_flatten_layers_without_keras_flatten_finds_the_same_layers(family, monkeypatch):
    model = mixed_model() if family == "mixed" else small(family)
    private = _internals.flatten_layers(model)
    decision = _export_writer.float32_model(model) is model
    monkeypatch.setattr(_internals, "_FLATTEN_LAYERS", "_no_such_method")
    public = _internals.flatten_layers(model)
    assert public[0] is model and len(public) == len({id(layer) for layer in public})
    assert {id(layer) for layer in public} == {id(layer) for layer in private}, (
        sorted(layer.name for layer in private), sorted(layer.name for layer in public)
    )
    assert any(isinstance(layer, keras.layers.Dense) for layer in public)  # nested ones too
    assert (_export_writer.float32_model(model) is model) == decision == (family != "mixed")


# Under TensorFlow, with Keras's tf2onnx patch and TensorFlow's variable freezing both
# missing: the ONNX export serves the model's outputs. A fresh process, so that the patch
# cannot have been applied before (it holds for the rest of a process).
WITHOUT_INTERNALS = """
import json, sys
import numpy as np
import keras
from keras_vitmix import _internals, export
from tests.small_models import small

_internals._TF2ONNX_PATCH_MODULE = "keras_vitmix.no_such_module"
_internals._CONVERT_TO_CONSTANTS_MODULE = "keras_vitmix.no_such_module"
assert _internals.patch_tf2onnx() is False
keras.utils.set_random_seed(0)
model = small(sys.argv[2])
images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3)).astype("uint8")
export.export(model, sys.argv[1], format="onnx", verbose=False)
expected = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
(out,) = session.run(["output_0"], {"images": images})
print("REPORT" + json.dumps(dict(diff=float(np.abs(out - expected).max()), patched="object" in vars(np))))
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="one TensorFlow process, whatever the backend")
def test_onnx_export_without_the_private_routes_serves_the_same_numbers(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_INTERNALS, str(tmp_path / "vit.onnx"), "ViT"],
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=root, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("REPORT"))[len("REPORT"):])
    assert report["diff"] <= 1e-5 and report["patched"] is False, report


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="freezes a tf.function")
def test_frozen_graph_without_tensorflow_freezing_names_the_same_tensors(monkeypatch):
    import tensorflow as tf

    model = small("ConvMixer")
    spec = tf.TensorSpec((None, 16, 16, 3), tf.uint8, name="images")
    function = tf.function(lambda x: model(tf.cast(x, "float32"), training=False), input_signature=[spec])
    concrete = function.get_concrete_function()
    private = _internals.frozen_graph(concrete)
    monkeypatch.setattr(_internals, "_CONVERT_TO_CONSTANTS_MODULE", "keras_vitmix.no_such_module")
    public = _internals.frozen_graph(concrete)
    assert private[1:] == public[1:] == ("images:0", concrete.outputs[0].name)
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    outputs = []
    for graph_def, input_name, output_name in (private, public):
        run = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
        prune = run.prune(run.graph.get_tensor_by_name(input_name), run.graph.get_tensor_by_name(output_name))
        outputs.append(prune(tf.constant(images)).numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs[0], keras.ops.convert_to_numpy(model(images.astype("float32"))), atol=1e-5)
