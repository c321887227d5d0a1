"""Pre-norm Transformer encoder block.

Vaswani et al., 2017 (https://arxiv.org/abs/1706.03762) with the pre-norm placement
used by ViT (Dosovitskiy et al., 2021): x + Attention(LN(x)), then x + MLP(LN(x)).
Optional LayerScale (Touvron et al., "Going deeper with Image Transformers", 2021)
and stochastic depth on both residual branches.
"""

import keras
from keras import ops

from keras_vitmix._internals import call_sublayer as _sub
from keras_vitmix.layers._checks import check_positive_int, check_rate
from keras_vitmix.layers.attention import MultiHeadSelfAttention
from keras_vitmix.layers.drop_path import DropPath
from keras_vitmix.layers.mlp import MLP
from keras_vitmix.layers.normalization import LayerNormalization


@keras.saving.register_keras_serializable(package="keras_vitmix")
class TransformerBlock(keras.layers.Layer):
    """x + DropPath(LayerScale(MHSA(LN(x)))), then x + DropPath(LayerScale(MLP(LN(x)))).

    Args:
        num_heads: int, attention heads.
        mlp_dim: int, hidden width of the MLP.
        dropout_rate: float, dropout after the attention projection and in the MLP.
        attention_dropout: float, dropout on the attention probabilities.
        drop_path_rate: float, stochastic-depth rate of both residual branches.
        layer_scale_init: optional float; when set, each branch is scaled by a learned
            per-channel vector initialized to this value (LayerScale).
        layer_norm_epsilon: float, epsilon of both LayerNorms.
        flash_attention: None, True or False, see `MultiHeadSelfAttention`.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tokens (B, N, D).
        attention_mask: optional boolean mask, see `MultiHeadSelfAttention`.
        return_attention_scores: bool, also return scores (B, heads, N, N).
        training: bool, enables dropout and stochastic depth.

    Returns:
        Tokens (B, N, D), or `(tokens, scores)`.

    Example:

    >>> block = TransformerBlock(num_heads=4, mlp_dim=128)
    >>> block(keras.ops.ones((2, 16, 64))).shape
    (2, 16, 64)

    Reference:
        Dosovitskiy et al., 2021, https://arxiv.org/abs/2010.11929
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout_rate=0.0,
        attention_dropout=0.0,
        drop_path_rate=0.0,
        layer_scale_init=None,
        layer_norm_epsilon=1e-6,
        flash_attention=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.mlp_dim = check_positive_int(mlp_dim, "mlp_dim")
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.attention_dropout = check_rate(attention_dropout, "attention_dropout")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.layer_scale_init = None if layer_scale_init is None else float(layer_scale_init)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        policy = self.dtype_policy
        self.norm1 = LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm1")
        self.attention = MultiHeadSelfAttention(
            num_heads, dropout=attention_dropout, flash_attention=flash_attention, dtype=policy, name="attention"
        )
        self.flash_attention = self.attention.flash_attention
        self.attention_output_dropout = keras.layers.Dropout(dropout_rate, dtype=policy, name="dropout")
        self.norm2 = LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm2")
        self.mlp = MLP(mlp_dim, dropout_rate=dropout_rate, dtype=policy, name="mlp")
        self.drop_path = DropPath(drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
        dim = input_shape[-1]
        for layer in (self.norm1, self.attention, self.norm2, self.mlp):
            layer.build(input_shape)
        # Checked by Keras at this layer's call, before any sublayer sees a wrong shape.
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: dim})
        if self.layer_scale_init is not None:
            init = keras.initializers.Constant(self.layer_scale_init)
            self.gamma1 = self.add_weight(shape=(dim,), initializer=init, name="layer_scale1")
            self.gamma2 = self.add_weight(shape=(dim,), initializer=init, name="layer_scale2")

    def _scale(self, x, gamma_name):
        if self.layer_scale_init is None:
            return x
        return x * ops.cast(getattr(self, gamma_name), x.dtype)

    def call(self, inputs, attention_mask=None, return_attention_scores=False, training=None):
        attended = _sub(
            self.attention,
            _sub(self.norm1, inputs),
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if return_attention_scores:
            attended, scores = attended
        attended = _sub(self.attention_output_dropout, attended, training=training)
        x = inputs + _sub(self.drop_path, self._scale(attended, "gamma1"), training=training)
        mixed = _sub(self.mlp, _sub(self.norm2, x), training=training)
        x = x + _sub(self.drop_path, self._scale(mixed, "gamma2"), training=training)
        return (x, scores) if return_attention_scores else x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, return_attention_scores=False, **kwargs):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        batch, tokens = inputs.shape[0], inputs.shape[1]
        return outputs, keras.KerasTensor((batch, self.num_heads, tokens, tokens), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "dropout_rate": self.dropout_rate,
                "attention_dropout": self.attention_dropout,
                "drop_path_rate": self.drop_path_rate,
                "layer_scale_init": self.layer_scale_init,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "flash_attention": self.flash_attention,
            }
        )
        return config
