"""Hybrid ConvMixer -> MLP-Mixer.

ConvMixer blocks (Trockman & Kolter, 2023) mix locally on the patch grid; the grid is
then flattened to tokens and MLP-Mixer blocks (Tolstikhin et al., 2021) mix globally.
Convolutions supply the locality that Mixer lacks; the Mixer blocks supply a global
receptive field in one step.
"""

import keras

from keras_vitmix.applications import _common
from keras_vitmix.applications.registry import register_model
from keras_vitmix.layers import LayerNormalization


@keras.saving.register_keras_serializable(package="keras_vitmix")
class HybridConvMixerMixer(_common.Application):
    """ConvMixer blocks on the grid, then MLP-Mixer blocks on its tokens.

    Args:
        conv_depth: int >= 0, number of ConvMixer blocks (`block_0` ...).
        mixer_depth: int >= 0, number of Mixer blocks that follow.
        patch_size: int or (int, int), patch size; must divide the image size.
        hidden_dim: int, channels.
        kernel_size: int, depthwise kernel size of the ConvMixer blocks.
        activation: str, activation of the stem and ConvMixer blocks.
        token_mlp_dim: int, Mixer token-MLP width; defaults to `hidden_dim // 2`.
        channel_mlp_dim: int, Mixer channel-MLP width; defaults to `4 * hidden_dim`.
        dropout_rate: float, dropout inside the Mixer MLPs.
        drop_path_rate: float, stochastic depth of the last Mixer block.
        layer_norm_epsilon: float.
{application_args}
    Example:

    >>> model = HybridConvMixerMixer(conv_depth=1, mixer_depth=1, patch_size=4,
    ...                              hidden_dim=32, input_shape=(32, 32, 3), classes=10)
    >>> model(keras.ops.zeros((1, 32, 32, 3))).shape
    (1, 10)
    """

    def __init__(
        self,
        conv_depth=8,
        mixer_depth=8,
        patch_size=14,
        hidden_dim=512,
        kernel_size=9,
        activation="gelu",
        token_mlp_dim=None,
        channel_mlp_dim=None,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        input_shape=None,
        include_top=True,
        include_preprocessing=True,
        normalization="imagenet",
        weights=None,
        input_tensor=None,
        pooling="avg",
        classes=1000,
        classifier_activation="softmax",
        name="hybrid_conv_mixer_mixer",
        **kwargs,
    ):
        _common.check_application_args(
            include_top, pooling, classes, weights, ("avg", "max", None), "HybridConvMixerMixer"
        )
        _common.check_depths(conv_depth=conv_depth, mixer_depth=mixer_depth)
        _common.check_rates(dropout_rate=dropout_rate, drop_path_rate=drop_path_rate)
        inputs, x, input_shape = _common.image_stem(
            "HybridConvMixerMixer", input_shape, input_tensor, include_preprocessing,
            normalization, patch_size,
        )
        x = _common.conv_stem(x, hidden_dim, patch_size, activation)
        x = _common.conv_mixer_blocks(x, 0, conv_depth, kernel_size, activation)
        grid = x.shape[1:3]
        x = keras.layers.Reshape((grid[0] * grid[1], hidden_dim), name="to_tokens")(x)  # (B, N, D)
        rates = [0.0] * conv_depth + _common.drop_path_rates(drop_path_rate, mixer_depth)
        x = _common.mixer_blocks(
            x,
            conv_depth,
            mixer_depth,
            rates,
            token_mlp_dim=token_mlp_dim or hidden_dim // 2,
            channel_mlp_dim=channel_mlp_dim or 4 * hidden_dim,
            dropout_rate=dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
        )
        x = LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
        outputs = _common.pool_and_head(x, pooling, include_top, classes, classifier_activation)
        config = _common.constructor_config(HybridConvMixerMixer, locals())
        self._finish(inputs, outputs, config, weights, name, **kwargs)


_common.fill_docstring(HybridConvMixerMixer)

register_model(
    "hybrid_convmixer_mixer_cifar_patch2_32", HybridConvMixerMixer,
    "CIFAR-size hybrid: 32 px, patch 2, 6 ConvMixer blocks (kernel 5) of width 256 on the "
    "16x16 grid, then 2 Mixer blocks on its 256 tokens",
    conv_depth=6, mixer_depth=2, patch_size=2, hidden_dim=256, kernel_size=5,
    token_mlp_dim=128, channel_mlp_dim=256, input_shape=(32, 32, 3), classes=10,
)
register_model(
    "seed_convmixer_mixer", HybridConvMixerMixer,
    "Seed reproduction: the original notebook's ConvMixer(16, patch 2, 1 block, kernel 5) -> "
    "1 MixerBlock on the 256 tokens, 32 px",
    conv_depth=1, mixer_depth=1, patch_size=2, hidden_dim=16, kernel_size=5,
    token_mlp_dim=256, channel_mlp_dim=16, input_shape=(32, 32, 3), classes=10,
)
