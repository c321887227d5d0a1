"""The `keras-vitmix` command: models, train, evaluate, visualize, --backend, a quiet start."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vitmix_cli
from keras_vitmix import applications, augmentation, cli, config, recipes, training
from keras_vitmix.applications import ViT
from keras_vitmix_cli import parser as cli_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TensorFlow's C++ side prints at start-up: absl's banner, then glog-style lines.
START_UP = re.compile(r"absl::InitializeLog|^[IWEF]\d{4} .*\] |oneDNN|cudart|cpu_feature_guard", re.M)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny ViT trained one epoch on digits through `keras-vitmix train`, on the device
    pipeline; the rest of the recipe's values stay its own."""
    folder = tmp_path_factory.mktemp("cli")
    tiny = ViT(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2, input_shape=(16, 16, 3), classes=10)
    tiny.save(folder / "tiny.keras")
    code = cli.main([
        "train", "--model", str(folder / "tiny.keras"), "--dataset", "digits", "--pipeline", "device",
        "--epochs", "1", "--batch-size", "128", "--augment", "none", "--output", str(folder / "run"),
    ])
    assert code == 0
    return folder / "run"


def test_models_lists_the_registry(capsys):
    assert cli.main(["models", "seed_*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("  ")[0] == "name" and "timm weights" in lines[0] and lines[0].endswith("description")
    assert [line.split()[0] for line in lines[1:]] == [
        "seed_convmixer", "seed_convmixer_mixer", "seed_mixer", "seed_mixer_mixer_vit", "seed_vit",
    ]
    assert cli.main(["models", "nothing_*"]) == 1


def test_models_params_counts_the_built_models(capsys):
    assert cli.main(["models", "seed_vit", "--params"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:5] == ["seed_vit", "ViT", f"{applications.create_model('seed_vit').count_params():,}", "72x72", "no"]


def test_train_writes_the_run_folder(run):
    for name in ("model.keras", "last.keras", "history.csv", "curves.png", "metrics.json"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backend"] == keras.backend.backend()
    assert metrics["epochs"] == 1 and metrics["test_examples"] == 360
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["images_per_second"] > 0
    assert metrics["parameters"] == keras.saving.load_model(run / "model.keras").count_params()
    assert metrics["pipeline"] == "device" and metrics["recipe"] == "small"
    small = recipes.get_recipe("small", ViT)
    assert metrics["learning_rate"] == small.learning_rate and metrics["augment"] == "none"
    assert metrics["test_time_flip"] is False  # the recipe's True, but flips change digits


def test_train_options_default_to_the_recipe(monkeypatch):
    received = []
    monkeypatch.setattr(training, "train", lambda **kwargs: received.append(kwargs))
    assert cli.main(["train"]) == 0
    from_recipe = ("epochs", "batch_size", "learning_rate", "weight_decay", "warmup_epochs", "label_smoothing",
                   "augment", "drop_path_rate", "test_time_flip", "clipnorm", "ema_momentum", "recipe")
    assert all(received[0][name] is None for name in from_recipe) and received[0]["pipeline"] == "auto"
    assert cli.main(["train", "--recipe", "cifar", "--pipeline", "tf.data", "--augment", "medium",
                     "--no-test-time-flip", "--drop-path-rate", "0.2", "--clipnorm", "0", "--ema", "0"]) == 0
    assert {k: received[1][k] for k in ("recipe", "pipeline", "augment", "test_time_flip", "drop_path_rate",
                                         "clipnorm", "ema_momentum")} == {
        "recipe": "cifar", "pipeline": "tf.data", "augment": "medium", "test_time_flip": False,
        "drop_path_rate": 0.2, "clipnorm": 0.0, "ema_momentum": False,
    }
    assert "validation_fraction" not in received[1] and "test_fraction" not in received[1]  # train's defaults
    assert cli.main(["train", "--validation-fraction", "0.2", "--test-fraction", "0.1"]) == 0
    assert (received[2]["validation_fraction"], received[2]["test_fraction"]) == (0.2, 0.1)


def test_the_parser_s_copies_equal_the_library_s_choices():
    assert cli_parser.PIPELINES == training.PIPELINES
    assert cli_parser.RECIPES == recipes.RECIPES and cli_parser.AUGMENTATIONS == recipes.AUGMENTATIONS
    assert recipes.AUGMENTATIONS == augmentation.AUGMENTATIONS
    assert cli_parser.BACKENDS == keras_vitmix_cli.BACKENDS == ("tensorflow", "jax", "torch")


def test_evaluate_passes_none_for_what_the_run_decides(monkeypatch):
    received = []
    monkeypatch.setattr(training, "evaluate", lambda *args, **kwargs: received.append((args, kwargs)))
    assert cli.main(["evaluate", "--model", "m.keras"]) == 0
    assert received[0] == (("m.keras",), dict(dataset=None, split=None, batch_size=None, output_dir=None,
                                              test_time_flip=None, pipeline=None))
    assert cli.main(["evaluate", "--model", "m.keras", "--dataset", "cifar10", "--split", "validation",
                     "--no-test-time-flip", "--pipeline", "device", "--batch-size", "32", "--output", "o"]) == 0
    assert received[1][1] == dict(dataset="cifar10", split="validation", batch_size=32, output_dir="o",
                                  test_time_flip=False, pipeline="device")


@pytest.mark.parametrize("option", ["--pipeline", "--recipe", "--augment"])
def test_a_bad_choice_is_argparse_s_one_line(option, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", option, "x"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith(f"keras-vitmix train: error: argument {option}: invalid choice: 'x'")
    assert "Traceback" not in "".join(error)


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
    error = capsys.readouterr().err
    assert "JPEG, PNG, BMP or GIF image" in error and "notes.png" in error
    assert cli.main(["visualize", "--model", str(run / "model.keras"), "--head", "7", "--output", str(tmp_path)]) == 2
    assert "head" in capsys.readouterr().err


def test_backend_goes_before_or_after_the_command():
    parser = cli_parser.build_parser()
    before = parser.parse_args(["--backend", "torch", "train", "--epochs", "2"])
    after = parser.parse_args(["train", "--epochs", "2", "--backend", "torch"])
    assert vars(before) == vars(after) and after.backend == "torch"
    assert parser.parse_args(["models"]).backend is None
    assert parser.parse_args(["--backend", "jax", "models", "--backend", "torch"]).backend == "torch"
    assert parser.parse_args(["models", "--backend=jax", "vit_*"]).backend == "jax"


def test_native_log_lines_below_the_level_are_held_back(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with keras_vitmix_cli.filtered_native_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796410050.560654    5868 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1796410162.953012    8238 cuda_platform.cc:52] failed call to cuInit\n")
        os.write(2, b"a line of our own\n")
    assert capfd.readouterr().err.splitlines() == [
        "E0000 00:00:1796410162.953012    8238 cuda_platform.cc:52] failed call to cuInit", "a line of our own",
    ]
    with pytest.raises(RuntimeError), keras_vitmix_cli.filtered_native_stderr():  # a failure shows everything
        os.write(2, b"I0000 00:00:1.5 1 port.cc:153] context\n")
        raise RuntimeError
    assert "port.cc" in capfd.readouterr().err


def test_the_command_tunes_malloc_and_picks_the_backend(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(config, "tune_malloc", lambda: calls.append(True))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("KERAS_BACKEND", "neither")
    backend = keras.backend.backend()
    assert keras_vitmix_cli.main(["predict", "--model", "missing.keras", "a.png", "--backend", backend]) == 2
    assert calls == [True] and os.environ["KERAS_BACKEND"] == backend
    assert "No such model file" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("environment, arguments", [("tensorflow", []), ("jax", ["--backend", "tensorflow"])])
def test_tensorflow_starts_quietly(environment, arguments):
    """Under TensorFlow (the default backend, or `--backend` after the subcommand) the
    command's stderr holds none of TensorFlow's C++ start-up lines."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(KERAS_BACKEND=environment, PYTHONPATH=REPO)
    command = [sys.executable, "-m", "keras_vitmix_cli", "models", "seed_vit", "--params", *arguments]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[1].startswith("seed_vit") and not START_UP.search(done.stderr), done.stderr[-2000:]


@pytest.mark.slow
def test_backend_flag_takes_effect_before_keras_is_imported(run, tmp_path):
    other = "torch" if keras.backend.backend() == "jax" else "jax"
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "PYTHONPATH": REPO}
    command = [sys.executable, "-m", "keras_vitmix.cli", "train", "--model", str(run / "model.keras"), "--epochs",
               "1", "--augment", "none", "--output", str(tmp_path), "--backend", other]
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
    # --attention serves the block's scores and the rollout beside the probabilities.
    assert cli.main([*arguments[:-1], str(tmp_path / "attention"), "--attention"]) == 0
    served_attention = tf.saved_model.load(str(tmp_path / "attention"))  # kept: its variables live with it
    outputs = served_attention.serve(tf.constant(images))
    from keras_vitmix import inspection

    scores = inspection.attention_model(model)(images.astype("float32"))
    assert sorted(outputs) == sorted(["probabilities", "attention_rollout", *(f"attention_{k}" for k in scores)])
    for name, value in scores.items():
        np.testing.assert_allclose(outputs[f"attention_{name}"].numpy(), keras.ops.convert_to_numpy(value), atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), served, atol=1e-5)
    assert outputs["attention_rollout"].shape == (2, 4, 4)
