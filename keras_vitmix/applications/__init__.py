"""Model families and their registered variants."""

from keras_vitmix.applications.conv_mixer import ConvMixer
from keras_vitmix.applications.hybrid_conv_mixer_mixer import HybridConvMixerMixer
from keras_vitmix.applications.hybrid_mixer_vit import HybridMixerViT
from keras_vitmix.applications.mlp_mixer import MLPMixer
from keras_vitmix.applications.registry import (
    create_model,
    list_models,
    list_weights_sources,
    model_info,
    register_model,
    register_weights_source,
)
from keras_vitmix.applications.vit import ViT

__all__ = [
    "ConvMixer",
    "HybridConvMixerMixer",
    "HybridMixerViT",
    "MLPMixer",
    "ViT",
    "create_model",
    "list_models",
    "list_weights_sources",
    "model_info",
    "register_model",
    "register_weights_source",
]
