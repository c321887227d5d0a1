"""FLOPs from the architecture, against the papers' counts and hand-written formulas."""

import keras
import pytest

from keras_vitmix.applications import ConvMixer, MLPMixer, ViT, create_model
from keras_vitmix.flops import count_flops


@pytest.mark.parametrize(
    "name, published_gmacs",
    [
        # DeiT (Touvron et al., 2021), Table 1: the "FLOPs" of DeiT-Ti/S/B are MACs,
        # attention products included. The ViT variants are the same networks.
        ("vit_tiny_patch16_224", 1.3),
        ("vit_small_patch16_224", 4.6),
        # timm's model card: Mixer-S/16 3.8 GMACs. (DeiT-B's 17.6 and Mixer-B/16's 12.6
        # match too; left out for the test's time.)
        ("mixer_s16_224", 3.8),
    ],
)
def test_published_counts(name, published_gmacs):
    counted = count_flops(create_model(name))
    assert round(counted["macs"] / 1e9, 1) == published_gmacs
    assert counted["flops"] == 2 * counted["macs"]


def test_hand_counts_of_each_family():
    # ViT: 16 px, patch 4 -> 16 patches + class token = 17 tokens, width 32, MLP 64, 2 layers.
    vit = ViT(patch_size=4, hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64, input_shape=(16, 16, 3), classes=10)
    n, d, m = 17, 32, 64
    block = n * (3 * d * d + d * d) + 2 * n * n * d + n * 2 * d * m
    assert count_flops(vit)["macs"] == 16 * (4 * 4 * 3 * d) + 2 * block + d * 10
    # Mixer: 16 patches, width 32, token MLP 8, channel MLP 64.
    mixer = MLPMixer(patch_size=4, hidden_dim=32, num_layers=1, token_mlp_dim=8, channel_mlp_dim=64,
                     input_shape=(16, 16, 3), classes=10)
    assert count_flops(mixer)["macs"] == 16 * (4 * 4 * 3 * 32) + 32 * 2 * 16 * 8 + 16 * 2 * 32 * 64 + 32 * 10
    # ConvMixer: an 8x8 grid of width 16, kernel 5: depthwise and pointwise per pixel.
    conv = ConvMixer(hidden_dim=16, num_layers=3, patch_size=2, kernel_size=5, input_shape=(16, 16, 3), classes=10)
    by_layer = count_flops(conv)["by_layer"]
    assert by_layer["block_0"] == 64 * (5 * 5 * 16 + 16 * 16)
    assert count_flops(conv)["macs"] == 64 * (2 * 2 * 3 * 16) + 3 * by_layer["block_0"] + 16 * 10


def test_attention_cost_grows_quadratically_and_mixing_linearly():
    def macs(family, size):
        kwargs = dict(patch_size=4, hidden_dim=32, num_layers=1, input_shape=(size, size, 3), include_top=False)
        model = ViT(num_heads=2, use_class_token=False, pooling="avg", **kwargs) if family == "vit" else MLPMixer(
            token_mlp_dim=16, channel_mlp_dim=64, pooling="avg", **kwargs)
        return count_flops(model)["by_layer"]["block_0"]

    vit = [macs("vit", s) for s in (16, 32, 64)]      # 16, 64, 256 tokens
    mixer = [macs("mixer", s) for s in (16, 32, 64)]
    # ViT's block: a*N + b*N^2 -> second differences of N^2 terms; Mixer's: linear in N.
    assert mixer[2] - mixer[1] == 4 * (mixer[1] - mixer[0])  # N steps 48 then 192
    assert vit[2] - vit[1] > 4 * (vit[1] - vit[0])


def test_bad_input():
    with pytest.raises(ValueError, match="functional keras.Model. Received: Dense"):
        count_flops(keras.layers.Dense(3))
