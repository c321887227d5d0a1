"""timm checkpoints load logit for logit: the same real images give the same logits.

timm's models are random (`pretrained=False`, no network), reduced to 2 blocks, with
every tensor perturbed (see tests/timm_utils.py); ours get their weights through
`load_timm_weights` and take the raw pixels, normalizing them inside.
"""

import numpy as np
import pytest

from keras_vitmix.layers import resample_position_embedding
from keras_vitmix.weights import load_timm_weights
from tests import timm_utils as tu

torch = tu.torch

# Our registered name -> the normalization of timm's pretrained_cfg for that model.
MODELS = {
    "vit_tiny_patch16_224": "inception",
    "vit_small_patch16_224": "inception",
    "deit_tiny_distilled_patch16_224": "imagenet",
    "mixer_s16_224": "inception",
    "convmixer_768_32": "imagenet",
}


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_match_timm(name):
    reference = tu.reference(name)
    model = load_timm_weights(tu.ours(name), reference)
    assert model.get_config()["normalization"] == MODELS[name]
    images = tu.cifar_images()
    tu.assert_same_logits(
        tu.our_outputs(model, images), tu.timm_outputs(reference, images, MODELS[name]), name
    )


def test_layer_scale_matches_timm():
    # timm's ViTs with `init_values` (LayerScale) scale each branch by ls1/ls2.gamma.
    reference = tu.perturb(tu.timm_model("vit_tiny_patch16_224", init_values=0.1))
    model = load_timm_weights(tu.ours("vit_tiny_patch16_224", layer_scale_init=0.1), reference)
    images = tu.cifar_images()
    tu.assert_same_logits(
        tu.our_outputs(model, images), tu.timm_outputs(reference, images, "inception"), "LayerScale"
    )


@pytest.mark.parametrize(
    "name, size",
    [
        ("vit_tiny_patch16_224", 160),  # a 10x10 grid: the embedding shrinks
        ("deit_tiny_distilled_patch16_224", 288),  # 18x18: it grows; two prefix tokens kept
    ],
)
def test_vit_at_another_resolution_matches_timm(name, size):
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = tu.reference(name).state_dict()
    # timm's way: a model built at `size`, the 224 px checkpoint resampled by its filter.
    resized = tu.timm_model(name, img_size=size).eval()
    resized.load_state_dict(checkpoint_filter_fn(state, resized))
    model = load_timm_weights(tu.ours(name, input_shape=(size, size, 3)), state)
    grid = size // 16
    assert model.get_layer("patch_embedding").position_embeddings.shape[1] == grid * grid + (
        2 if "distilled" in name else 1
    )
    images = tu.cifar_images(size)
    tu.assert_same_logits(
        tu.our_outputs(model, images),
        tu.timm_outputs(resized, images, MODELS[name]),
        f"{name} at {size} px",
    )


@pytest.mark.parametrize("num_prefix_tokens", [0, 1, 2])
def test_resample_matches_timm(num_prefix_tokens):
    from timm.layers import resample_abs_pos_embed

    rng = np.random.default_rng(num_prefix_tokens)
    embedding = rng.standard_normal((1, num_prefix_tokens + 14 * 14, 8)).astype("float32")
    for grid in [(24, 24), (10, 10), (7, 20), (14, 14)]:
        expected = resample_abs_pos_embed(
            torch.from_numpy(embedding), list(grid), num_prefix_tokens=num_prefix_tokens
        ).numpy()
        ours = resample_position_embedding(embedding, grid, num_prefix_tokens=num_prefix_tokens)
        np.testing.assert_allclose(ours, expected, atol=2e-5, err_msg=str(grid))
        np.testing.assert_array_equal(ours[:, :num_prefix_tokens], embedding[:, :num_prefix_tokens])


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_features_without_head_match_timm_pre_logits(name):
    reference = tu.reference(name)
    # include_top=False: the checkpoint's classifier is left out, not reported.
    model = load_timm_weights(tu.ours(name, include_top=False), reference)
    assert not any(w.path.startswith("head") for w in model.weights)
    images = tu.cifar_images()
    expected = tu.timm_outputs(reference, images, MODELS[name], pre_logits=True)
    features = tu.our_outputs(model, images)
    assert features.shape == expected.shape == (tu.BATCH, 192)
    assert np.max(np.abs(features - expected)) <= tu.ATOL


def test_new_head_for_other_classes_keeps_the_body():
    name = "vit_tiny_patch16_224"
    reference = tu.reference(name)
    model = tu.ours(name, classes=10)
    head_before = [np.array(w) for w in model.get_layer("head").get_weights()]
    load_timm_weights(model, reference, load_head=False)
    for before, after in zip(head_before, model.get_layer("head").get_weights()):
        np.testing.assert_array_equal(before, after)  # left as initialized
    state = reference.state_dict()
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("norm").gamma), state["norm.weight"].numpy()
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("block_1").attention.qkv.kernel),
        state["blocks.1.attn.qkv.weight"].numpy().T,
    )


@pytest.mark.parametrize(
    "kind", ["safetensors", "safetensors_bfloat16", "pth", "bin", "nested_in_model", "data_parallel"]
)
def test_checkpoint_files_and_state_dicts(kind, tmp_path):
    name = "vit_tiny_patch16_224"
    state = tu.reference(name).state_dict()
    if kind.startswith("safetensors"):
        from safetensors.torch import save_file

        if kind == "safetensors_bfloat16":  # NumPy has no bfloat16: read through torch
            state = {k: v.to(torch.bfloat16) for k, v in state.items()}
        source = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, source)
    elif kind in ("pth", "bin"):
        source = tmp_path / f"model.{kind}"
        torch.save(state, source)
    elif kind == "nested_in_model":  # DeiT's own release: {"model": state_dict}
        source = {"model": {k: v.numpy() for k, v in state.items()}}
    else:  # saved from torch.nn.DataParallel
        source = {f"module.{k}": v for k, v in state.items()}
    model = load_timm_weights(tu.ours(name), source)
    expected = {k: v.float().numpy() for k, v in state.items()}
    direct = load_timm_weights(tu.ours(name), expected)
    for loaded, want in zip(model.weights, direct.weights):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(want), err_msg=loaded.path)
