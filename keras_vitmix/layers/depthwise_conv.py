"""`DepthwiseConv2D`: Keras's layer, computed as shifted multiply-adds under JAX on the CPU.

XLA:CPU lowers a grouped convolution with one group per channel (what
`keras.ops.depthwise_conv` becomes under JAX) to a slow generic loop: on a 2-core CPU, a
5x5 depthwise convolution of a (128, 16, 16, 256) grid took 0.52 s forward and 3.7 s
forward+backward under JAX, against 0.06 s and 0.44 s written as 25 shifted
multiply-adds (`benchmarks/conv_routes.py` measures it per backend). ConvMixer spends
most of its time there, so this layer takes the shifted form where it is faster: the JAX
backend on the CPU, stride 1, "same" or "valid" padding, no dilation, depth multiplier 1.
Everywhere else (TensorFlow and torch have fast native kernels, GPUs have cuDNN) it is
`keras.layers.DepthwiseConv2D` unchanged. Same arguments, variables (names, shapes,
layout) and numbers either way.
"""

import keras
from keras import ops


def _same_padding(kernel_size):
    """(before, after) of TensorFlow's and Keras's "same" padding at stride 1."""
    before = (kernel_size - 1) // 2
    return before, kernel_size - 1 - before


def shifted_depthwise_conv(inputs, kernel, padding="same"):
    """Depthwise convolution at stride 1 as a sum of shifted, channel-scaled copies.

    Args:
        inputs: tensor (B, H, W, C), channels last.
        kernel: tensor (kh, kw, C, 1), Keras's depthwise kernel layout.
        padding: "same" or "valid".

    Returns:
        Tensor (B, H', W', C), equal to
        `keras.ops.depthwise_conv(inputs, kernel, padding=padding)`.
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    height, width = inputs.shape[1], inputs.shape[2]
    if padding == "same":
        inputs = ops.pad(inputs, [[0, 0], _same_padding(kh), _same_padding(kw), [0, 0]])
    else:
        height, width = height - kh + 1, width - kw + 1
    outputs = None
    for i in range(kh):
        for j in range(kw):
            term = inputs[:, i : i + height, j : j + width, :] * kernel[i, j, :, 0]
            outputs = term if outputs is None else outputs + term
    return outputs


def _jax_on_cpu():
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


@keras.saving.register_keras_serializable(package="keras_vitmix")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D`, computed as shifted multiply-adds under JAX on the CPU.

    Same arguments, variables and results as `keras.layers.DepthwiseConv2D`; only the
    computation differs, where it is known to be faster (see the module docstring).

    Example:

    >>> layer = DepthwiseConv2D(5, padding="same")
    >>> layer(keras.ops.ones((2, 8, 8, 32))).shape
    (2, 8, 8, 32)
    """

    def _shifted_applies(self, inputs):
        return (
            self.data_format == "channels_last"
            and self.depth_multiplier == 1
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.padding in ("same", "valid")
            and inputs.shape[1] is not None
            and inputs.shape[2] is not None
            and _jax_on_cpu()
        )

    def call(self, inputs):
        if not self._shifted_applies(inputs):
            return super().call(inputs)
        outputs = shifted_depthwise_conv(inputs, ops.cast(self.kernel, inputs.dtype), self.padding)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
