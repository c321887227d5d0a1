"""Exports keep every output under its name, and the class names, or refuse (issue #33).

The exports are read back as a serving host would: the SavedModel with TensorFlow alone,
the ONNX file with onnxruntime and onnx alone, in fresh processes, against `model.predict`.
"""

import os

import keras
import numpy as np
import pytest

from keras_vitmix import _export_writer, export, inspection

from tests.small_models import small
from tests.test_export import run_check

SAVED_MODEL_READ = """
import json, os, sys
sys.modules.update(keras=None, keras_vitmix=None)
import numpy as np
import tensorflow as tf

report = {}
for name, (path, x) in json.loads(sys.argv[1]).items():
    loaded = tf.saved_model.load(path)
    images = tf.constant(np.asarray(x, np.uint8))
    served = loaded.serve(images)
    served = served if isinstance(served, dict) else {"output_0": served}
    signature = loaded.signatures["serve"](images=images)
    asset = os.path.join(path, "assets", "class_names.txt")
    names = "class_names" in loaded.signatures
    report[name] = dict(
        outputs={key: value.numpy().tolist() for key, value in served.items()},
        signature={key: value.numpy().tolist() for key, value in signature.items()},
        class_names=[n.decode() for n in loaded.class_names().numpy()] if names else None,
        signature_class_names=[n.decode() for n in loaded.signatures["class_names"]()["output_0"].numpy()] if names else None,
        asset=open(asset, encoding="utf-8").read().splitlines() if os.path.exists(asset) else None,
    )
print("REPORT" + json.dumps(report))
"""

ONNX_READ = """
import json, sys
sys.modules.update(keras=None, keras_vitmix=None, tensorflow=None)
import numpy as np
import onnx
import onnxruntime

report = {}
for name, (path, x) in json.loads(sys.argv[1]).items():
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(None, {"images": np.asarray(x, np.uint8)})
    metadata = {entry.key: entry.value for entry in onnx.load(path).metadata_props}
    report[name] = dict(
        outputs=dict(zip(names, (value.tolist() for value in values))),
        signature=None,
        class_names=json.loads(metadata["class_names"]) if "class_names" in metadata else None,
        signature_class_names=None,
        asset=None,
        metadata_keys=sorted(metadata),
    )
print("REPORT" + json.dumps(report))
"""

CLASSES = ["cat", "dog", "bird"]
LETTERS = [f"class {letter}" for letter in "abcdefghij"]


def dict_model():
    """Probabilities and the features under them, as a dict: the case of issue #33."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="gelu", name="conv")(keras.layers.Rescaling(1 / 255)(inputs))
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    probabilities = keras.layers.Dense(3, activation="softmax", name="head")(features)
    return keras.Model(inputs, {"probabilities": probabilities, "features": features}, name="two_outputs")


def list_model():
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, [keras.layers.Dense(2, name="logits")(features), features], name="list_outputs")


def as_named(model, prediction):
    """`model.predict`'s answer under the names the export gives it."""
    if isinstance(prediction, dict):
        return dict(prediction)
    if isinstance(prediction, list):
        return dict(zip(model.output_names, prediction))
    return {export.OUTPUT_NAME: prediction}


