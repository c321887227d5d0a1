"""`Conv2D`: Keras's layer, computed as reshape + matmul when the kernel tiles the image.

A convolution whose kernel equals its stride (a patch embedding; a 1x1 pointwise
convolution) is a matrix product over non-overlapping patches. This layer computes it
that way when the contraction (kh * kw * C_in) is at least 64, where it beat the
backends' convolutions: forward and backward of ViT-Ti's 16x16 patch embedding on 32
images at 224 px took 0.57 s as a convolution under JAX (XLA:CPU) and 0.10 s as a
matmul; under torch, Keras's convolution also transposes to channels-first and back.
With a small contraction (a 2x2 patch of RGB) Keras's convolution stays
(`benchmarks/conv_routes.py` measures both per backend). Same arguments, variables
(names, shapes, layout) and numbers either way.
"""

import keras
from keras import ops

_MIN_CONTRACTION = 64


@keras.saving.register_keras_serializable(package="keras_vitmix")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`, as reshape + matmul when the kernel tiles the image.

    Applies when kernel size == strides (a 1x1 kernel included), "valid" padding, no
    dilation, one group, channels last, a static spatial shape divisible by the kernel,
    and kh * kw * C_in >= 64; otherwise `keras.layers.Conv2D` unchanged. Same
    arguments, variables and results (see the module docstring).

    Example:

    >>> Conv2D(32, 4, strides=4)(keras.ops.ones((2, 16, 16, 3))).shape
    (2, 4, 4, 32)
    """

    def _matmul_applies(self, inputs):
        kh, kw = self.kernel_size
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        return (
            self.data_format == "channels_last"
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

    def call(self, inputs):
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
