"""`keras-vitmix predict`: the top classes of image files, by name, with probabilities."""

import numpy as np
import pytest
from PIL import Image

from keras_vitmix import cli
from keras_vitmix.applications import ViT

NAMES = ["cat", "dog", "bird"]
BIAS = np.array([0.0, 2.0, 1.0])
# The head's kernel is zero, so every image gets softmax(BIAS).
EXPECTED = np.exp(BIAS) / np.exp(BIAS).sum()  # 9.00%, 66.52%, 24.47%


def saved_model(path, class_names=None, classifier_activation="softmax"):
    model = ViT(patch_size=4, hidden_dim=16, num_layers=1, num_heads=2, input_shape=(16, 16, 3), classes=3,
                classifier_activation=classifier_activation)
    head = model.get_layer("head")
    head.set_weights([np.zeros_like(head.get_weights()[0]), BIAS.astype("float32")])
    if class_names is not None:
        model.metadata = {"class_names": class_names}
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / "small.png")
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / "large.png")
    return [str(folder / "small.png"), str(folder / "large.png")]


def shown(output):
    """{image: [(name, percent), ...]} from predict's output."""
    result, image = {}, None
    for line in output.splitlines():
        if line.startswith("  "):
            percent, name = line.split()
            result[image].append((name, float(percent.rstrip("%"))))
        else:
            image = line
            result[image] = []
    return result


def test_predict_prints_the_top_classes_by_name(tmp_path, images, capsys):
    model = saved_model(tmp_path / "named.keras", class_names=NAMES)
    assert cli.main(["predict", "--model", model, *images, "--top", "2"]) == 0
    captured = capsys.readouterr()
    expected = [("dog", round(EXPECTED[1] * 100, 2)), ("bird", round(EXPECTED[2] * 100, 2))]
    assert shown(captured.out) == {images[0]: expected, images[1]: expected}
    assert expected == [("dog", 66.52), ("bird", 24.47)]
    # One resize, said once, naming the image and its size; nothing said about names.
    assert captured.err.count("resized") == 1
    assert "resized 1 of 2 images to the model's input, 16x16" in captured.err
    assert f"{images[1]} (20x24)" in captured.err and "class names" not in captured.err


def test_predict_without_class_names_shows_indices_and_says_so_once(tmp_path, images, capsys):
    model = saved_model(tmp_path / "plain.keras")
    assert cli.main(["predict", "--model", model, *images, "--top", "10"]) == 0
    captured = capsys.readouterr()
    percents = [round(p * 100, 2) for p in EXPECTED]
    expected = [("1", percents[1]), ("2", percents[2]), ("0", percents[0])]  # --top 10 of 3 classes: 3
    assert shown(captured.out) == {images[0]: expected, images[1]: expected}
    assert captured.err.count("has no class names: showing class indices") == 1


def test_predict_applies_a_softmax_to_logits_and_says_so(tmp_path, images, capsys):
    model = saved_model(tmp_path / "logits.keras", class_names=NAMES, classifier_activation=None)
    assert cli.main(["predict", "--model", model, images[0], "--top", "1"]) == 0
    captured = capsys.readouterr()
    assert shown(captured.out) == {images[0]: [("dog", 66.52)]}
    assert captured.err.count("not probabilities (logits?): shown after a softmax") == 1


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--top", "0"], "--top must be at least 1. Received: --top 0"),
        (["missing.png"], "No such image file. Received: missing.png"),
    ],
)
def test_predict_refuses_bad_input_in_one_line(tmp_path, images, capsys, arguments, message):
    model = saved_model(tmp_path / "named.keras", class_names=NAMES)
    assert cli.main(["predict", "--model", model, images[0], *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert cli.main(["predict", "--model", str(tmp_path / "none.keras"), images[0]]) == 2
    assert "No such model file" in capsys.readouterr().err
