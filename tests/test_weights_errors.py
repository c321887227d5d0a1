"""Loading fails loudly, assigns nothing on failure, and `create_model(weights="timm")`
fetches, names the checkpoint it cannot fetch, and refuses what timm does not have."""

import numpy as np
import pytest

import keras_vitmix.weights as weights_module
from keras_vitmix.applications import HybridMixerViT, create_model
from keras_vitmix.weights import load_timm_weights
from tests import timm_utils as tu

NAME = "vit_tiny_patch16_224"


def numpy_state(name=NAME):
    return {k: v.numpy() for k, v in tu.reference(name).state_dict().items()}


def snapshot(model):
    return [np.array(w) for w in model.weights]


def assert_untouched(model, before):
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(np.asarray(weight), value, err_msg=weight.path)


@pytest.fixture
def model():
    return tu.ours(NAME)


def test_unmapped_tensor_is_listed_and_nothing_is_assigned(model):
    state = numpy_state()
    state["blocks.0.attn.extra_scale"] = np.ones(3, "float32")
    state["fc_norm.weight"] = np.ones(192, "float32")
    before = snapshot(model)
    listed = r"2 checkpoint tensors with no variable.*blocks\.0\.attn\.extra_scale, fc_norm\.weight"
    with pytest.raises(ValueError, match=listed):
        load_timm_weights(model, state)
    assert_untouched(model, before)


def test_missing_tensor_is_listed_and_nothing_is_assigned(model):
    state = numpy_state()
    del state["blocks.1.mlp.fc2.bias"], state["cls_token"]
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"2 model variables the checkpoint does not fill") as info:
        load_timm_weights(model, state)
    assert "patch_embedding/class_token (from cls_token)" in str(info.value)
    assert "block_1/mlp/fc2/bias (from blocks.1.mlp.fc2.bias)" in str(info.value)
    assert_untouched(model, before)


def test_shape_mismatch_is_listed(model):
    state = numpy_state()
    state["blocks.0.mlp.fc1.weight"] = np.zeros((512, 192), "float32")
    with pytest.raises(
        ValueError, match=r"blocks\.0\.mlp\.fc1\.weight \(512, 192\) -> block_0/mlp/fc1/kernel \(192, 768\)"
    ):
        load_timm_weights(model, state)


def test_deeper_checkpoint_lists_the_extra_blocks():
    shallow = create_model(NAME, num_layers=1, classifier_activation=None)
    with pytest.raises(ValueError, match=r"12 checkpoint tensors with no variable.*blocks\.1\.norm1\.weight"):
        load_timm_weights(shallow, tu.reference(NAME))


def test_mixer_refuses_another_image_size():
    mixer = create_model("mixer_s16_224", num_layers=tu.DEPTH, input_shape=(256, 256, 3))
    with pytest.raises(ValueError, match=r"token-mixing MLPs.*196 patches.*256 patches"):
        load_timm_weights(mixer, tu.reference("mixer_s16_224"))


def test_other_families_are_refused():
    # A hybrid with ViT-Ti's shapes (one attention block) builds fast under JAX.
    hybrid = HybridMixerViT(
        mixer_depth=0, attention_depth=1, hidden_dim=192, num_heads=3, use_class_token=True,
        position_embedding="learned", pooling="token",
    )
    with pytest.raises(ValueError, match=r"ViT \(DeiT\), MLPMixer and ConvMixer.*HybridMixerViT"):
        load_timm_weights(hybrid, {})
    with pytest.raises(ValueError, match=r"'seed_convmixer_mixer' is a HybridConvMixerMixer"):
        create_model("seed_convmixer_mixer", weights="timm")  # refused before it is built
    with pytest.raises(ValueError, match=r"'timm'.*load through create_model\(name, weights='timm'\)"):
        HybridMixerViT(weights="timm")  # the families take files; the registry takes "timm"


def test_checkpoint_normalization_must_match(model):
    # DeiT's checkpoints expect ImageNet's mean and std; this ViT normalizes with 0.5.
    with pytest.raises(ValueError, match=r"mean=\(0\.485.*normalization='imagenet'.*'inception'"):
        load_timm_weights(model, tu.reference("deit_tiny_distilled_patch16_224"))


def test_head_options(model):
    headless = tu.ours(NAME, include_top=False)
    with pytest.raises(ValueError, match="no classification head"):
        load_timm_weights(headless, tu.reference(NAME), load_head=True)
    state = numpy_state()
    del state["head.weight"], state["head.bias"]
    with pytest.raises(ValueError, match=r"head/kernel \(from head\.weight\).*\nload_head=False leaves"):
        load_timm_weights(model, state)  # a model with a head needs the checkpoint's


