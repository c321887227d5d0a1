"""MLP-Mixer block: token mixing across patches, then channel mixing within each.

Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision", NeurIPS 2021
(https://arxiv.org/abs/2105.01601). The token-mixing MLP acts on the transposed
(B, D, N) tokens, so its size depends on the number of patches N, which the block
reads from its input shape (as big_vision does), never from an argument.
"""

import keras
from keras import ops

from keras_vitmix._internals import call_sublayer as _sub
from keras_vitmix.layers._checks import check_positive_int, check_rate
from keras_vitmix.layers.drop_path import DropPath
from keras_vitmix.layers.mlp import MLP
from keras_vitmix.layers.normalization import LayerNormalization


@keras.saving.register_keras_serializable(package="keras_vitmix")
class MixerBlock(keras.layers.Layer):
    """x + TokenMLP(LN(x)^T)^T, then x + ChannelMLP(LN(x)).

    Args:
        token_mlp_dim: int, hidden width of the token-mixing MLP.
        channel_mlp_dim: int, hidden width of the channel-mixing MLP.
        dropout_rate: float, dropout inside both MLPs.
        drop_path_rate: float, stochastic-depth rate of both residual branches.
        layer_norm_epsilon: float, epsilon of both LayerNorms.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tokens (B, N, D).
        training: bool, enables dropout and stochastic depth.

    Returns:
        Tokens (B, N, D).

    Example:

    >>> MixerBlock(token_mlp_dim=32, channel_mlp_dim=128)(keras.ops.ones((2, 16, 64))).shape
    (2, 16, 64)

    Reference:
        Tolstikhin et al., 2021, https://arxiv.org/abs/2105.01601
    """

    def __init__(
        self,
        token_mlp_dim,
        channel_mlp_dim,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.token_mlp_dim = check_positive_int(token_mlp_dim, "token_mlp_dim")
        self.channel_mlp_dim = check_positive_int(channel_mlp_dim, "channel_mlp_dim")
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        policy = self.dtype_policy
        self.norm1 = LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm1")
        self.token_mixing = MLP(token_mlp_dim, dropout_rate=dropout_rate, dtype=policy, name="token_mixing")
        self.norm2 = LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm2")
        self.channel_mixing = MLP(channel_mlp_dim, dropout_rate=dropout_rate, dtype=policy, name="channel_mixing")
        self.drop_path = DropPath(drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None:
            raise ValueError(
                "MixerBlock expects tokens (batch, tokens, dim) with a known number of "
                f"tokens. Received: input_shape={tuple(input_shape)}"
            )
        batch, tokens, dim = input_shape
        self.num_tokens = tokens
        # Checked by Keras at this layer's call, before any sublayer sees a wrong shape.
        self.input_spec = keras.InputSpec(ndim=3, axes={1: tokens, -1: dim})
        self.norm1.build(input_shape)
        self.token_mixing.build((batch, dim, tokens))
        self.norm2.build(input_shape)
        self.channel_mixing.build(input_shape)

    def call(self, inputs, training=None):
        x = ops.transpose(_sub(self.norm1, inputs), (0, 2, 1))  # (B, D, N)
        x = ops.transpose(_sub(self.token_mixing, x, training=training), (0, 2, 1))  # (B, N, D)
        x = inputs + _sub(self.drop_path, x, training=training)
        y = _sub(self.channel_mixing, _sub(self.norm2, x), training=training)
        return x + _sub(self.drop_path, y, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "token_mlp_dim": self.token_mlp_dim,
                "channel_mlp_dim": self.channel_mlp_dim,
                "dropout_rate": self.dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
