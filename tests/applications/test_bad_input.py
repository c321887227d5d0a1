"""Bad input gets a ValueError/TypeError naming what was received and what was expected."""

import keras
import numpy as np
import pytest

from keras_vitmix.applications import (
    ConvMixer,
    HybridConvMixerMixer,
    HybridMixerViT,
    MLPMixer,
    ViT,
    create_model,
)

SMALL = {
    ViT: dict(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2),
    MLPMixer: dict(patch_size=4, hidden_dim=32, num_layers=1),
    ConvMixer: dict(hidden_dim=16, num_layers=1, patch_size=4, kernel_size=3),
    HybridMixerViT: dict(mixer_depth=1, attention_depth=1, patch_size=4, hidden_dim=32, num_heads=2),
    HybridConvMixerMixer: dict(conv_depth=1, mixer_depth=1, patch_size=4, hidden_dim=16, kernel_size=3),
}
FAMILIES = list(SMALL)


def small(family, **overrides):
    return family(**{**SMALL[family], "input_shape": (32, 32, 3), "classes": 5, **overrides})


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(ValueError) as info:
        create_model("vit_tiny_patch16_244")
    message = str(info.value)
    assert "vit_tiny_patch16_244" in message and "vit_tiny_patch16_224" in message
    with pytest.raises(TypeError, match="Received: name=3"):
        create_model(3)


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError, match="num_blocks"):
        create_model("seed_vit", num_blocks=3)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_patch_size_must_divide_the_image(family):
    with pytest.raises(ValueError) as info:
        small(family, patch_size=16, input_shape=(225, 225, 3))
    message = str(info.value)
    assert "patch_size=16" in message and "225" in message


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_wrong_channel_count(family):
    model = small(family)
    gray = np.zeros((1, 32, 32, 1), "float32")
    with pytest.raises(ValueError) as info:
        model(gray)
    message = str(info.value)
    assert "(None, 32, 32, 3)" in message and "1, 32, 32, 1" in message
    with pytest.raises(ValueError, match=r"3 channels. Received: input_shape=\(32, 32, 1\)"):
        small(family, input_shape=(32, 32, 1))
    # Without the RGB preprocessing any channel count is accepted.
    gray_model = small(family, input_shape=(32, 32, 1), include_preprocessing=False)
    assert keras.ops.convert_to_numpy(gray_model(gray)).shape == (1, 5)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_wrong_image_size_at_call_time(family):
    model = small(family)
    with pytest.raises(ValueError, match=r"\(None, 32, 32, 3\)"):
        model(np.zeros((1, 64, 64, 3), "float32"))


@pytest.mark.parametrize("family", [ViT, HybridMixerViT], ids=lambda f: f.__name__)
def test_token_pooling_needs_a_class_token(family):
    with pytest.raises(ValueError, match="Received: pooling='token'"):
        small(family, use_class_token=False, pooling="token")


@pytest.mark.parametrize("family", [MLPMixer, ConvMixer, HybridConvMixerMixer], ids=lambda f: f.__name__)
def test_token_pooling_without_tokens(family):
    with pytest.raises(ValueError, match="Received: pooling='token'"):
        small(family, pooling="token")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_head_needs_pooling(family):
    with pytest.raises(ValueError, match="Received: pooling=None"):
        small(family, include_top=True, pooling=None)
    with pytest.raises(ValueError, match="Received: pooling='mean'"):
        small(family, pooling="mean")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("classes", [0, -3])
def test_classes_must_be_positive(family, classes):
    with pytest.raises(ValueError, match=f"Received: classes={classes}"):
        small(family, classes=classes)


@pytest.mark.parametrize(
    "family, argument",
    [
        (ViT, "num_layers"),
        (MLPMixer, "num_layers"),
        (ConvMixer, "num_layers"),
        (HybridMixerViT, "mixer_depth"),
        (HybridMixerViT, "attention_depth"),
        (HybridConvMixerMixer, "conv_depth"),
        (HybridConvMixerMixer, "mixer_depth"),
    ],
)
def test_negative_depth(family, argument):
    with pytest.raises(ValueError, match=f"Received: {argument}=-1"):
        small(family, **{argument: -1})


@pytest.mark.parametrize("family", [ViT, MLPMixer, ConvMixer], ids=lambda f: f.__name__)
def test_zero_depth(family):
    with pytest.raises(ValueError, match="at least one block"):
        small(family, num_layers=0)


def test_hybrids_accept_zero_on_one_side():
    model = small(HybridMixerViT, mixer_depth=0, attention_depth=1)
    assert [layer.name for layer in model.layers if layer.name.startswith("block_")] == ["block_0"]
    with pytest.raises(ValueError, match="at least one block"):
        small(HybridConvMixerMixer, conv_depth=0, mixer_depth=0)


@pytest.mark.parametrize(
    "family, argument",
    [
        (ViT, "dropout_rate"),
        (ViT, "attention_dropout"),
        (ViT, "drop_path_rate"),
        (MLPMixer, "dropout_rate"),
        (HybridMixerViT, "drop_path_rate"),
        (HybridConvMixerMixer, "dropout_rate"),
    ],
)
@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_rates_outside_unit_interval(family, argument, rate):
    with pytest.raises(ValueError, match=f"Received: {argument}={rate}"):
        small(family, **{argument: rate})


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(ValueError) as info:
        small(ViT, weights=str(missing))
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(ValueError, match="Received: weights=42"):
        small(ViT, weights=42)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_weights_file_is_loaded(family, tmp_path):
    model = small(family)
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    keras.utils.set_random_seed(123)  # a different initialization
    loaded = small(family, weights=path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_input_tensor_is_used():
    tensor = keras.Input((32, 32, 3))
    model = small(ViT, input_shape=None, input_tensor=tensor)
    assert model.inputs[0] is tensor
    assert model.get_config()["input_shape"] == (32, 32, 3)
