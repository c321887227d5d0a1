"""ConvMixer block: depthwise convolution mixes space, pointwise convolution mixes channels.

Trockman & Kolter, "Patches Are All You Need?", TMLR 2023
(https://arxiv.org/abs/2201.09792): Residual(DepthwiseConv -> act -> BN), then
PointwiseConv -> act -> BN, on the patch grid (B, h, w, D).
"""

import keras

from keras_vitmix._internals import call_sublayer as _sub
from keras_vitmix.layers._checks import check_positive_int
from keras_vitmix.layers.conv import Conv2D
from keras_vitmix.layers.depthwise_conv import DepthwiseConv2D
from keras_vitmix.layers.normalization import BatchNormalization


@keras.saving.register_keras_serializable(package="keras_vitmix")
class ConvMixerBlock(keras.layers.Layer):
    """x + BN(act(DepthwiseConv(x))), then BN(act(Conv1x1(.))).

    Args:
        kernel_size: int, size of the depthwise kernel ("same" padding).
        activation: activation name, "gelu" (the paper) or "relu" (timm's 768/32).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: grid (B, h, w, D).
        training: bool, BatchNorm uses batch statistics when True.

    Returns:
        Grid (B, h, w, D).

    Example:

    >>> ConvMixerBlock(kernel_size=5)(keras.ops.ones((2, 8, 8, 32))).shape
    (2, 8, 8, 32)

    Reference:
        Trockman & Kolter, 2023, https://arxiv.org/abs/2201.09792
    """

    def __init__(self, kernel_size, activation="gelu", **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        self.activation = activation
        keras.activations.get(activation)  # fails early on an unknown name
        policy = self.dtype_policy
        self.depthwise = DepthwiseConv2D(
            kernel_size, padding="same", activation=activation, dtype=policy, name="depthwise"
        )
        # PyTorch's BatchNorm2d defaults (eps 1e-5, momentum 0.1), as in the paper's code.
        self.depthwise_norm = BatchNormalization(
            epsilon=1e-5, momentum=0.9, dtype=policy, name="depthwise_norm"
        )
        self.pointwise_norm = BatchNormalization(
            epsilon=1e-5, momentum=0.9, dtype=policy, name="pointwise_norm"
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "ConvMixerBlock expects a grid (batch, height, width, dim). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.pointwise = Conv2D(
            input_shape[-1], 1, activation=self.activation, dtype=self.dtype_policy, name="pointwise"
        )
        for layer in (self.depthwise, self.depthwise_norm, self.pointwise, self.pointwise_norm):
            layer.build(input_shape)
        # Checked by Keras at this layer's call, before any sublayer sees a wrong shape.
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: input_shape[-1]})

    def call(self, inputs, training=None):
        x = inputs + _sub(self.depthwise_norm, _sub(self.depthwise, inputs, training=training), training=training)
        return _sub(self.pointwise_norm, _sub(self.pointwise, x), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "activation": self.activation})
        return config
