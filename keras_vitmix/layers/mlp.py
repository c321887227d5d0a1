"""The two-layer perceptron shared by every family.

Transformers (Vaswani et al., 2017) and MLP-Mixer (Tolstikhin et al., 2021) both
use Dense -> activation -> Dropout -> Dense -> Dropout; ViT and Mixer use GELU.
"""

import keras

from keras_vitmix._internals import call_sublayer as _sub
from keras_vitmix.layers._checks import check_positive_int, check_rate
from keras_vitmix.layers.linear import Dense


@keras.saving.register_keras_serializable(package="keras_vitmix")
class MLP(keras.layers.Layer):
    """Dense -> activation -> Dropout -> Dense -> Dropout on the last axis.

    Args:
        hidden_dim: int, width of the hidden layer.
        output_dim: optional int, width of the output; defaults to the input width.
        activation: activation name or callable for the hidden layer.
        dropout_rate: float in [0, 1), dropout after each Dense.
        use_bias: bool, whether the Dense layers have biases.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor (..., D).
        training: bool, enables dropout.

    Returns:
        Tensor (..., output_dim or D).

    Example:

    >>> MLP(64)(keras.ops.ones((2, 5, 16))).shape
    (2, 5, 16)
    """

    def __init__(
        self,
        hidden_dim,
        output_dim=None,
        activation="gelu",
        dropout_rate=0.0,
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        self.output_dim = None if output_dim is None else check_positive_int(output_dim, "output_dim")
        self.activation = activation
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.use_bias = use_bias
        self.fc1 = Dense(
            hidden_dim, activation=activation, use_bias=use_bias, dtype=self.dtype_policy, name="fc1"
        )
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy, name="dropout")

    def build(self, input_shape):
        output_dim = self.output_dim or input_shape[-1]
        self.fc2 = Dense(
            output_dim, use_bias=self.use_bias, dtype=self.dtype_policy, name="fc2"
        )
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden_dim,))
        # Checked by Keras at this layer's call, before any sublayer sees a wrong shape.
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def call(self, inputs, training=None):
        x = _sub(self.dropout, _sub(self.fc1, inputs), training=training)
        return _sub(self.dropout, _sub(self.fc2, x), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "output_dim": self.output_dim,
                "activation": self.activation,
                "dropout_rate": self.dropout_rate,
                "use_bias": self.use_bias,
            }
        )
        return config
