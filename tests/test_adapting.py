"""Pretrained weights reach `train` from each source, and linear probes (issue #36).

`keras_vitmix.pretrained` loads a `.keras`, a `.weights.h5` or a timm file into the
network built for the data: everything but the head must fit; a new head starts at
zero; another image size resamples the position embedding. `freeze="backbone"` trains
the classifier alone and saves checkpoints that reload trainable.
"""

import importlib.util
import json

import keras
import numpy as np
import pytest

from keras_vitmix import pretrained, saving, training
from keras_vitmix.datasets.arrays import load_arrays
from keras_vitmix.layers import resample_position_embedding
from keras_vitmix.training_network import build_network
from tests.small_models import small
from tests.test_training import Kill


def _perturbed(model, seed=0):
    """Seeded noise on every weight, so that a copy that missed one shows."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" in str(variable.dtype):
            value = keras.ops.convert_to_numpy(variable)
            variable.assign((value + rng.normal(0, 0.1, value.shape)).astype(value.dtype))
    return model


def _values(model):
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def _is_head(path):
    return path.split("/")[0] in pretrained.HEADS


def _digits(classes=5, size=16, first=0):
    """The digits of `classes` classes from `first`, relabelled from 0 and named, at
    `size` px, as train's arrays."""
    splits = {"class_names": [str(first + label) for label in range(classes)]}
    for split in ("train", "validation", "test"):
        images, labels, _ = load_arrays("digits", split, image_size=size)
        keep = (labels >= first) & (labels < first + classes)
        splits[split] = (images[keep], labels[keep] - first)
    return splits


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """A 10-class small ViT at 16 px, its weights perturbed, saved as .keras and .weights.h5."""
    folder = tmp_path_factory.mktemp("source")
    model = _perturbed(small("ViT"))
    model.save(folder / "vit.keras")
    model.save_weights(folder / "vit.weights.h5")
    return folder, _values(model)


def test_a_keras_file_transfers_to_other_classes_and_another_image_size(vit_file):
    folder, source = vit_file
    network, loaded = build_network(small("ViT"), (24, 24), 5, None, weights=str(folder / "vit.keras"))
    assert loaded == {"weights": str(folder / "vit.keras"), "head": "new"}
    values = _values(network)
    assert set(values) == set(source)
    for path, value in values.items():
        if _is_head(path):
            assert value.shape[-1] == 5 and not value.any(), path  # a new head, at zero
        elif path.endswith("position_embeddings"):  # 8x8 patches -> 12x12, the class token's entry kept
            expected = resample_position_embedding(source[path], (12, 12), (8, 8), 1)
            np.testing.assert_allclose(value, keras.ops.convert_to_numpy(expected), atol=1e-6)
            assert value.shape == (1, 145, 96)
        else:
            np.testing.assert_array_equal(value, source[path], err_msg=path)
    probabilities = keras.ops.convert_to_numpy(network(np.zeros((2, 24, 24, 3), "float32")))
    np.testing.assert_allclose(probabilities, 0.2, atol=1e-6)  # a zero head: every class alike


def test_a_keras_file_with_the_same_classes_keeps_its_head(vit_file):
    folder, source = vit_file
    network, loaded = build_network("vit_cifar_patch4_32", (16, 16), 10, dict(small_config()), weights=str(folder / "vit.keras"))
    assert loaded["head"] == "loaded"
    for path, value in _values(network).items():
        np.testing.assert_array_equal(value, source[path], err_msg=path)


def small_config():
    from tests.small_models import FAMILIES

    return FAMILIES["ViT"][1]


def test_a_weights_file_loads_the_same_architecture_with_a_new_head(vit_file):
    folder, source = vit_file
    network, loaded = build_network(small("ViT"), (16, 16), 3, None, weights=str(folder / "vit.weights.h5"))
    assert loaded["head"] == "new"
    for path, value in _values(network).items():
        if _is_head(path):
            assert not value.any()
        else:
            np.testing.assert_array_equal(value, source[path], err_msg=path)


