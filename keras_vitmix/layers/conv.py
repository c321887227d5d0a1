"""`Conv2D`: Keras's layer, computed as reshape + matmul when the kernel tiles the image.

A convolution whose kernel equals its stride (a patch embedding; a 1x1 pointwise
convolution) is a matrix product over non-overlapping patches. Under JAX and TensorFlow
(route "conv_matmul") this layer computes it that way when the contraction
(kh * kw * C_in) is at least 64, where XLA:CPU's convolution is far slower than its
matrix product; with a small contraction (a 2x2 patch of RGB) Keras's convolution stays.

Under torch (route "conv_torch"), every such convolution (and any other at stride 1 or
"valid" padding) is instead one `torch.nn.functional.conv2d` on a channels-first view of
the channels-last input, which is PyTorch's `channels_last` memory layout: oneDNN
convolves it natively, with no copy, as timm's `nn.Conv2d` runs. Keras's torch
convolution copies the input to channels-first and back, and the matrix product runs
slower than oneDNN's convolution there.

Same arguments, variables (names, shapes, layout) and numbers either way; the routes
switched off (`keras_vitmix.config`) use Keras's computation. docs/performance.md has the
measurements.
"""

import keras
from keras import ops

from keras_vitmix import config
from keras_vitmix.layers._platform import torch_tensor as _torch_tensor

_MIN_CONTRACTION = 64


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
    """`keras.layers.Conv2D`, as reshape + matmul when the kernel tiles the image, and as
    one channels-last `conv2d` under torch.

    The matrix product applies (TensorFlow, JAX) when kernel size == strides (a 1x1
    kernel included), "valid" padding, no dilation, one group, channels last, a static
    spatial shape divisible by the kernel, and kh * kw * C_in >= 64; otherwise
    `keras.layers.Conv2D` unchanged. Same arguments, variables and results (see the
    module docstring).

    Example:

    >>> Conv2D(32, 4, strides=4)(keras.ops.ones((2, 16, 16, 3))).shape
    (2, 4, 4, 32)
    """

    def _matmul_applies(self, inputs):
        kh, kw = self.kernel_size
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        return (
            config.fast_routes_enabled("conv_matmul")
            and self.data_format == "channels_last"
            and tuple(self.strides) == (kh, kw)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and (self.padding == "valid" or (kh, kw) == (1, 1))
            and height is not None
            and width is not None
            and height % kh == 0
            and width % kw == 0
            and kh * kw * channels >= _MIN_CONTRACTION
        )

    def _torch_applies(self, inputs):
        return torch_conv2d_applies(self, inputs)

    def call(self, inputs):
        if self._torch_applies(inputs):
            kernel = ops.cast(self.kernel, inputs.dtype)
            bias = ops.cast(self.bias, inputs.dtype) if self.use_bias else None
            outputs = torch_conv2d(inputs, kernel, bias, self.strides, self.padding, self.dilation_rate, self.groups)
            return outputs if self.activation is None else self.activation(outputs)
        if not self._matmul_applies(inputs):
            return super().call(inputs)
        kh, kw = self.kernel_size
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        grid_h, grid_w = height // kh, width // kw
        kernel = ops.cast(self.kernel, inputs.dtype)
        if (kh, kw) == (1, 1):
            outputs = ops.matmul(inputs, kernel[0, 0])
        else:
            # (B, gh, kh, gw, kw, C) -> (B, gh, gw, kh, kw, C): the kernel's (kh, kw, C) order.
            patches = ops.reshape(inputs, (-1, grid_h, kh, grid_w, kw, channels))
            patches = ops.transpose(patches, (0, 1, 3, 2, 4, 5))
            patches = ops.reshape(patches, (-1, grid_h, grid_w, kh * kw * channels))
            outputs = ops.matmul(patches, ops.reshape(kernel, (kh * kw * channels, self.filters)))
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
