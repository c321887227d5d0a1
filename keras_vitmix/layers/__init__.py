"""Layers shared by every keras_vitmix architecture."""

from keras_vitmix.layers.attention import MultiHeadSelfAttention
from keras_vitmix.layers.conv import Conv2D
from keras_vitmix.layers.conv_mixer_block import ConvMixerBlock
from keras_vitmix.layers.depthwise_conv import DepthwiseConv2D
from keras_vitmix.layers.drop_path import DropPath
from keras_vitmix.layers.linear import Dense
from keras_vitmix.layers.mixer_block import MixerBlock
from keras_vitmix.layers.mlp import MLP
from keras_vitmix.layers.normalization import BatchNormalization, LayerNormalization
from keras_vitmix.layers.patch_embedding import (
    PatchEmbedding,
    resample_position_embedding,
    sincos_position_embedding,
)
from keras_vitmix.layers.scored_transformer_block import ScoredTransformerBlock
from keras_vitmix.layers.transformer_block import TransformerBlock

__all__ = [
    "BatchNormalization",
    "Conv2D",
    "ConvMixerBlock",
    "Dense",
    "DepthwiseConv2D",
    "DropPath",
    "LayerNormalization",
    "MLP",
    "MixerBlock",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "ScoredTransformerBlock",
    "TransformerBlock",
    "resample_position_embedding",
    "sincos_position_embedding",
]
