"""Normalization layers computed the way torch's fused kernels want them.

`BatchNormalization` (route "batch_norm_torch"). At inference, Keras's torch backend
normalizes in three passes over the activations (`x - mean`, then an in-place scale and
shift), the first allocating a new tensor. Under torch this subclass calls
`torch.nn.functional.batch_norm` once, on a channels-first view of the channels-last
activations (no copy: the view has PyTorch's `channels_last` layout, which the kernel
reads and writes directly). ConvMixer normalizes twice per block. Training keeps Keras's
computation (batch moments, moving averages with the biased variance).

`LayerNormalization` (route "layer_norm_torch"). Keras's torch backend also ends in
`torch.nn.functional.layer_norm`, but wraps it in dtype checks and casts that cost more
than the kernel on small inputs; this subclass calls it with plain tensor casts. Not a
fast route but a fix: under torch, axes other than the trailing ones are normalized with
moments, where Keras's torch route hands them to `layer_norm`, which cannot normalize
them, and fails.

Same arguments, variables and results as Keras's layers; TensorFlow, JAX and the routes
switched off (`keras_vitmix.config`) use Keras's computation. docs/performance.md has the
measurements.
"""

import keras
from keras import ops

from keras_vitmix import config

_FLOATS = ("float16", "bfloat16", "float32")  # the dtypes LayerNormalization's torch route takes


@keras.saving.register_keras_serializable(package="keras_vitmix")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, with one fused call at inference under torch.

    Example:

    >>> layer = BatchNormalization()
    >>> layer(keras.ops.ones((2, 4, 4, 8)), training=False).shape
    (2, 4, 4, 8)
    """

    def _fused_applies(self, inputs, training, mask):
        return (
            keras.backend.backend() == "torch"
            and config.fast_routes_enabled("batch_norm_torch")
            and mask is None
            and not (training and self.trainable)
            and len(inputs.shape) >= 2
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import torch

        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")  # as Keras: float32 statistics
        x = ops.cast(inputs, compute_dtype)
        axis = self.axis % len(x.shape)
        order = [0, axis] + [i for i in range(1, len(x.shape)) if i != axis]
        restore = [order.index(i) for i in range(len(x.shape))]

        def cast(variable):
            return ops.cast(variable, compute_dtype)

        outputs = torch.nn.functional.batch_norm(
            x.permute(*order),
            cast(self.moving_mean),
            cast(self.moving_variance),
            cast(self.gamma) if self.scale else None,
            cast(self.beta) if self.center else None,
            training=False,
            eps=self.epsilon,
        ).permute(*restore)
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_vitmix")
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization`, as one `layer_norm` call under torch (see the
    module docstring).

    Example:

    >>> layer = LayerNormalization(epsilon=1e-6)
    >>> y = layer(keras.ops.convert_to_tensor([[1.0, 2.0, 3.0]]))
    >>> [round(float(v), 3) for v in keras.ops.convert_to_numpy(y)[0]]
    [-1.225, 0.0, 1.225]
    """

    def call(self, inputs):
        if keras.backend.backend() == "torch":
            if not self._trailing_axes(inputs):
                return self._moments_call(inputs)
            if self._direct_torch(inputs):
                return self._torch_layer_norm(inputs)
        return super().call(inputs)

    def _trailing_axes(self, inputs):
        rank = len(inputs.shape)
        return sorted(axis % rank for axis in self.axis) == list(range(rank - len(self.axis), rank))

    def _direct_torch(self, inputs):
        return (
            config.fast_routes_enabled("layer_norm_torch")
            and not self.rms_scaling
            and self.variable_dtype == "float32"
            and self.compute_dtype in _FLOATS
            and str(inputs.dtype).removeprefix("torch.") in _FLOATS
        )

    def _torch_layer_norm(self, inputs):
        """`torch.nn.functional.layer_norm`, which Keras's layer also ends in under torch
        for trailing axes, with the same dtype steps done as plain tensor casts: a
        half-precision input is normalized in float32 (the float32 variables unchanged) and
        the result cast back to the input's dtype, then to the layer's compute dtype."""
        import torch

        rank = len(inputs.shape)
        shape = tuple(inputs.shape[axis] for axis in sorted(axis % rank for axis in self.axis))
        gamma = None if self.gamma is None else self.gamma.value
        beta = None if self.beta is None else self.beta.value
        x = inputs if inputs.dtype == torch.float32 else inputs.float()
        outputs = torch.nn.functional.layer_norm(x, shape, gamma, beta, self.epsilon)
        return outputs.to(inputs.dtype).to(getattr(torch, self.compute_dtype))  # each a no-op when equal

    def _moments_call(self, inputs):
        """Keras's computation with moments. Keras's torch backend passes any contiguous
        axes to `torch.nn.functional.layer_norm`, which normalizes the trailing axes only,
        so `axis=1` of a rank-3 input failed there."""
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)
        rank = len(x.shape)
        axes = sorted(axis % rank for axis in self.axis)
        shape = [x.shape[i] if i in axes else 1 for i in range(rank)]
        mean, variance = ops.moments(x, axes=axes, keepdims=True)
        scale = ops.rsqrt(variance + self.epsilon)
        if self.rms_scaling:  # Keras's deprecated form: x / sqrt(var) * gamma
            outputs = x * scale
        else:
            outputs = (x - mean) * scale
        if self.gamma is not None:
            outputs = outputs * ops.reshape(ops.cast(self.gamma, compute_dtype), shape)
        if self.beta is not None:
            outputs = outputs + ops.reshape(ops.cast(self.beta, compute_dtype), shape)
        return ops.cast(outputs, self.compute_dtype)
