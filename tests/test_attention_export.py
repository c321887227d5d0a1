"""export(..., attention=True) serves the attention of inspection.attention_model and
the rollout of inspection.attention_rollout (issue #35), read back as a serving host
reads it: the SavedModel with TensorFlow alone, the ONNX file with onnxruntime alone,
each in a fresh process without Keras; and the attention model itself reloads from
`.keras` after `import keras_vitmix` alone."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import export, inspection

from tests.small_models import small
from tests.test_export import run_check
from tests.test_export_outputs import ONNX_READ, SAVED_MODEL_READ


def sharpened(model, factor=3.0):
    """Attention far from uniform (a random model's is nearly flat, which any map would match)."""
    for layer in model.layers:
        if hasattr(layer, "attention") and hasattr(layer.attention, "qkv"):
            layer.attention.qkv.kernel.assign(layer.attention.qkv.kernel * factor)
    return model


def rollout_map(scores, model):
    """`inspection.attention_rollout` as the export serves it: the class token's row over
    the patches (the patches' mean row without a class token), on the patch grid."""
    grid = inspection.patch_grid(model)
    rollout, prefix = inspection.attention_rollout(scores), grid.num_prefix_tokens
    class_token = model.get_layer("patch_embedding").use_class_token
    rows = rollout[:, 0, prefix:] if class_token else rollout[:, prefix:, prefix:].mean(axis=1)
    return rows.reshape(-1, *grid.grid_shape)


def models():
    keras.utils.set_random_seed(7)
    deit = sharpened(small("ViT", use_distillation_token=True, pooling="token", num_heads=4))
    hybrid = sharpened(small("HybridMixerViT", num_heads=4))
    return {"deit": deit, "hybrid": hybrid}


@pytest.mark.slow
def test_served_attention_equals_attention_model_and_rollout(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    jobs = {"tf_saved_model": {}, "onnx": {}}
    expected = {}
    for name, model in models().items():
        x = images.astype("float32")
        scores = {key: keras.ops.convert_to_numpy(value) for key, value in inspection.attention_model(model)(x).items()}
        expected[name] = {
            "probabilities": keras.ops.convert_to_numpy(model(x, training=False)),
            **{f"attention_{block}": value for block, value in scores.items()},
            "attention_rollout": rollout_map(scores, model),
        }
        # DeiT also from its .keras file: a loaded model, and the route of a path.
        source = model
        if name == "deit":
            source = str(tmp_path / "deit.keras")
            model.save(source)
        for format in export.FORMATS:
            path = str(tmp_path / f"{name}{'.onnx' if format == 'onnx' else ''}")
            export.export(source if format == "onnx" else model, path, format=format, attention=True, verbose=False)
            jobs[format][name] = (path, images.tolist())
    assert sorted(expected["deit"]) == ["attention_block_0", "attention_block_1", "attention_rollout", "probabilities"]
    assert sorted(expected["hybrid"]) == ["attention_block_1", "attention_rollout", "probabilities"]  # block_0 mixes
    for format, script in (("tf_saved_model", SAVED_MODEL_READ), ("onnx", ONNX_READ)):
        report = run_check(script, jobs[format])
        for name, outputs in expected.items():
            served = {key: np.asarray(value) for key, value in report[name]["outputs"].items()}
            assert sorted(served) == sorted(outputs), (format, name)
            for key, value in outputs.items():
                np.testing.assert_allclose(served[key], value, atol=1e-5, err_msg=f"{format} {name} {key}")
            tokens = 64 + (2 if name == "deit" else 0)  # 8 x 8 patches, class and distillation tokens
            for key in outputs:
                if key.startswith("attention_block"):
                    assert served[key].shape == (2, 4, tokens, tokens)
                    np.testing.assert_allclose(served[key].sum(-1), 1.0, atol=1e-5)
            assert served["attention_rollout"].shape == (2, 8, 8)
            assert served["attention_block_1"].max() > 0.2  # sharpened: far from uniform (1/64)


def test_attention_true_needs_attention_blocks(tmp_path):
    for family, block in (("MLPMixer", "MixerBlock"), ("ConvMixer", "ConvMixerBlock")):
        model = small(family)
        with pytest.raises(ValueError, match=(
            f"model '{model.name}' cannot give them: it has no TransformerBlock \\(its blocks: 2 {block}\\)\\. "
            "Received: attention=True. Allowed: attention=True for a model with TransformerBlocks"
        )):
            export.export(model, tmp_path / family, attention=True, verbose=False)
    with pytest.raises(ValueError, match="`attention` must be True or False. Received: attention='yes'"):
        export.export(small("ViT"), tmp_path / "vit", attention="yes", verbose=False)
    assert os.listdir(tmp_path) == []


RELOAD = """
import json, sys
import numpy as np
import keras
import keras_vitmix  # registers the package's layers, and nothing else is imported

path, x = json.loads(sys.argv[1])
scores = keras.saving.load_model(path).predict(np.asarray(x, np.float32), verbose=0)
print("REPORT" + json.dumps({name: value.tolist() for name, value in scores.items()}))
"""


@pytest.mark.slow
def test_the_attention_model_reloads_after_importing_keras_vitmix_alone(tmp_path):
    model = models()["hybrid"]
    attention = inspection.attention_model(model)
    path = str(tmp_path / "attention.keras")
    attention.save(path)
    x = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, json.dumps([path, x.tolist()])],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": keras.backend.backend()},
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT"))
    reloaded = json.loads(line[len("REPORT"):])
    expected = {name: keras.ops.convert_to_numpy(value) for name, value in attention(x).items()}
    assert sorted(reloaded) == ["block_1"]
    np.testing.assert_allclose(reloaded["block_1"], expected["block_1"], atol=1e-5)  # predict (compiled) against eager
