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

Register tokens (Darcet et al., "Vision Transformers Need Registers", ICLR 2024,
https://arxiv.org/abs/2309.16588): large ViTs repurpose a few low-information patch
tokens as scratch space for global computations, and those patches light up in the
attention maps; a handful of extra learned tokens, dropped at the output, take that role
instead. DINOv2 (Oquab et al., 2024, https://arxiv.org/abs/2304.07193) is the best-known
backbone trained with them; its variants here are timm's (`vit_*_dinov2`, 518 px,
LayerScale, features without a classifier), as is timm's register ViT with average
pooling (`vit_base_patch16_reg4_gap_256`).
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
        layer_scale_init: optional float, LayerScale initial value (timm's
            `init_values`; 1e-5 in DINOv2).
        layer_norm_epsilon: float.
        flash_attention: None, True or False: the blocks' fused attention kernel (see
            `keras_vitmix.layers.MultiHeadSelfAttention`); None follows
            `keras.config.is_flash_attention_enabled()`.
        num_register_tokens: int, register tokens after the class (and distillation)
            token (Darcet et al., 2024); like the class token they are left out of
            "avg"/"max" pooling, patch grids and attention maps.
        use_prefix_positions: bool, whether the position embedding has entries for the
            class/distillation/register tokens; False is timm's `no_embed_class=True`
            (the embedding covers the patches only), as DINOv2 with registers and DeiT
            III use.
        use_fc_norm: bool, apply the final LayerNorm after pooling (`fc_norm`, timm's
            default for average pooling) instead of to the tokens before it; with
            `include_top=False` and `pooling=None` the tokens are then not normalized,
            as timm's `forward_features` returns them.
{application_args}
    Example:

    >>> model = ViT(patch_size=4, hidden_dim=64, num_layers=2, num_heads=4,
    ...             input_shape=(32, 32, 3), classes=10)
    >>> model(keras.ops.zeros((1, 32, 32, 3))).shape
    (1, 10)

    Reference:
        Dosovitskiy et al., 2021, https://arxiv.org/abs/2010.11929
        Darcet et al., 2024, https://arxiv.org/abs/2309.16588 (register tokens)
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
        num_register_tokens=0,
        use_prefix_positions=True,
        use_fc_norm=False,
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
            if use_fc_norm:
                raise ValueError(
                    "DeiT's two heads read the normalized class and distillation tokens: "
                    "`use_distillation_token=True` takes no `use_fc_norm`. Received: use_fc_norm=True"
                )
        _common.check_application_args(include_top, pooling, classes, weights, poolings, "ViT")
        _common.check_depths(num_layers=num_layers)
        _common.check_rates(
            dropout_rate=dropout_rate, attention_dropout=attention_dropout, drop_path_rate=drop_path_rate
        )
        mlp_dim = mlp_dim or 4 * hidden_dim
        inputs, x, input_shape = _common.image_stem(
            "ViT", input_shape, input_tensor, include_preprocessing, normalization, patch_size
        )
        embedding = PatchEmbedding(
            hidden_dim,
            patch_size,
            use_class_token=use_class_token,
            use_distillation_token=use_distillation_token,
            position_embedding=position_embedding,
            num_register_tokens=num_register_tokens,
            use_prefix_positions=use_prefix_positions,
            name="patch_embedding",
        )
        prefix = embedding.num_prefix_tokens
        x = embedding(x)
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
        if not use_fc_norm:
            x = LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
        if use_distillation_token and pooling == "token":
            outputs = _common.distilled_pool_and_head(x, include_top, classes, classifier_activation)
        else:
            # With use_fc_norm the final norm follows the pooling and precedes the head.
            fc_norm = LayerNormalization(epsilon=layer_norm_epsilon, name="fc_norm") if use_fc_norm else None
            outputs = _common.pool_and_head(
                x, pooling, include_top, classes, classifier_activation, prefix, pooled_norm=fc_norm
            )
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
# CIFAR-size: a CPU trains it in minutes; the DeiT adds the distillation token and head.
_CIFAR = dict(
    patch_size=4, hidden_dim=128, num_layers=6, num_heads=4, mlp_dim=256, input_shape=(32, 32, 3), classes=10
)
register_model(
    "vit_cifar_patch4_32", ViT,
    "CIFAR-size ViT: 32 px, patch 4 (64 tokens + class token), 6 layers of width 128", **_CIFAR,
)
register_model(
    "deit_tiny_distilled_patch4_32", ViT,
    "CIFAR-size DeiT: vit_cifar_patch4_32 with a distillation token and a second head for a "
    "teacher (keras_vitmix.distillation), logits averaged",
    use_distillation_token=True, **_CIFAR,
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

# DINOv2 (timm's `vit_*_dinov2`): self-supervised backbones, 518 px (a 37x37 grid of
# 14 px patches), LayerScale, ImageNet normalization. timm publishes them without a
# classifier (num_classes=0) and its forward returns the normed class token: so do these.
# With registers the position embedding covers the patches only (no_embed_class).
_DINOV2 = dict(
    patch_size=14, num_layers=12, layer_scale_init=1e-5, normalization="imagenet",
    input_shape=(518, 518, 3), include_top=False, pooling="token",
)
_REGISTERS = dict(num_register_tokens=4, use_prefix_positions=False)
register_model(
    "vit_small_patch14_dinov2", ViT,
    "DINOv2 ViT-S/14 backbone: pooled class-token features, no classifier, LayerScale, 518 px",
    hidden_dim=384, num_heads=6, **_DINOV2,
)
register_model(
    "vit_small_patch14_reg4_dinov2", ViT,
    "DINOv2 ViT-S/14 with 4 register tokens (Darcet et al. 2024): class-token features, 518 px",
    hidden_dim=384, num_heads=6, **_DINOV2, **_REGISTERS,
)
register_model(
    "vit_base_patch14_reg4_dinov2", ViT,
    "DINOv2 ViT-B/14 with 4 register tokens (Darcet et al. 2024): class-token features, 518 px",
    hidden_dim=768, num_heads=12, **_DINOV2, **_REGISTERS,
)
register_model(
    "vit_base_patch16_reg4_gap_256", ViT,
    "ViT-B/16 with 4 registers and no class token: mean of the patch tokens, then a LayerNorm "
    "(timm's fc_norm), 256 px",
    patch_size=16, hidden_dim=768, num_layers=12, num_heads=12, use_class_token=False,
    pooling="avg", use_fc_norm=True, input_shape=(256, 256, 3), **_REGISTERS,
)
