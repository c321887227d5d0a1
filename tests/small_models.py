"""One small configuration of every family (16 px), shared by the training and export tests."""

from keras_vitmix import applications

FAMILIES = {
    "ViT": (applications.ViT, dict(patch_size=2, hidden_dim=96, num_layers=2, num_heads=6, mlp_dim=192)),
    "MLPMixer": (applications.MLPMixer, dict(patch_size=2, hidden_dim=64, num_layers=2, token_mlp_dim=64, channel_mlp_dim=128)),
    "ConvMixer": (applications.ConvMixer, dict(hidden_dim=64, num_layers=2, patch_size=2, kernel_size=3)),
    "HybridMixerViT": (
        applications.HybridMixerViT,
        dict(mixer_depth=1, attention_depth=1, patch_size=2, hidden_dim=96, num_heads=6, token_mlp_dim=96, channel_mlp_dim=192, mlp_dim=192),
    ),
    "HybridConvMixerMixer": (
        applications.HybridConvMixerMixer,
        dict(conv_depth=1, mixer_depth=1, patch_size=2, hidden_dim=64, kernel_size=3, token_mlp_dim=64, channel_mlp_dim=128),
    ),
}


def small(family, **overrides):
    """`family` at its small configuration: 16x16 RGB input, 10 classes, unless overridden."""
    cls, config = FAMILIES[family]
    return cls(**{**config, "input_shape": (16, 16, 3), "classes": 10, **overrides})
