"""The training recipe and `train()`: accuracy on real digits, resuming, bad input."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from keras_vitmix import training

from tests.small_models import FAMILIES, small

RECIPE = dict(epochs=25, batch_size=64, learning_rate=3e-3, verbose=0)


def history_rows(folder):
    with open(os.path.join(folder, "history.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


# The attention and Mixer families train with the recipe's light augmentation (a random
# crop after 2 px of zero padding; digits are not flipped). Test accuracy reached over
# seeds and backends (360 digits, 25 epochs): MLP-Mixer 97.5-98.3%, ViT (96 wide)
# 96.9-98.9%, Mixer->ViT (96 wide, as ViT) 97.5-98.6% (jax seeds 0-1, tensorflow and torch seed
# 0; at 64 wide it fell to 95.8% in CI; benchmarks/RESULTS.md).
# They reach 100% training accuracy and overfit the 1,257 training digits; they average
# about 98% but a seed can land a few images under 97%, so their floor is 96% (it was 93%
# without augmentation). The two convolutional families fit digits without augmentation
# (98.9%, jax) and lose to it at this budget (ConvMixer 96.1% with it, jax), so they train
# without it and keep the 97% floor.
AUGMENT = {"ConvMixer": False, "HybridConvMixerMixer": False, "ViT": True, "MLPMixer": True, "HybridMixerViT": True}
# ViT is the least steady: 343-356 right of 360 over runs, its lowest (95.3%) under torch
# in a full `make test`, so its floor is 94% (339); a broken model lands far below (10%).
# Mixer->ViT fell under 96% under tensorflow in a full `make test` (2026-11-23), where the
# same seed alone gave 350 and 351 (TensorFlow's CPU reductions are not deterministic), so
# it shares ViT's floor. Six variants of the recipe moved ViT's mean by no more than the
# seed spread (benchmarks/RESULTS.md, "Digits: the small ViT against variants").
MIN_ACCURACY = {"ConvMixer": 0.97, "HybridConvMixerMixer": 0.97, "ViT": 0.94, "MLPMixer": 0.96, "HybridMixerViT": 0.94}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_learns_digits(family, tmp_path):
    metrics = training.train(small(family), "digits", output_dir=str(tmp_path), augment=AUGMENT[family], **RECIPE)
    accuracy = metrics["test_accuracy"]
    # 1e-6: the accuracy is a float32.
    assert accuracy >= MIN_ACCURACY[family] - 1e-6, f"{family}: {accuracy:.4f} ({round(accuracy * 360)} of 360)"
    assert metrics["test_examples"] == 360 and metrics["family"] == family
    for name in ("model.keras", "last.keras", "history.csv", "curves.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert len(history_rows(tmp_path)) == RECIPE["epochs"]
    assert not (tmp_path / "backup").exists()  # removed once the run completed


class Kill(keras.callbacks.Callback):
    """Stands in for a killed process: stops the run after `epoch` epochs."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            raise KeyboardInterrupt(f"killed after epoch {epoch + 1}")


class FirstEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self, "first"):
            self.first = epoch


def test_killed_run_resumes_at_the_epoch_it_reached(tmp_path):
    common = dict(epochs=4, batch_size=128, output_dir=str(tmp_path), verbose=0, augment=False)
    with pytest.raises(KeyboardInterrupt):
        training.train(small("ConvMixer"), "digits", extra_callbacks=[Kill(after=2)], **common)
    assert [row["epoch"] for row in history_rows(tmp_path)] == ["0", "1"]
    assert (tmp_path / "backup").is_dir() and (tmp_path / "last.keras").exists()
    first = FirstEpoch()
    metrics = training.train(small("ConvMixer"), "digits", extra_callbacks=[first], **common)
    assert first.first == 2  # 0-based: the third epoch
    assert metrics["resumed"] is True and metrics["epochs_run_now"] == 2
    assert [row["epoch"] for row in history_rows(tmp_path)] == ["0", "1", "2", "3"]


class SaveCounter:
    """Stands in for a model: records which epoch each save came from."""

    def __init__(self):
        self.epoch, self.saved = None, []

    def save(self, path):
        open(path, "w").close()
        self.saved.append(self.epoch)


@pytest.mark.parametrize("save_ties, expected", [(False, [0, 2]), (True, [0, 1, 2, 4])])
def test_best_checkpoint_on_tied_validation_accuracy(save_ties, expected, tmp_path):
    from keras_vitmix.training_callbacks import AtomicCheckpoint

    checkpoint = AtomicCheckpoint(str(tmp_path / "model.keras"), monitor="val_accuracy", save_ties=save_ties)
    checkpoint.set_model(SaveCounter())
    for epoch, accuracy in enumerate([0.9, 0.9, 0.95, 0.94, 0.95]):
        checkpoint.model.epoch = epoch
        checkpoint.on_epoch_end(epoch, {"val_accuracy": accuracy})
    assert checkpoint.model.saved == expected and checkpoint.best == 0.95
    assert (tmp_path / "model.keras").exists()


