"""`Conv2D`: Keras's layer, computed under torch as one channels-last `conv2d`.

Under torch (route "conv_torch"), every convolution at stride 1 or with "valid" padding
(patch embeddings, ConvMixer's 1x1 pointwise convolutions) is one
`torch.nn.functional.conv2d` on a channels-first view of the channels-last input, which
is PyTorch's `channels_last` memory layout: oneDNN convolves it natively, with no copy,
as timm's `nn.Conv2d` runs. Keras's torch convolution copies the input to channels-first
and back.

JAX and TensorFlow use Keras's convolution. Until issue #34 they computed a convolution
whose kernel tiles the image as reshape + matmul (route "conv_matmul"), which XLA:CPU
once ran far faster than its convolution; re-timed there, it no longer paid.

Same arguments, variables (names, shapes, layout) and numbers either way; the route
switched off (`keras_vitmix.config`) uses Keras's computation. docs/performance.md has
the measurements.
"""

import keras
from keras import ops

from keras_vitmix import config
from keras_vitmix.layers._platform import torch_tensor as _torch_tensor


def same_pads(kernel_size, padding):
    """(before, after) padding at stride 1: TensorFlow's and Keras's for "same", none for "valid"."""
    if padding != "same":
        return 0, 0
    before = (kernel_size - 1) // 2
    return before, kernel_size - 1 - before


def torch_conv2d_applies(layer, inputs):
    """Whether `torch_conv2d` computes `layer` (a Keras 2-D convolution) on `inputs`: a
    torch tensor with data, channels last, and padding that needs no input size ("valid",
    or "same" at stride 1)."""
    return (
        _torch_tensor(inputs)
        and config.fast_routes_enabled("conv_torch")
        and layer.data_format == "channels_last"
        and (layer.padding == "valid" or tuple(layer.strides) == (1, 1))
    )


def torch_conv2d(inputs, kernel, bias, strides, padding, dilation_rate, groups):
    """A Keras 2-D convolution as one `torch.nn.functional.conv2d` on channels-last data.

    Args:
        inputs: torch tensor (B, H, W, C_in).
        kernel: tensor (kh, kw, C_in / groups, C_out), Keras's layout.
        bias: tensor (C_out,) or None.
        strides, dilation_rate: pairs of ints.
        padding: "valid", or "same" (at stride 1).
        groups: int.

    Returns:
        Torch tensor (B, H', W', C_out), a view of the channels-last result.
    """
    import torch

    kh, kw = kernel.shape[0], kernel.shape[1]
    kernel = kernel.permute(3, 2, 0, 1)  # (C_out, C_in / groups, kh, kw)
    dh, dw = dilation_rate
    (top, bottom), (left, right) = same_pads((kh - 1) * dh + 1, padding), same_pads((kw - 1) * dw + 1, padding)
    inputs = inputs.permute(0, 3, 1, 2)  # channels-first view, channels_last memory
    if (top, left) != (bottom, right):  # an even kernel: TensorFlow's "same" pads more after
        inputs = torch.nn.functional.pad(inputs, (left, right, top, bottom))
        top = left = 0
    outputs = torch.nn.functional.conv2d(
        inputs, kernel, bias, stride=tuple(strides), padding=(top, left), dilation=tuple(dilation_rate), groups=groups
    )
    return outputs.permute(0, 2, 3, 1)


@keras.saving.register_keras_serializable(package="keras_vitmix")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`, as one channels-last `conv2d` under torch; elsewhere
    `keras.layers.Conv2D` unchanged. Same arguments, variables and results (see the
    module docstring).

    Example:

    >>> Conv2D(32, 4, strides=4)(keras.ops.ones((2, 16, 16, 3))).shape
    (2, 4, 4, 32)
    """

    def _torch_applies(self, inputs):
        return torch_conv2d_applies(self, inputs)

    def call(self, inputs):
        if self._torch_applies(inputs):
            kernel = ops.cast(self.kernel, inputs.dtype)
            bias = ops.cast(self.bias, inputs.dtype) if self.use_bias else None
            outputs = torch_conv2d(inputs, kernel, bias, self.strides, self.padding, self.dilation_rate, self.groups)
            return outputs if self.activation is None else self.activation(outputs)
        return super().call(inputs)
