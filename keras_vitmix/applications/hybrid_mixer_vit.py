"""Hybrid MLP-Mixer -> ViT.

Mixer blocks first, then Transformer blocks, on one token sequence. The early blocks
mix tokens at a cost linear in the number of patches and already carry where each
token sits (the token-mixing MLP is position-specific), so the attention blocks that
follow need no position embedding by default.
"""

import keras

from keras_vitmix.applications import _common
from keras_vitmix.applications.registry import register_model
from keras_vitmix.layers import LayerNormalization, PatchEmbedding


@keras.saving.register_keras_serializable(package="keras_vitmix")
class HybridMixerViT(_common.Application):
    """MLP-Mixer blocks, then Transformer blocks.

    Args:
        mixer_depth: int >= 0, number of Mixer blocks (`block_0` ...).
        attention_depth: int >= 0, number of Transformer blocks that follow.
        patch_size: int or (int, int), patch size; must divide the image size.
        hidden_dim: int, token dimension.
        num_heads: int, attention heads.
        token_mlp_dim: int, Mixer token-MLP width; defaults to `hidden_dim // 2`.
        channel_mlp_dim: int, Mixer channel-MLP width; defaults to `4 * hidden_dim`.
        mlp_dim: int, Transformer MLP width; defaults to `4 * hidden_dim`.
        use_class_token: bool, prepend a class token (the Mixer blocks mix it too).
        position_embedding: "learned", "sincos" or None.
        dropout_rate: float, dropout in all blocks.
        attention_dropout: float, dropout on attention probabilities.
        drop_path_rate: float, stochastic depth of the last block (linear from 0).
        layer_norm_epsilon: float.
        flash_attention: None, True or False: the blocks' fused attention kernel (see
            `keras_vitmix.layers.MultiHeadSelfAttention`); None follows
            `keras.config.is_flash_attention_enabled()`.
{application_args}
    Example:

    >>> model = HybridMixerViT(mixer_depth=2, attention_depth=2, patch_size=4,
    ...                        hidden_dim=64, num_heads=4, input_shape=(32, 32, 3),
    ...                        classes=10)
    >>> model(keras.ops.zeros((1, 32, 32, 3))).shape
    (1, 10)
    """

    def __init__(
        self,
        mixer_depth=6,
        attention_depth=6,
        patch_size=16,
        hidden_dim=384,
        num_heads=6,
        token_mlp_dim=None,
        channel_mlp_dim=None,
        mlp_dim=None,
        use_class_token=False,
        position_embedding=None,
        dropout_rate=0.0,
        attention_dropout=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        flash_attention=None,
        input_shape=None,
        include_top=True,
        include_preprocessing=True,
        normalization="inception",
        weights=None,
        input_tensor=None,
        pooling="avg",
        classes=1000,
        classifier_activation="softmax",
        name="hybrid_mixer_vit",
        **kwargs,
    ):
        poolings = _common.POOLINGS if use_class_token else ("avg", "max", None)
        _common.check_application_args(include_top, pooling, classes, weights, poolings, "HybridMixerViT")
        _common.check_depths(mixer_depth=mixer_depth, attention_depth=attention_depth)
        _common.check_rates(
            dropout_rate=dropout_rate, attention_dropout=attention_dropout, drop_path_rate=drop_path_rate
        )
        inputs, x, input_shape = _common.image_stem(
            "HybridMixerViT", input_shape, input_tensor, include_preprocessing, normalization, patch_size
        )
        x = PatchEmbedding(
            hidden_dim,
            patch_size,
            use_class_token=use_class_token,
            position_embedding=position_embedding,
            name="patch_embedding",
        )(x)
        rates = _common.drop_path_rates(drop_path_rate, mixer_depth + attention_depth)
        x = _common.mixer_blocks(
            x,
            0,
            mixer_depth,
            rates,
            token_mlp_dim=token_mlp_dim or hidden_dim // 2,
            channel_mlp_dim=channel_mlp_dim or 4 * hidden_dim,
            dropout_rate=dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
        )
        x = _common.transformer_blocks(
            x,
            mixer_depth,
            attention_depth,
            rates,
            num_heads=num_heads,
            mlp_dim=mlp_dim or 4 * hidden_dim,
            dropout_rate=dropout_rate,
            attention_dropout=attention_dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            flash_attention=flash_attention,
        )
        x = LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
        outputs = _common.pool_and_head(
            x, pooling, include_top, classes, classifier_activation, int(use_class_token)
        )
        config = _common.constructor_config(HybridMixerViT, locals())
        self._finish(inputs, outputs, config, weights, name, **kwargs)


_common.fill_docstring(HybridMixerViT)

register_model(
    "hybrid_mixer_vit_cifar_patch4_32", HybridMixerViT,
    "CIFAR-size hybrid: 32 px, patch 4 (64 tokens), 3 Mixer then 3 Transformer blocks of width 128",
    mixer_depth=3, attention_depth=3, patch_size=4, hidden_dim=128, num_heads=4,
    token_mlp_dim=64, channel_mlp_dim=256, mlp_dim=256, input_shape=(32, 32, 3), classes=10,
)
register_model(
    "seed_mixer_mixer_vit", HybridMixerViT,
    "Seed reproduction: the original notebook's Mixer->Mixer->ViT, 64 px, patch 8 (64 patches), "
    "width 128, 2 Mixer blocks then 1 Transformer block, global-average-pooling head",
    mixer_depth=2, attention_depth=1, patch_size=8, hidden_dim=128, num_heads=4,
    token_mlp_dim=64, channel_mlp_dim=64, mlp_dim=256, input_shape=(64, 64, 3), classes=10,
)
