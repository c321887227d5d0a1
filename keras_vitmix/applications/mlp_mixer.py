"""MLP-Mixer.

Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision", NeurIPS 2021
(https://arxiv.org/abs/2105.01601): no attention and no position embedding; each block
mixes information across patches with an MLP on the transposed tokens, then across
channels. The cost is linear in the number of patches. The 224 px variants match
timm's parameter counts.
"""

import keras

from keras_vitmix.applications import _common
from keras_vitmix.applications.registry import register_model
from keras_vitmix.layers import LayerNormalization, PatchEmbedding


@keras.saving.register_keras_serializable(package="keras_vitmix")
class MLPMixer(_common.Application):
    """MLP-Mixer.

    Args:
        patch_size: int or (int, int), patch size; must divide the image size.
        hidden_dim: int, channel dimension.
        num_layers: int, number of Mixer blocks.
        token_mlp_dim: int, token-mixing MLP width; defaults to `hidden_dim // 2`.
        channel_mlp_dim: int, channel-mixing MLP width; defaults to `4 * hidden_dim`.
        dropout_rate: float, dropout inside the MLPs.
        drop_path_rate: float, stochastic depth of the last block (linear from 0).
        layer_norm_epsilon: float.
{application_args}
    Example:

    >>> model = MLPMixer(patch_size=4, hidden_dim=64, num_layers=2,
    ...                  input_shape=(32, 32, 3), classes=10)
    >>> model(keras.ops.zeros((1, 32, 32, 3))).shape
    (1, 10)

    Reference:
        Tolstikhin et al., 2021, https://arxiv.org/abs/2105.01601
    """

    def __init__(
        self,
        patch_size=16,
        hidden_dim=512,
        num_layers=8,
        token_mlp_dim=None,
        channel_mlp_dim=None,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        input_shape=None,
        include_top=True,
        include_preprocessing=True,
        normalization="inception",
        weights=None,
        input_tensor=None,
        pooling="avg",
        classes=1000,
        classifier_activation="softmax",
        name="mlp_mixer",
        **kwargs,
    ):
        _common.check_application_args(
            include_top, pooling, classes, weights, ("avg", "max", None), "MLPMixer"
        )
        _common.check_depths(num_layers=num_layers)
        _common.check_rates(dropout_rate=dropout_rate, drop_path_rate=drop_path_rate)
        inputs, x, input_shape = _common.image_stem(
            "MLPMixer", input_shape, input_tensor, include_preprocessing, normalization, patch_size
        )
        x = PatchEmbedding(hidden_dim, patch_size, position_embedding=None, name="patch_embedding")(x)
        x = _common.mixer_blocks(
            x,
            0,
            num_layers,
            _common.drop_path_rates(drop_path_rate, num_layers),
            token_mlp_dim=token_mlp_dim or hidden_dim // 2,
            channel_mlp_dim=channel_mlp_dim or 4 * hidden_dim,
            dropout_rate=dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
        )
        x = LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
        outputs = _common.pool_and_head(x, pooling, include_top, classes, classifier_activation)
        config = _common.constructor_config(MLPMixer, locals())
        self._finish(inputs, outputs, config, weights, name, **kwargs)


_common.fill_docstring(MLPMixer)

register_model(
    "mixer_s16_224", MLPMixer, "Mixer-S/16, 224 px", patch_size=16, hidden_dim=512, num_layers=8,
    token_mlp_dim=256, channel_mlp_dim=2048,
)
register_model(
    "mixer_b16_224", MLPMixer, "Mixer-B/16, 224 px", patch_size=16, hidden_dim=768, num_layers=12,
    token_mlp_dim=384, channel_mlp_dim=3072,
)
register_model(
    "mixer_cifar_patch4_32", MLPMixer,
    "CIFAR-size Mixer: 32 px, patch 4 (64 tokens), 8 blocks of width 128",
    patch_size=4, hidden_dim=128, num_layers=8, token_mlp_dim=64, channel_mlp_dim=256,
    input_shape=(32, 32, 3), classes=10,
)
register_model(
    "seed_mixer", MLPMixer,
    "Seed reproduction: the original notebook's Mixer, 32 px, patch 8 (16 patches), 4 blocks "
    "of width 256, MLP widths equal to the patch count, dropout 0.2",
    patch_size=8, hidden_dim=256, num_layers=4, token_mlp_dim=16, channel_mlp_dim=16,
    dropout_rate=0.2, input_shape=(32, 32, 3), classes=10,
)
