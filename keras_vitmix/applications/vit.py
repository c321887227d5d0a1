"""Vision Transformer (ViT).

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale", ICLR 2021 (https://arxiv.org/abs/2010.11929): patches become tokens, a class
token and position embeddings are added, and a stack of pre-norm Transformer blocks
classifies from the class token. The 224 px variants match timm's parameter counts.

DeiT (Touvron et al., "Training data-efficient image transformers & distillation
through attention", ICML 2021, https://arxiv.org/abs/2012.12877) is the same network
trained on ImageNet alone; its distilled variants add a distillation token with a
second head (`use_distillation_token=True`), the two heads' logits averaged at
inference as in timm's `VisionTransformerDistilled`.
"""

import keras

from keras_vitmix.applications import _common
from keras_vitmix.applications.registry import register_model
from keras_vitmix.layers import LayerNormalization, PatchEmbedding


@keras.saving.register_keras_serializable(package="keras_vitmix")
class ViT(_common.Application):
    """Vision Transformer.

    Args:
        patch_size: int or (int, int), patch size; must divide the image size.
        hidden_dim: int, token dimension.
        num_layers: int, number of Transformer blocks.
        num_heads: int, attention heads (must divide `hidden_dim`).
        mlp_dim: int, MLP hidden width; defaults to `4 * hidden_dim`.
        use_class_token: bool, prepend a class token.
        use_distillation_token: bool, DeiT's distillation token after the class
            token, read by a second head `head_dist`; the two heads' logits are
            averaged (with `include_top=False`, the two tokens). Needs
            `use_class_token=True` and `pooling` "token" or None.
        position_embedding: "learned", "sincos" or None.
        dropout_rate: float, dropout in the blocks.
        attention_dropout: float, dropout on attention probabilities.
        drop_path_rate: float, stochastic depth of the last block (linear from 0).
        layer_scale_init: optional float, LayerScale initial value.
        layer_norm_epsilon: float.
        flash_attention: None, True or False: the blocks' fused attention kernel (see
            `keras_vitmix.layers.MultiHeadSelfAttention`); None follows
            `keras.config.is_flash_attention_enabled()`.
{application_args}
    Example:

    >>> model = ViT(patch_size=4, hidden_dim=64, num_layers=2, num_heads=4,
    ...             input_shape=(32, 32, 3), classes=10)
    >>> model(keras.ops.zeros((1, 32, 32, 3))).shape
    (1, 10)

    Reference:
        Dosovitskiy et al., 2021, https://arxiv.org/abs/2010.11929
    """

    def __init__(
        self,
        patch_size=16,
        hidden_dim=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=None,
        use_class_token=True,
        use_distillation_token=False,
        position_embedding="learned",
        dropout_rate=0.0,
        attention_dropout=0.0,
        drop_path_rate=0.0,
        layer_scale_init=None,
        layer_norm_epsilon=1e-6,
        flash_attention=None,
        input_shape=None,
        include_top=True,
        include_preprocessing=True,
        normalization="inception",
        weights=None,
        input_tensor=None,
        pooling="token",
        classes=1000,
        classifier_activation="softmax",
        name="vit",
        **kwargs,
    ):
        poolings = _common.POOLINGS if use_class_token else ("avg", "max", None)
        if use_distillation_token:  # the two heads read the two tokens, as in timm
            poolings = ("token", None)
        _common.check_application_args(include_top, pooling, classes, weights, poolings, "ViT")
        _common.check_depths(num_layers=num_layers)
        _common.check_rates(
            dropout_rate=dropout_rate, attention_dropout=attention_dropout, drop_path_rate=drop_path_rate
        )
        mlp_dim = mlp_dim or 4 * hidden_dim
        inputs, x, input_shape = _common.image_stem(
            "ViT", input_shape, input_tensor, include_preprocessing, normalization, patch_size
        )
        x = PatchEmbedding(
            hidden_dim,
            patch_size,
            use_class_token=use_class_token,
            use_distillation_token=use_distillation_token,
            position_embedding=position_embedding,
            name="patch_embedding",
        )(x)
        x = keras.layers.Dropout(dropout_rate, name="embedding_dropout")(x)
        x = _common.transformer_blocks(
            x,
            0,
            num_layers,
            _common.drop_path_rates(drop_path_rate, num_layers),
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            dropout_rate=dropout_rate,
            attention_dropout=attention_dropout,
            layer_scale_init=layer_scale_init,
            layer_norm_epsilon=layer_norm_epsilon,
            flash_attention=flash_attention,
        )
        x = LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
        if use_distillation_token and pooling == "token":
            outputs = _common.distilled_pool_and_head(x, include_top, classes, classifier_activation)
        else:
            prefix = int(use_class_token) + int(use_distillation_token)
            outputs = _common.pool_and_head(x, pooling, include_top, classes, classifier_activation, prefix)
        config = _common.constructor_config(ViT, locals())
        self._finish(inputs, outputs, config, weights, name, **kwargs)


_common.fill_docstring(ViT)

_SIZES = {
    # size: (hidden, heads, short name); patch 16, 12 layers, 224 px
    "tiny": (192, 3, "Ti"),
    "small": (384, 6, "S"),
    "base": (768, 12, "B"),
}
for _size, (_dim, _heads, _short) in _SIZES.items():
    _shape = dict(patch_size=16, hidden_dim=_dim, num_layers=12, num_heads=_heads)
    register_model(f"vit_{_size}_patch16_224", ViT, f"ViT-{_short}/16, 224 px", **_shape)
    # DeiT: the same networks trained on ImageNet-1k alone, fed ImageNet's mean and std.
    register_model(
        f"deit_{_size}_patch16_224", ViT, f"DeiT-{_short}/16, 224 px, ImageNet normalization",
        normalization="imagenet", **_shape,
    )

register_model(
    "deit_tiny_distilled_patch16_224",
    ViT,
    "DeiT-Ti/16 distilled: a distillation token and a second head, logits averaged, 224 px",
    patch_size=16,
    hidden_dim=192,
    num_layers=12,
    num_heads=3,
    use_distillation_token=True,
    normalization="imagenet",
)
register_model(
    "vit_cifar_patch4_32",
    ViT,
    "CIFAR-size ViT: 32 px, patch 4 (64 tokens + class token), 6 layers of width 128",
    patch_size=4,
    hidden_dim=128,
    num_layers=6,
    num_heads=4,
    mlp_dim=256,
    input_shape=(32, 32, 3),
    classes=10,
)
register_model(
    "seed_vit",
    ViT,
    "Seed reproduction: the original notebook's ViT, 72 px, patch 6 (12x12 = 144 patches, "
    "no class token), 1 layer, 4 heads, width 64",
    patch_size=6,
    hidden_dim=64,
    num_layers=1,
    num_heads=4,
    mlp_dim=128,
    use_class_token=False,
    dropout_rate=0.1,
    pooling="avg",
    input_shape=(72, 72, 3),
    classes=10,
)