def test_weights_of_another_architecture_are_refused_naming_the_file(vit_file):
    folder, _ = vit_file
    deeper = small("ViT", num_layers=3)
    with pytest.raises(ValueError, match=r"another architecture \(num_layers: 2 -> 3\).*vit\.keras"):
        build_network(deeper, (16, 16), 10, None, weights=str(folder / "vit.keras"))
    with pytest.raises(ValueError, match=r"does not fit the model.*block_2.*vit\.weights\.h5"):
        build_network(deeper, (16, 16), 10, None, weights=str(folder / "vit.weights.h5"))
    with pytest.raises(ValueError, match=r"those of a ViT and the model is a MLPMixer.*vit\.keras"):
        build_network(small("MLPMixer"), (16, 16), 10, None, weights=str(folder / "vit.keras"))


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
@pytest.mark.parametrize("classes, head", [(10, "loaded"), (4, "new")])
def test_a_timm_file_loads_with_its_head_where_the_classes_agree(classes, head, tmp_path):
    from keras_vitmix.weights import import_timm

    timm = import_timm()
    import torch

    torch.manual_seed(0)
    reference = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=2, embed_dim=96, depth=2, num_heads=6,
        mlp_ratio=2, num_classes=10,
    )
    path = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), path)
    network, loaded = build_network(small("ViT"), (16, 16), classes, None, weights=str(path))
    assert loaded == {"weights": str(path), "head": head}
    kernel = keras.ops.convert_to_numpy(network.get_layer("head").kernel)
    if head == "loaded":
        np.testing.assert_allclose(kernel, reference.head.weight.detach().numpy().T, atol=1e-7)
    else:
        assert kernel.shape == (96, 4) and not kernel.any()
    with pytest.raises(ValueError, match=r"(?s)does not match.*Received: weights=.*vit\.pth"):
        build_network(small("ViT", num_layers=3), (16, 16), classes, None, weights=str(path))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(weights="missing.keras"), ValueError, r"does not exist\. Received: weights='missing\.keras'"),
        (dict(weights="weights.txt"), ValueError, r"Received: weights='weights\.txt'"),
        (dict(weights=3), TypeError, r"Received: weights=3"),
        (dict(freeze="head"), ValueError, r"Received: freeze='head'"),
        (dict(layer_decay=0.0), ValueError, r"Received: layer_decay=0\.0"),
        (dict(layer_decay=1.5), ValueError, r"Received: layer_decay=1\.5"),
        (dict(freeze="backbone", layer_decay=0.7), ValueError, r"layer_decay=0\.7"),
    ],
)
def test_bad_adaptation_arguments_fail_before_any_data_is_read(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        training.train("vit_cifar_patch4_32", "no-such-dataset", output_dir=str(tmp_path / "run"), **kwargs)
    assert not (tmp_path / "run").exists()


def test_timm_weights_need_a_registered_name():
    with pytest.raises(ValueError, match=r"weights='timm' names timm's checkpoint.*Received: model"):
        build_network(small("ViT"), (16, 16), 10, None, weights="timm")


def test_a_linear_probe_trains_the_head_alone_and_saves_a_trainable_model(tmp_path):
    source = _perturbed(small("ConvMixer"))
    source.save(tmp_path / "convmixer.keras")
    run = tmp_path / "probe"
    metrics = training.train(
        small("ConvMixer"), _digits(), weights=str(tmp_path / "convmixer.keras"), freeze="backbone", epochs=1,
        batch_size=64, output_dir=str(run), verbose=0,
    )
    assert metrics["recipe"] == "finetune" and metrics["freeze"] == "backbone" and metrics["layer_decay"] == 1.0
    assert metrics["weights"] == {"weights": str(tmp_path / "convmixer.keras"), "head": "new"}
    trained = saving.load_model(run / "last.keras")
    assert trained.trainable and all(layer.trainable for layer in trained.layers)
    before, after = _values(source), _values(trained)
    for path, value in after.items():
        if _is_head(path):
            assert value.any(), path  # the zero head moved
        else:  # BatchNorm's moving statistics included
            np.testing.assert_array_equal(value, before[path], err_msg=path)
    assert json.loads((run / "metrics.json").read_text())["weights"]["head"] == "new"


def test_fine_tuning_from_a_keras_file_uses_the_finetune_recipe_and_layer_decay(tmp_path):
    source = _perturbed(small("ViT"))
    source.save(tmp_path / "vit.keras")
    metrics = training.train(
        small("ViT"), _digits(), weights=str(tmp_path / "vit.keras"), epochs=1, batch_size=64,
        output_dir=str(tmp_path / "run"), verbose=0,
    )
    assert metrics["recipe"] == "finetune" and 0 < metrics["layer_decay"] < 1
    assert metrics["weights"]["head"] == "new"
    trained = saving.load_model(tmp_path / "run" / "last.keras")
    assert trained.output_shape[-1] == 5
    assert type(trained.optimizer).__name__ == "LayerDecayAdamW"
    assert trained.optimizer.get_config()["layer_decay"] == metrics["layer_decay"]


def test_a_head_is_kept_for_the_same_classes_only_not_for_as_many(tmp_path):
    """Two halves of the digits, each relabelled 0-4: the heads have one shape, and the
    names the source run recorded tell them apart."""
    common = dict(epochs=1, batch_size=64, verbose=0)
    training.train(small("ViT", classes=5), _digits(first=0), output_dir=str(tmp_path / "source"), **common)
    source = str(tmp_path / "source" / "model.keras")
    assert saving.class_names(saving.load_model(source)) == ["0", "1", "2", "3", "4"]
    _, same = build_network(small("ViT"), (16, 16), 5, None, weights=source, class_names=("0", "1", "2", "3", "4"))
    _, other = build_network(small("ViT"), (16, 16), 5, None, weights=source, class_names=("5", "6", "7", "8", "9"))
    _, unnamed = build_network(small("ViT"), (16, 16), 5, None, weights=source)
    assert (same["head"], other["head"], unnamed["head"]) == ("loaded", "new", "loaded")
    metrics = training.train(
        small("ViT"), _digits(first=5), weights=source, output_dir=str(tmp_path / "target"), **common
    )
    assert metrics["weights"]["head"] == "new" and metrics["metadata"]["class_names"] == ["5", "6", "7", "8", "9"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A 5-class ConvMixer teacher at 16 px, trained one epoch on the digits."""
    folder = tmp_path_factory.mktemp("teacher")
    training.train(
        small("ConvMixer", classes=5), _digits(), epochs=1, batch_size=64, output_dir=str(folder), verbose=0,
    )
    return folder / "model.keras"


def test_a_deit_student_distills_through_train_and_a_killed_run_resumes(teacher_file, tmp_path):
    teacher_before = _values(saving.load_model(teacher_file))
    student = small("ViT", classes=5, use_distillation_token=True)
    common = dict(teacher=str(teacher_file), epochs=3, batch_size=64, output_dir=str(tmp_path), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        training.train(student, _digits(), extra_callbacks=[Kill(after=1)], **common)
    metrics = training.train(student, _digits(), **common)
    assert metrics["resumed"] is True and metrics["epochs_run_now"] == 2
    assert metrics["teacher"] == str(teacher_file) and metrics["distillation"] == "hard"
    assert metrics["distillation_alpha"] == 0.5 and metrics["distillation_tau"] == 1.0
    for path, value in _values(saving.load_model(teacher_file)).items():
        np.testing.assert_array_equal(value, teacher_before[path], err_msg=path)
    trained = saving.load_model(tmp_path / "model.keras")
    images = _digits()["test"][0][:8].astype("float32")
    head = keras.Model(trained.inputs, [trained.get_layer("head").output, trained.get_layer("head_dist").output])
    logits = [keras.ops.convert_to_numpy(x) for x in head(images)]
    mean = (logits[0] + logits[1]) / 2
    expected = np.exp(mean - mean.max(-1, keepdims=True))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(trained(images)), expected / expected.sum(-1, keepdims=True), atol=1e-5
    )
    assert not np.allclose(logits[0], logits[1])  # two heads, trained on two targets


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(distillation="hard"), r"needs a teacher.*distillation='hard' with teacher=None"),
        (dict(distillation_alpha=0.3), r"needs a teacher.*distillation_alpha=0\.3"),
        (dict(teacher="missing/teacher.keras"), r"No such model file\. Received: teacher='missing/teacher\.keras'"),
        (dict(teacher="x.keras", distillation="warm"), r"Received: distillation='warm'"),
        (dict(teacher="x.keras", distillation_alpha=2), r"Received: alpha=2"),
    ],
)
def test_bad_distillation_arguments_fail_before_any_data_is_read(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        training.train("vit_cifar_patch4_32", "no-such-dataset", output_dir=str(tmp_path / "run"), **kwargs)
    assert not (tmp_path / "run").exists()


def test_a_teacher_of_other_classes_is_refused_naming_it(teacher_file, tmp_path):
    with pytest.raises(ValueError, match=r"teacher predicts 5 classes and the student 3.*Received: teacher"):
        training.train(
            small("ViT", classes=3), _digits(classes=3),
            teacher=str(teacher_file), epochs=1, output_dir=str(tmp_path / "run"), verbose=0,
        )


def test_a_named_teacher_whose_checkpoint_needs_a_new_head_is_refused(monkeypatch):
    """A registered name is built with timm's weights; where the checkpoint's classes are
    not the data's its head is new (zero), and a zero head teaches nothing."""
    from keras_vitmix import distillation
    from keras_vitmix.weights import zero_head

    built = {}

    def zero_headed(teacher, **kwargs):
        built.update(kwargs)
        model = small("ViT", classes=5)
        zero_head(model)
        return model

    monkeypatch.setattr(distillation, "resolve_teacher", zero_headed)
    with pytest.raises(ValueError, match=r"does not predict the data's 5 classes.*Received: teacher='vit_tiny_patch16_224'"):
        training._teacher("vit_tiny_patch16_224", 5, (16, 16))
    assert built == {"weights": "timm", "classes": 5, "input_shape": (16, 16, 3)}


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_timm_weights_reach_train_with_a_new_zero_head_and_resampled_positions(monkeypatch, tmp_path):
    """weights="timm" through train: what timm fetches (here a 2-block DeiT-Ti, offline)
    is loaded into the network built for 5 classes at 32 px."""
    from keras_vitmix import weights as weights_module
    from tests import timm_utils as tu

    reference = tu.reference("deit_tiny_patch16_224")
    monkeypatch.setattr(weights_module, "_fetch", lambda cfg: reference)
    metrics = training.train(
        "deit_tiny_patch16_224", _digits(size=32), weights="timm", model_overrides={"num_layers": tu.DEPTH},
        image_size=32, epochs=1, batch_size=64, learning_rate=1e-12, output_dir=str(tmp_path), verbose=0,
    )
    assert metrics["weights"] == {"weights": "timm", "head": "new"} and metrics["recipe"] == "finetune"
    trained = saving.load_model(tmp_path / "last.keras")
    assert trained.output_shape == (None, 5) and trained.get_config()["normalization"] == "imagenet"
    expected = resample_position_embedding(reference.pos_embed.detach().numpy(), (2, 2), (14, 14), 1)
    np.testing.assert_allclose(  # a learning rate of 1e-12 leaves the loaded values as they were
        keras.ops.convert_to_numpy(trained.get_layer("patch_embedding").position_embeddings),
        keras.ops.convert_to_numpy(expected), atol=1e-6,
    )
