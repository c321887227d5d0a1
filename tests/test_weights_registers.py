"""Register tokens and DINOv2: timm's checkpoints load feature for feature.

timm's `vit_*_reg4_dinov2` put 4 register tokens after the class token and a position
embedding over the patches only (`no_embed_class`); `vit_base_patch16_reg4_gap_256` has
registers without a class token and normalizes the mean of the patch tokens (`fc_norm`).
The timm models are random, 2 blocks deep, at a small `img_size`, every tensor perturbed
(tests/timm_utils.py); ours load them through `load_timm_weights`.
"""

import functools

import numpy as np
import pytest

import keras_vitmix.weights as weights_module
from keras_vitmix.applications import create_model, model_info
from keras_vitmix.weights import load_timm_weights, normalization_of
from tests import timm_utils as tu

# name -> (small image size, output width: features or classes, width overrides). The
# base variants differ from the small ones only in width, which the small ones already
# load at full width; they run at ViT-Ti's width (timm's embed_dim / our hidden_dim), a
# quarter of the cost, and keep what is their own: registers, fc_norm, no class token.
TINY = {"hidden_dim": 192, "num_heads": 3}
VARIANTS = {
    "vit_small_patch14_dinov2": (56, 384, {}),  # a 4x4 grid; class token with a position
    "vit_small_patch14_reg4_dinov2": (56, 384, {}),
    "vit_base_patch14_reg4_dinov2": (56, 192, TINY),
    "vit_base_patch16_reg4_gap_256": (64, 1000, TINY),  # no class token, mean of the patches
}


@functools.lru_cache(maxsize=None)
def reference(name, size):
    """timm's `name` at `size` px, 2 blocks, perturbed (created once per process)."""
    narrow = VARIANTS[name][2]
    timm_width = {"embed_dim": narrow["hidden_dim"], "num_heads": narrow["num_heads"]} if narrow else {}
    return tu.perturb(tu.timm_model(name, img_size=size, **timm_width))


def normalization(name):
    """Our name for the mean and std of timm's pretrained_cfg of `name`."""
    cfg = tu.timm.models.get_pretrained_cfg(name)
    return normalization_of(cfg.mean, cfg.std)


def ours(name, size, **overrides):
    return tu.ours(name, input_shape=(size, size, 3), **{**VARIANTS[name][2], **overrides})


@pytest.mark.parametrize("name", list(VARIANTS))
def test_register_variants_match_timm(name):
    size, width, _ = VARIANTS[name]
    timm_model = reference(name, size)
    model = load_timm_weights(ours(name, size), timm_model)
    assert model.get_layer("patch_embedding").num_prefix_tokens == timm_model.num_prefix_tokens
    assert model.get_config()["normalization"] == normalization(name)
    images = tu.cifar_images(size)
    # timm's forward: DINOv2 (num_classes=0) returns the normed class token, the gap
    # model the logits of fc_norm(mean of the patch tokens).
    expected = tu.timm_outputs(timm_model, images, normalization(name))
    assert expected.shape == (tu.BATCH, width)
    tu.assert_same_logits(tu.our_outputs(model, images), expected, name)


def test_tokens_and_pre_logits_of_the_gap_model_match_timm():
    name = "vit_base_patch16_reg4_gap_256"
    size = VARIANTS[name][0]
    timm_model = reference(name, size)
    images = tu.cifar_images(size)
    x = tu.torch.from_numpy(((images / 255.0 - 0.5) / 0.5).astype("float32")).permute(0, 3, 1, 2)
    with tu.torch.no_grad():
        tokens = timm_model.forward_features(x)  # registers first, not normalized (norm is Identity)
        pre_logits = timm_model.forward_head(tokens, pre_logits=True)
    pooled = load_timm_weights(ours(name, size, include_top=False), timm_model)
    assert "fc_norm" in [layer.name for layer in pooled.layers] and "norm" not in [layer.name for layer in pooled.layers]
    np.testing.assert_allclose(tu.our_outputs(pooled, images), pre_logits.numpy(), atol=tu.ATOL)
    # Tokens out: the checkpoint's fc_norm, part of timm's pre-logits, is left out.
    unpooled = load_timm_weights(ours(name, size, include_top=False, pooling=None), timm_model)
    np.testing.assert_allclose(tu.our_outputs(unpooled, images), tokens.numpy(), atol=tu.ATOL)


@pytest.mark.parametrize("name", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_dinov2_at_another_resolution_matches_timm(name):
    # timm's img_size=: the checkpoint's position grid resampled (bicubic), the class
    # token's entry kept (without registers) or no prefix entry at all (with them).
    from timm.models.vision_transformer import checkpoint_filter_fn

    size, new_size = VARIANTS[name][0], 84  # a 4x4 grid to 6x6
    state = reference(name, size).state_dict()
    resized = tu.timm_model(name, img_size=new_size).eval()
    resized.load_state_dict(checkpoint_filter_fn(state, resized))
    model = load_timm_weights(ours(name, new_size), state)
    embedding = model.get_layer("patch_embedding")
    assert tuple(embedding.position_embeddings.shape) == tuple(resized.pos_embed.shape)
    assert embedding.num_prefix_positions == (0 if "reg4" in name else 1)
    images = tu.cifar_images(new_size)
    tu.assert_same_logits(
        tu.our_outputs(model, images), tu.timm_outputs(resized, images, "imagenet"), f"{name} at {new_size} px"
    )


def test_create_model_loads_dinov2_without_a_classifier(monkeypatch):
    """weights="timm" on a backbone variant: timm's DINOv2 has num_classes=0, and the
    variant is registered with include_top=False, so no head is asked for."""
    name, size = "vit_small_patch14_reg4_dinov2", VARIANTS["vit_small_patch14_reg4_dinov2"][0]
    fetched = []

    def fetch(cfg):
        fetched.append(f"{cfg.architecture}.{cfg.tag}")
        return reference(name, size)

    monkeypatch.setattr(weights_module, "_fetch", fetch)
    assert model_info(name)["config"]["include_top"] is False
    model = create_model(name, weights="timm", num_layers=tu.DEPTH, input_shape=(size, size, 3))
    assert fetched == ["vit_small_patch14_reg4_dinov2.lvd142m"]
    assert model.output_shape == (None, 384)
    images = tu.cifar_images(size)
    tu.assert_same_logits(
        tu.our_outputs(model, images), tu.timm_outputs(reference(name, size), images, "imagenet"), name
    )


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_counts_are_timm_s(name):
    """timm's count at its native size (518 or 256 px), read on the meta device (no
    memory, no initialization), equals the one tests/applications/test_models.py builds
    ours against."""
    from tests.applications.test_models import TIMM_PARAMS

    with tu.torch.device("meta"):
        timm_model = tu.timm.create_model(name, pretrained=False)
    assert sum(p.numel() for p in timm_model.parameters()) == TIMM_PARAMS[name]
    assert model_info(name)["config"]["input_shape"][:2] == tuple(timm_model.patch_embed.img_size)
