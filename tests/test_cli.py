"""The `keras-vitmix` command: models, train, evaluate, visualize, --backend."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import cli
from keras_vitmix.applications import ViT


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny ViT trained one epoch on digits through `keras-vitmix train`."""
    folder = tmp_path_factory.mktemp("cli")
    tiny = ViT(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2, input_shape=(16, 16, 3), classes=10)
    tiny.save(folder / "tiny.keras")
    code = cli.main([
        "train", "--model", str(folder / "tiny.keras"), "--dataset", "digits", "--epochs", "1",
        "--batch-size", "128", "--augment", "none", "--output", str(folder / "run"),
    ])
    assert code == 0
    return folder / "run"


def test_models_lists_the_registry(capsys):
    assert cli.main(["models", "seed_*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "seed_convmixer", "seed_convmixer_mixer", "seed_mixer", "seed_mixer_mixer_vit", "seed_vit",
    ]
    assert cli.main(["models", "nothing_*"]) == 1


def test_train_writes_the_run_folder(run):
    for name in ("model.keras", "last.keras", "history.csv", "curves.png", "metrics.json"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backend"] == keras.backend.backend()
    assert metrics["epochs"] == 1 and metrics["test_examples"] == 360
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["images_per_second"] > 0
    assert metrics["parameters"] == keras.saving.load_model(run / "model.keras").count_params()


def test_evaluate_agrees_with_training(run, capsys):
    assert cli.main(["evaluate", "--model", str(run / "model.keras"), "--dataset", "digits"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(re.search(r"accuracy ([\d.]+)%", printed).group(1)) / 100
    expected = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert abs(accuracy - expected) < 1e-3
    assert (run / "confusion_matrix.png").stat().st_size > 0


def test_visualize_with_and_without_an_image(run, tmp_path, capsys):
    assert cli.main(["visualize", "--model", str(run / "model.keras"), "--output", str(tmp_path / "a")]) == 0
    written = {os.path.basename(p) for p in capsys.readouterr().out.split()}
    assert {"patches.png", "attention_map.png", "query_attention.png", "rollout.png"} <= written
    from PIL import Image

    Image.fromarray(np.full((40, 30, 3), 128, np.uint8)).save(tmp_path / "gray.png")
    args = ["visualize", "--model", str(run / "model.keras"), "--image", str(tmp_path / "gray.png"),
            "--query", "1,2", "--head", "1", "--output", str(tmp_path / "b")]
    with pytest.warns(UserWarning):
        assert cli.main(args) == 0
    assert (tmp_path / "b" / "query_attention.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "seed_convmixer", "--batch-size", "0"], "batch_size=0"),
        (["train", "--model", "no_such_model"], "Unknown model name"),
        (["evaluate", "--model", "missing.keras"], "No such model file"),
        (["visualize", "--model", "missing.keras"], "No such model file"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, capsys, tmp_path):
    assert cli.main([*args, "--output", str(tmp_path)] if args[0] == "train" else args) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_visualize_refuses_a_non_image(run, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    assert cli.main(["visualize", "--model", str(run / "model.keras"), "--image", str(tmp_path / "notes.png")]) == 2
    assert "Not a readable image file" in capsys.readouterr().err
    assert cli.main(["visualize", "--model", str(run / "model.keras"), "--head", "7", "--output", str(tmp_path)]) == 2
    assert "head" in capsys.readouterr().err


@pytest.mark.slow
def test_backend_flag_takes_effect_before_keras_is_imported(run, tmp_path):
    other = "torch" if keras.backend.backend() == "jax" else "jax"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "PYTHONPATH": repo}
    command = [sys.executable, "-m", "keras_vitmix.cli", "--backend", other, "train", "--model",
               str(run / "model.keras"), "--epochs", "1", "--augment", "none", "--output", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["backend"] == other


def test_export_serves_the_trained_model(run, tmp_path, capsys):
    import tensorflow as tf

    model = keras.saving.load_model(run / "model.keras")
    arguments = ["export", "--model", str(run / "model.keras"), "--output", str(tmp_path / "served")]
    assert cli.main(arguments) == 0
    assert f"to {tmp_path / 'served'}" in capsys.readouterr().out
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    served = loaded.serve(tf.constant(images)).numpy()
    np.testing.assert_allclose(served, keras.ops.convert_to_numpy(model(images.astype("float32"))), atol=1e-5)
    assert cli.main(arguments) == 2  # refuses to overwrite
    assert "An export already exists" in capsys.readouterr().err
