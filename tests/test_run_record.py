"""Issue #33: a run's numbers are what they say. The test score comes from a split never
used for selection, evaluate scores a run's model as train did, options given with a
model apply or are refused, class names and frozen layers travel in the `.keras` file,
a failed run leaves no folder and a piped log gets no progress bars."""

import io
import json
import os
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

from keras_vitmix import saving, training
from keras_vitmix.evaluation import evaluate

from tests.small_models import small

CLASSES = ("cat", "dog", "frog", "ship")
QUICK = dict(epochs=2, batch_size=16, augment="none", verbose=0)


def colour_folder(root, per_class=20, size=16, seed=0):
    """train/<class>/*.png of noisy flat colours, one hue a class: learnable in 2 epochs."""
    rng = np.random.RandomState(seed)
    hues = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]])
    for label, name in enumerate(CLASSES):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(hues[label] + rng.randint(-30, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def colour_arrays(per_class=20, size=16, seed=0):
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(4), per_class).astype("int32")
    images = np.clip(rng.randint(-30, 30, size=(len(labels), size, size, 3)) + 60 * labels[:, None, None, None], 0, 255)
    return images.astype("uint8"), labels


@pytest.mark.parametrize("pipeline", ["device", "tf.data"])
def test_a_folder_run_is_tested_on_a_split_it_never_selected_on_and_evaluate_agrees(pipeline, tmp_path):
    data = colour_folder(tmp_path / "data")
    run = tmp_path / "run"
    metrics = training.train(
        small("ConvMixer", classes=4), str(data), output_dir=str(run), pipeline=pipeline, **QUICK
    )
    splits = metrics["metadata"]["splits"]
    # 20 a class: 2 for test and 2 for validation (10% each), 16 to train.
    assert (splits["train"]["examples"], splits["validation"]["examples"], splits["test"]["examples"]) == (64, 8, 8)
    assert metrics["test_examples"] == 8 and metrics["validation_examples"] == 8
    assert "test_accuracy" in metrics and "validation_accuracy" in metrics
    assert metrics["test_split"] != metrics["validation_split"]
    # Given the run's model alone, evaluate scores the run's test split as train did.
    evaluated = evaluate(str(run / "model.keras"))
    assert evaluated["dataset"] == str(data) and evaluated["split"] == "test"
    assert evaluated["examples"] == metrics["test_examples"]
    assert evaluated["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-7)
    validation = evaluate(str(run / "model.keras"), split="validation")
    assert validation["accuracy"] == pytest.approx(metrics["validation_accuracy"], abs=1e-7)


def test_evaluate_applies_the_runs_test_time_flip_unless_told(tmp_path):
    run = tmp_path / "run"
    data = colour_folder(tmp_path / "data")
    metrics = training.train(small("ConvMixer", classes=4), str(data), output_dir=str(run), test_time_flip=True, **QUICK)
    assert metrics["test_time_flip"] is True
    flipped = evaluate(str(run / "model.keras"))
    plain = evaluate(str(run / "model.keras"), test_time_flip=False)
    assert flipped["test_time_flip"] is True and plain["test_time_flip"] is False
    assert flipped["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-7)


def test_a_tiny_folder_says_it_has_no_test_split_instead_of_scoring_one(tmp_path, capsys):
    data = colour_folder(tmp_path / "data", per_class=2)
    metrics = training.train(small("ConvMixer", classes=4), str(data), output_dir=str(tmp_path / "run"), **QUICK)
    assert "test_accuracy" not in metrics and metrics["test_examples"] == 0
    assert "validation_accuracy" in metrics and "too few to give train, validation and test" in metrics["test_split"]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "no test score" in line and "test accuracy" not in line
    with pytest.raises(ValueError, match="test split of .* is empty"):
        evaluate(str(tmp_path / "run" / "model.keras"))


def test_arrays_hold_out_disjoint_test_and_validation_parts_or_report_no_test(tmp_path):
    images, labels = colour_arrays(per_class=20)
    metrics = training.train(small("ConvMixer", classes=4), (images, labels), output_dir=str(tmp_path / "a"), **QUICK)
    splits = metrics["metadata"]["splits"]
    assert (splits["train"]["examples"], splits["validation"]["examples"], splits["test"]["examples"]) == (64, 8, 8)
    given = {"train": (images[::2], labels[::2]), "validation": (images[1::2], labels[1::2])}
    metrics = training.train(small("ConvMixer", classes=4), given, output_dir=str(tmp_path / "b"), **QUICK)
    assert "test_accuracy" not in metrics and "'test'" in metrics["test_split"]


def test_class_names_and_the_dataset_travel_in_the_keras_file(tmp_path):
    data = colour_folder(tmp_path / "data")
    training.train(small("ConvMixer", classes=4), str(data), output_dir=str(tmp_path / "run"), **QUICK)
    for name in ("model.keras", "last.keras"):
        loaded = keras.saving.load_model(str(tmp_path / "run" / name))
        metadata = saving.model_metadata(loaded)
        assert saving.class_names(loaded) == list(CLASSES)
        assert metadata["dataset"] == str(data) and metadata["splits"]["seed"] == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["metadata"]["class_names"] == list(CLASSES)


def test_a_drop_path_rate_given_with_a_saved_model_is_applied_and_recorded(tmp_path):
    path = str(tmp_path / "given.keras")
    small("ViT", classes=4, drop_path_rate=0.0).save(path)
    metrics = training.train(path, colour_arrays(), output_dir=str(tmp_path / "run"), drop_path_rate=0.1, **QUICK)
    assert metrics["drop_path_rate"] == 0.1
    trained = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
    assert trained.get_config()["drop_path_rate"] == 0.1
    # Not given: the model keeps its own, and the record says what it trained with.
    metrics = training.train(path, colour_arrays(), output_dir=str(tmp_path / "run2"), **QUICK)
    assert metrics["drop_path_rate"] == 0.0


@pytest.mark.parametrize(
    "model, options, match",
    [
        (lambda: small("ConvMixer", classes=4), dict(drop_path_rate=0.1), "takes no \\['drop_path_rate'\\]"),
        (lambda: keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(4, "softmax")]),
         dict(drop_path_rate=0.1), "cannot be rebuilt .*drop_path_rate=0.1"),
        (lambda: small("ViT", classes=4), dict(image_size=24), "own input size .*image_size=24"),
    ],
)
def test_an_option_that_cannot_apply_to_a_given_model_is_refused(model, options, match, tmp_path):
    # A folder is read at image_size (arrays are refused earlier, being of one size).
    data = str(colour_folder(tmp_path / "data")) if "image_size" in options else colour_arrays()
    with pytest.raises(ValueError, match=match):
        training.train(model(), data, output_dir=str(tmp_path / "run"), **{**QUICK, **options})
    assert not (tmp_path / "run").exists()  # failed before its first epoch: no folder left


def test_frozen_layers_stay_frozen_and_reload_without_optimizer_warnings(tmp_path):
    model = small("ViT", classes=4)
    for layer in model.layers:
        layer.trainable = layer.name == "head"
    trainable = [w.path for w in model.trainable_weights]
    assert len(trainable) == 2  # the head's kernel and bias
    training.train(model, colour_arrays(), output_dir=str(tmp_path / "run"), **QUICK)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
    assert [w.path for w in loaded.trainable_weights] == trainable
    assert not loaded.get_layer("block_0").trainable and loaded.get_layer("head").trainable
    assert not [str(w.message) for w in caught if "variables" in str(w.message)]


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="No such folder|train/<class>"):
        training.train(small("ConvMixer", classes=4), str(tmp_path / "missing"), output_dir=str(tmp_path / "run"), **QUICK)
    assert not (tmp_path / "run").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError):
        training.train(small("ConvMixer", classes=4), str(tmp_path / "missing"), output_dir=str(tmp_path / "kept"), **QUICK)
    assert (tmp_path / "kept").is_dir()  # a folder it did not create is left alone


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch, capsys):
    assert training.fit_verbosity(0) == 0
    monkeypatch.setattr("sys.stdout", FakeTerminal())
    assert training.fit_verbosity("auto") == 1
    monkeypatch.undo()
    assert training.fit_verbosity("auto") == 2  # pytest captures: not a terminal
    training.train(small("ConvMixer", classes=4), colour_arrays(), output_dir=str(tmp_path / "run"),
                   **{**QUICK, "verbose": "auto"})
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "\x1b[" not in out and "\r" not in out and "\b" not in out