@pytest.mark.slow
@pytest.mark.parametrize("format", export.FORMATS)
def test_every_output_and_the_class_names_are_served(format, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype("uint8")
    cases = {
        "dict": (dict_model(), dict(class_names=CLASSES), CLASSES),
        "list": (list_model(), {}, None),
        "metadata": (small("MLPMixer", metadata={"class_names": LETTERS}), {}, LETTERS),
    }
    jobs, expected = {}, {}
    for name, (model, options, _) in cases.items():
        written = tmp_path / (name + (".onnx" if format == "onnx" else ""))
        export.export(model, written, format=format, verbose=name == "dict", **options)
        moved = tmp_path / f"moved_{written.name}"  # an asset must travel with its export
        os.rename(written, moved)
        jobs[name] = (str(moved), images.tolist())
        expected[name] = as_named(model, model.predict(images.astype("float32"), verbose=0))
    printed = capsys.readouterr().out
    assert f"(images: uint8) -> probabilities, features and 3 class names to {tmp_path / 'dict'}" in printed
    result = run_check(SAVED_MODEL_READ if format == "tf_saved_model" else ONNX_READ, jobs)

    assert sorted(result["dict"]["outputs"]) == ["features", "probabilities"]
    assert sorted(result["list"]["outputs"]) == ["logits", "pool"]
    assert sorted(result["metadata"]["outputs"]) == ["output_0"]
    for name, (_, _, class_names) in cases.items():
        report = result[name]
        assert sorted(report["outputs"]) == sorted(expected[name]), name
        for output, value in expected[name].items():
            np.testing.assert_allclose(report["outputs"][output], value, atol=1e-5, err_msg=f"{name}: {output}")
            if report["signature"] is not None:
                np.testing.assert_allclose(report["signature"][output], value, atol=1e-5)
        assert report["class_names"] == class_names, name
        if format == "tf_saved_model":
            assert report["signature_class_names"] == report["asset"] == class_names, name
        else:
            assert report["metadata_keys"] == ([] if class_names is None else ["class_names"]), name


def test_explicit_class_names_win_and_a_headless_model_exports_without_its_metadatas():
    model = small("ViT", metadata={"class_names": LETTERS})
    assert _export_writer.resolve_class_names(model, None) == (LETTERS, None)
    upper = [name.upper() for name in LETTERS]
    assert _export_writer.resolve_class_names(model, upper) == (upper, None)
    headless = small("ViT", include_top=False, pooling="avg", metadata={"class_names": LETTERS})
    names, note = _export_writer.resolve_class_names(headless, None)
    assert names is None and note.startswith("The 10 class names of the model's metadata are not exported: model ")
    assert _export_writer.resolve_class_names(list_model(), None) == (None, None)
    assert _export_writer.class_count(dict_model()) == 3 and _export_writer.class_count(list_model()) is None


def nested_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    return keras.Model(inputs, {"probabilities": keras.layers.Dense(3, activation="softmax")(x), "more": [x, x]})


def repeated_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    return keras.Model(inputs, [x, x], name="repeated")


def input_named_model():
    inputs = keras.Input((16, 16, 3))
    return keras.Model(inputs, {"images": keras.layers.GlobalAveragePooling2D()(inputs)}, name="echo")


@pytest.mark.parametrize(
    "build, options, error, match",
    [
        (dict_model, dict(class_names=["cat", "dog"]), ValueError, "'two_outputs' has 3 classes, and 2 class names"),
        (lambda: small("ViT", metadata={"class_names": CLASSES}), {}, ValueError,
         "has 10 classes, and 3 class names .* Its metadata holds class_names=\\['cat'"),
        (list_model, dict(class_names=["a", "b"]), ValueError, "'list_outputs' has no class probabilities output"),
        (lambda: small("ViT", include_top=False, pooling="avg"), dict(class_names=LETTERS), ValueError,
         "has no class probabilities output"),
        (dict_model, dict(class_names="cat dog bird"), TypeError, "list of str.*Received: class_names='cat dog bird'"),
        (dict_model, dict(class_names=["cat", 2, "bird"]), TypeError, "Received: 2 of type int"),
        (dict_model, dict(class_names=["cat", "d\nog", "bird"]), ValueError, "non-empty line.*Received: 'd\\\\nog'"),
        (nested_model, {}, ValueError, "outputs \\['more'\\] are nested"),
        (repeated_model, {}, ValueError, "'repeated' .* 2 outputs come from layers named \\['pool', 'pool'\\]"),
        (input_named_model, {}, ValueError, "'echo' .* other than 'images'.* Received: output names \\['images'\\]"),
    ],
)
@pytest.mark.parametrize("format", export.FORMATS)
def test_what_an_export_cannot_keep_is_refused_and_nothing_is_written(build, options, error, match, format, tmp_path):
    with pytest.raises(error, match=match):
        export.export(build(), tmp_path / "out", format=format, verbose=False, **options)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_the_attention_model_keeps_every_block(tmp_path):
    # The case: under TensorFlow, ONNX kept block_0 and dropped the others; under
    # JAX and torch the attention model did not save, so it could not be exported.
    import onnxruntime

    model = inspection.attention_model(small("ViT", num_layers=3))
    path = tmp_path / "attention.onnx"
    export.export(model, path, format="onnx", verbose=False)
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    assert sorted(names) == ["block_0", "block_1", "block_2"]
    expected = model.predict(images.astype("float32"), verbose=0)
    for name, value in zip(names, session.run(None, {"images": images})):
        np.testing.assert_allclose(value, expected[name], atol=1e-5, err_msg=name)


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="a model goes through a .keras file only from JAX and torch")
def test_a_model_that_tensorflow_cannot_load_is_refused_by_name(tmp_path):
    class Doubling(keras.layers.Layer):  # saves, but TensorFlow's process cannot find the class
        def call(self, inputs):
            return inputs * 2

    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(Doubling()(inputs)), name="doubling")
    with pytest.raises(ValueError, match=(
        f"The model 'doubling' from the {keras.backend.backend()} backend cannot be exported: .*"
        "it does not load there: .*Doubling"
    )):
        export.export(model, tmp_path / "served", verbose=False)
    assert os.listdir(tmp_path) == []