def test_recipe_weight_decay_schedule_and_loss():
    model = small("ViT", use_class_token=True, pooling="token")
    training.compile_for_training(model, total_steps=100, learning_rate=1e-3, warmup_steps=10)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    for variable in model.trainable_variables:
        spared = variable.name in ("bias", "gamma", "beta", "position_embeddings", "class_token")
        assert (variable.path not in decayed) == spared, variable.path
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    rates = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 5, 10, 55, 100)]
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-6)
    assert optimizer.global_clipnorm == 1.0
    # Label-smoothed cross-entropy, for integer and one-hot labels, against NumPy.
    loss = training.ClassificationLoss(label_smoothing=0.1)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    targets = np.eye(3)[[0, 2]] * 0.9 + 0.1 / 3
    expected = np.mean(-np.sum(targets * np.log(probs), axis=1))
    for labels in (np.array([0, 2]), np.eye(3, dtype=np.float32)[[0, 2]]):
        np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss(labels, probs))), expected, rtol=1e-5)


class EpochWeights(keras.callbacks.Callback):
    """Records, at each epoch end, the model's weights and the optimizer's EMA slots."""

    def __init__(self):
        super().__init__()
        self.model_weights, self.slots = [], []

    def on_epoch_end(self, epoch, logs=None):
        numpy = keras.ops.convert_to_numpy
        self.model_weights.append([numpy(v) for v in self.model.trainable_weights])
        self.slots.append([numpy(v) for v in self.model.optimizer._model_variables_moving_average])


def test_ema_validates_checkpoints_and_keeps_the_average(tmp_path):
    model, seen = small("ConvMixer"), EpochWeights()
    training.train(
        model, "digits", epochs=2, batch_size=128, augment=False, output_dir=str(tmp_path), verbose=0,
        ema_momentum=0.9, extra_callbacks=[seen],
    )
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.9)
    # After epoch 1 the model holds the average and the slots the raw weights (swapped for
    # the checkpoints); after the last epoch both hold the average, and so does the model.
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(seen.model_weights[0], seen.slots[0]))
    for average, slot, final in zip(seen.model_weights[1], seen.slots[1], model.trainable_weights):
        np.testing.assert_array_equal(average, slot)
        np.testing.assert_array_equal(average, keras.ops.convert_to_numpy(final))
    last = keras.saving.load_model(tmp_path / "last.keras")
    for average, saved in zip(seen.model_weights[1], last.trainable_weights):
        np.testing.assert_array_equal(average, keras.ops.convert_to_numpy(saved))
    # Validation saw the averaged weights: the checkpoint reproduces the logged accuracy.
    from keras_vitmix import datasets

    validation, _ = datasets.load("digits", "validation", image_size=(16, 16), batch_size=128)
    logged = float(history_rows(tmp_path)[-1]["val_accuracy"])
    assert last.evaluate(validation, return_dict=True, verbose=0)["accuracy"] == pytest.approx(logged, abs=1e-6)


def test_mixed_precision_training(tmp_path):
    # One epoch is all warmup and can end at chance (torch did, in CI); three epochs at the
    # test recipe's rate reach 86-93% on every backend, so 70% says bfloat16 training learns.
    metrics = training.train(
        small("HybridMixerViT"), "digits", epochs=3, batch_size=64, learning_rate=3e-3,
        mixed_precision=True, augment=False, output_dir=str(tmp_path), verbose=0,
    )
    assert np.isfinite(metrics["test_loss"]) and metrics["test_accuracy"] >= 0.7, metrics
    assert keras.config.dtype_policy().name == "float32"  # restored


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dataset="no-such-dataset"), "Unknown dataset"),
        (dict(batch_size=0), "Received: batch_size=0"),
        (dict(epochs=0), "Received: epochs=0"),
        (dict(model="seed_vit", image_size=20), "patch_size=6, image size=\\(20, 20\\)"),
        (dict(model="seed_vit", model_overrides=dict(classes=7)), "Received: classes=7"),
        (dict(model="no_such_model"), "Unknown model name"),
        (dict(distribute="model_parallel"), "Received: distribute='model_parallel'"),
        (dict(ema_momentum=1.0), "Received: ema_momentum=1.0"),
    ],
)
def test_bad_input_fails_before_training(kwargs, match, tmp_path):
    arguments = dict(model="seed_convmixer", dataset="digits", epochs=1, output_dir=str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match=match):
        training.train(**{**arguments, **kwargs})
    assert not (tmp_path / "history.csv").exists()


