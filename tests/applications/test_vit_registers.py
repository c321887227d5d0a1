"""ViT with register tokens (Darcet et al., 2024), timm's no_embed_class positions and
fc_norm, on small models: the registered DINOv2 / reg4 variants are over 20M parameters,
so the shared suite's costly checks (gradients, saving, poolings) run here instead."""

import keras
import numpy as np
import pytest

from keras_vitmix.applications import ViT
from tests.backend_utils import trainable_gradients

SMALL = dict(patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, input_shape=(16, 16, 3), classes=3)
REGISTERS = dict(num_register_tokens=4, use_prefix_positions=False)
GAP = dict(use_class_token=False, pooling="avg", use_fc_norm=True, **REGISTERS)  # timm's reg4_gap
DINOV2 = dict(layer_scale_init=1e-5, **REGISTERS)


def images(count=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, 16, 16, 3)).astype("float32")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("options", [DINOV2, GAP], ids=["class_token_and_registers", "registers_and_gap"])
def test_config_and_keras_file_round_trip(options, tmp_path):
    model = ViT(**SMALL, **options)
    embedding = model.get_layer("patch_embedding")
    assert embedding.num_prefix_tokens == int(options.get("use_class_token", True)) + 4
    assert tuple(embedding.position_embeddings.shape) == (1, 16, 16)  # the patches' only
    config = model.get_config()
    assert {k: config[k] for k in REGISTERS} == REGISTERS
    assert ViT.from_config(config).get_config() == config
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = images()
    np.testing.assert_allclose(numpy(loaded(x)), numpy(model(x)), atol=1e-6)
    np.testing.assert_array_equal(
        numpy(loaded.get_layer("patch_embedding").register_tokens), numpy(embedding.register_tokens)
    )


def test_every_weight_gets_a_gradient():
    model = ViT(**SMALL, **DINOV2)
    grads = trainable_gradients(model, images(), np.array([0, 1]))
    for weight, grad in zip(model.trainable_weights, grads):
        assert grad is not None and np.all(np.isfinite(grad)) and np.any(grad != 0), weight.path


def test_pooling_leaves_the_registers_out():
    tokens_model = ViT(**{**SMALL, **GAP, "include_top": False, "pooling": None})
    x = images(seed=1)
    tokens = numpy(tokens_model(x))  # (B, 4 + 16, D), not normalized: timm's forward_features
    assert tokens.shape == (2, 20, 16)
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        pooled_model = ViT(**{**SMALL, **GAP, "include_top": False, "pooling": pooling})
        pooled_model.set_weights(tokens_model.get_weights() + [np.ones(16, "float32"), np.zeros(16, "float32")])
        patches = reduce(tokens[:, 4:], axis=1)
        normed = (patches - patches.mean(-1, keepdims=True)) / np.sqrt(patches.var(-1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(numpy(pooled_model(x)), normed, atol=1e-4, err_msg=pooling)


def test_register_options_refused():
    with pytest.raises(ValueError, match=r"pooling in \('avg', 'max', None\). Received: pooling='token'"):
        ViT(**SMALL, use_class_token=False, num_register_tokens=4)
    with pytest.raises(ValueError, match="Received: use_fc_norm=True"):
        ViT(**SMALL, use_distillation_token=True, use_fc_norm=True)
    with pytest.raises(ValueError, match="num_register_tokens=-2"):
        ViT(**SMALL, num_register_tokens=-2)