def test_bad_sources(tmp_path, model):
    with pytest.raises(TypeError, match="Received: source of type int"):
        load_timm_weights(model, 3)
    with pytest.raises(ValueError, match="No checkpoint file.*missing.pth"):
        load_timm_weights(model, tmp_path / "missing.pth")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.safetensors, \.pth, \.pt or \.bin.*weights\.npz"):
        load_timm_weights(model, tmp_path / "weights.npz")


@pytest.mark.parametrize(
    "name, weights, message",
    [
        (NAME, "timm:vit_tinny_patch16_224", r"no model named 'vit_tinny_patch16_224'.*vit_tiny_patch16_224"),
        ("vit_cifar_patch4_32", "timm", r"no model named 'vit_cifar_patch4_32'.*timm:<"),
        (NAME, "timm:vit_tiny_patch16_224.no_tag", r"no checkpoint named 'vit_tiny_patch16_224\.no_tag'"),
        ("mixer_s16_224", "timm", r"no checkpoint named 'mixer_s16_224'.*Checkpoints of mixer_s16_224: none"),
    ],
)
def test_create_model_refuses_what_timm_lacks(name, weights, message):
    with pytest.raises(ValueError, match=message):
        create_model(name, weights=weights)


def test_create_model_offline_names_the_checkpoint(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # No network and an empty cache, whatever the machine has.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(tu.torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(OSError, match=r"checkpoint 'deit_tiny_patch16_224\.fb_in1k' \(hf-hub:timm/deit_tiny"):
        create_model("deit_tiny_patch16_224", weights="timm")


def test_create_model_loads_what_timm_fetches(monkeypatch):
    """The path after the download: normalization, classes and head from the checkpoint."""
    fetched = []

    def fetch(cfg):
        fetched.append(f"{cfg.architecture}.{cfg.tag}")
        return tu.reference("deit_tiny_distilled_patch16_224")

    monkeypatch.setattr(weights_module, "_fetch", fetch)
    name = "deit_tiny_distilled_patch16_224"
    model = create_model(name, weights="timm", num_layers=tu.DEPTH, classifier_activation=None)
    assert fetched == ["deit_tiny_distilled_patch16_224.fb_in1k"]
    assert model.get_config()["normalization"] == "imagenet" and model.output_shape == (None, 1000)
    images = tu.cifar_images()
    tu.assert_same_logits(
        tu.our_outputs(model, images),
        tu.timm_outputs(tu.reference(name), images, "imagenet"),
        "create_model(weights='timm')",
    )
    # Other classes: a new head, the body from the checkpoint (timm's num_classes=).
    tuned = create_model(name, weights=f"timm:{name}.fb_in1k", num_layers=tu.DEPTH, classes=10)
    assert tuned.output_shape == (None, 10)
    np.testing.assert_array_equal(
        np.asarray(tuned.get_layer("patch_embedding").distillation_token),
        tu.reference(name).dist_token.detach().numpy(),
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_corrupt_or_truncated_checkpoint_files_are_named(suffix, tmp_path, model):
    import torch
    from safetensors.torch import save_file

    good = tmp_path / f"good{suffix}"
    state = {"cls_token": torch.ones(1, 1, 192), "norm.weight": torch.ones(192)}
    save_file(state, good) if suffix == ".safetensors" else torch.save(state, good)
    data = good.read_bytes()
    expected = "a safetensors file" if suffix == ".safetensors" else "a PyTorch checkpoint"
    before = snapshot(model)
    for kind, content in {"garbage": b"not a checkpoint" * 8, "empty": b"", "truncated": data[: len(data) // 2]}.items():
        path = tmp_path / f"{kind}{suffix}"
        path.write_bytes(content)
        message = rf"Could not read the checkpoint file '.*{kind}\{suffix}' \({len(content):,} bytes; truncated"
        with pytest.raises(ValueError, match=rf"{message}.*Expected {expected}"):
            load_timm_weights(model, path)
    assert_untouched(model, before)
    # A well-formed file reads: the failure is in the checkpoint, not the weights.
    with pytest.raises(ValueError, match=r"does not match model"):
        load_timm_weights(model, good)


def test_a_torch_file_without_a_state_dict_is_named(tmp_path, model):
    import torch

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"'.*list\.pth' holds a list, not a state dict"):
        load_timm_weights(model, tmp_path / "list.pth")