def test_model_with_other_class_count(tmp_path):
    with pytest.raises(ValueError, match="3 classes and the dataset 10"):
        training.train(small("ConvMixer", classes=3), "digits", epochs=1, output_dir=str(tmp_path))
    empty = tmp_path / "empty" / "train"
    empty.mkdir(parents=True)
    with pytest.raises(ValueError, match="no class sub-folders"):
        training.train("seed_convmixer", str(tmp_path / "empty"), epochs=1, output_dir=str(tmp_path / "run"))


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch has neither XLA nor keras.distribution")
def test_torch_refuses_xla_and_data_parallel():
    with pytest.raises(ValueError, match="tensorflow and jax backends, not torch"):
        training.compile_for_training(small("ConvMixer"), total_steps=10, jit_compile=True)
    refusal = "no distribution API. Received: distribute=.data_parallel. with KERAS_BACKEND=torch"
    with pytest.raises(ValueError, match=refusal):
        training.distribution_scope("data_parallel")


@pytest.mark.parametrize("min_interval, drawn", [(0.0, [1, 2, 3]), (1e9, [1, 3])])
def test_curves_redraw_at_most_every_min_interval_and_at_the_end(min_interval, drawn, tmp_path, monkeypatch):
    from keras_vitmix import plotting, training_callbacks

    epochs_drawn = []
    real = plotting.training_curves
    monkeypatch.setattr(plotting, "training_curves", lambda h: epochs_drawn.append(len(h["loss"])) or real(h))
    csv_path, png_path = str(tmp_path / "history.csv"), str(tmp_path / "curves.png")
    curves = training_callbacks.TrainingCurves(csv_path, png_path, min_interval=min_interval)
    with open(csv_path, "w") as handle:
        handle.write("epoch,loss,val_loss\n")
    for epoch in range(3):
        with open(csv_path, "a") as handle:
            handle.write(f"{epoch},{1.0 / (epoch + 1)},{2.0 / (epoch + 1)}\n")
        curves.on_epoch_end(epoch)
    curves.on_train_end()
    assert epochs_drawn == drawn  # the first epoch, then (throttled) none until the end
    assert os.path.getsize(png_path) > 0 and not os.path.exists(png_path[:-4] + ".tmp.png")


# Runs in a fresh interpreter: what a user does with a run folder.
RELOAD = """
import json, sys
import numpy as np
import keras, keras_vitmix

data, report = np.load(sys.argv[1]), {}
for path in sys.argv[2:]:
    model = keras.saving.load_model(path)
    scores = model.evaluate(data["x"], data["y"], batch_size=64, return_dict=True, verbose=0)
    report[path] = dict(
        compiled=model.compiled,
        loss=type(model.loss).__name__,
        label_smoothing=model.loss.label_smoothing,
        optimizer=type(model.optimizer).__name__,
        iterations=int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        scores={k: float(v) for k, v in scores.items()},
    )
assert "keras_vitmix.training" not in sys.modules  # loaded without the training module
print("REPORT" + json.dumps(report))
"""


def test_run_files_reload_compiled_after_import_keras_vitmix_alone(tmp_path):
    import subprocess
    import sys

    from keras_vitmix import datasets

    training.train(
        small("ConvMixer", hidden_dim=16, num_layers=1), "digits", epochs=1, batch_size=128, augment=False,
        output_dir=str(tmp_path), verbose=0,
    )
    test, _ = datasets.load("digits", "test", image_size=(16, 16), batch_size=360)
    x, y = (np.asarray(t) for t in next(iter(test)))
    np.savez(tmp_path / "test.npz", x=x, y=y)
    paths = [str(tmp_path / name) for name in ("model.keras", "last.keras")]
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path / "test.npz"), *paths],
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("REPORT"))[len("REPORT"):])
    for path in paths:
        here = keras.saving.load_model(path)  # in this process, keras_vitmix.training is imported
        expected = here.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
        report = reports[path]
        assert report["compiled"] and report["loss"] == "ClassificationLoss" and report["label_smoothing"] == 0.1
        iterations = int(keras.ops.convert_to_numpy(here.optimizer.iterations))
        assert report["optimizer"] == "AdamW" and report["iterations"] == iterations > 0, report
        assert sorted(report["scores"]) == sorted(expected) == ["accuracy", "loss", "top5"], report
        for key, value in expected.items():
            assert report["scores"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (path, key, report)
