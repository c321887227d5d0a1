"""Normalization layers computed the way each backend's fastest kernel wants them.

`BatchNormalization`, with torch's fused inference kernel.

At inference, Keras's torch backend normalizes in three passes over the activations
(`x - mean`, then an in-place scale and shift), the first allocating a new tensor. Under
torch this subclass calls `torch.nn.functional.batch_norm` once, on a channels-first
view of the channels-last activations (no copy: the view has PyTorch's `channels_last`
layout, which the kernel reads and writes directly). ConvMixer normalizes twice per block;
on ConvMixer-768 at batch 32, Keras's three passes took about a fifth of torch inference
(`benchmarks/conv_routes.py` measures the layer per backend). Training keeps Keras's
computation (batch moments, moving averages with the biased variance). Same arguments,
variables and results as `keras.layers.BatchNormalization`.

`LayerNormalization`, with a hand-written gradient in training under JAX on the CPU.

Keras computes `x * (rsqrt(var) * gamma) + (beta - mean * rsqrt(var) * gamma)`: the
scale and shift are broadcast to the activations' full size before the multiply, and
XLA:CPU materializes them (`wrapped_broadcast` in a profile), forwards and again in the
gradient that JAX derives from that expression. This subclass computes
`(x - mean) * rsqrt(var) * gamma + beta` in one pass and gives JAX the textbook
backward pass (the one PyTorch's and apex's fused kernels compute), which keeps only the
input and the per-row mean and reciprocal deviation:
`dx = rstd * (g - mean(g) - xhat * mean(g * xhat))` with `g = dy * gamma`.
The gain is small: a ViT-Ti training step at batch 32 took 0.98x and a Mixer-S/16 step
0.97x the time with Keras's layer on one CPU, and 0.99x and 1.00x on two
(`benchmarks/jax_cpu_routes.py`, route `layer_norm_vjp`). Inference keeps Keras's
computation: this form made ViT-Ti's inference 1.07x slower on one CPU. TensorFlow,
torch (whose Keras backend already calls `torch.nn.functional.layer_norm`), JAX on an
accelerator, several axes and `rms_scaling` use Keras's computation; under TensorFlow
with XLA the same backward pass gave no gain. Under torch, axes other than the trailing ones are normalized with
moments: Keras's torch route hands them to `layer_norm`, which cannot normalize them, and
fails. Same arguments, variables and results as `keras.layers.LayerNormalization`.
"""

import functools

import keras
from keras import ops

from keras_vitmix.layers._platform import jax_on_cpu as _jax_on_cpu
from keras_vitmix.layers._platform import torch_variable_value as _value

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
    """`keras.layers.LayerNormalization`, in one pass with a hand-written gradient when
    training under JAX on the CPU (see the module docstring).

    Example:

    >>> layer = LayerNormalization(epsilon=1e-6)
    >>> y = layer(keras.ops.convert_to_tensor([[1.0, 2.0, 3.0]]))
    >>> [round(float(v), 3) for v in keras.ops.convert_to_numpy(y)[0]]
    [-1.225, 0.0, 1.225]
    """

    def _fused_applies(self, inputs, training=True):
        return (
            bool(training)
            and _jax_on_cpu()
            and not self.rms_scaling
            and self.gamma is not None
            and self.beta is not None
            and [axis % len(inputs.shape) for axis in self.axis] == [len(inputs.shape) - 1]
        )

    def call(self, inputs, training=None):
        if not self._fused_applies(inputs, training):
            if keras.backend.backend() == "torch":
                if not self._trailing_axes(inputs):
                    return self._moments_call(inputs)
                if self._direct_torch(inputs):
                    return self._torch_layer_norm(inputs)
            return super().call(inputs)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")  # as Keras
        outputs = _jax_layer_norm()(
            ops.cast(inputs, compute_dtype),
            ops.cast(self.gamma, compute_dtype),
            ops.cast(self.beta, compute_dtype),
            float(self.epsilon),
        )
        return ops.cast(outputs, self.compute_dtype)

    def _trailing_axes(self, inputs):
        rank = len(inputs.shape)
        return sorted(axis % rank for axis in self.axis) == list(range(rank - len(self.axis), rank))

    def _direct_torch(self, inputs):
        return (
            not self.rms_scaling
            and self.variable_dtype == "float32"
            and self.compute_dtype in _FLOATS
            and str(inputs.dtype).removeprefix("torch.") in _FLOATS
        )

    def _torch_layer_norm(self, inputs):
        """`torch.nn.functional.layer_norm`, which Keras's layer also ends in under torch
        for trailing axes, with the same dtype steps done as plain tensor casts: a
        half-precision input is normalized in float32 (the float32 variables unchanged) and
        the result cast back to the input's dtype, then to the layer's compute dtype.
        Keras's checks around those steps took two thirds of a float32 call's 75 us (ViT-Ti
        makes 25 calls per image batch), and more under a mixed policy."""
        import torch

        rank = len(inputs.shape)
        shape = tuple(inputs.shape[axis] for axis in sorted(axis % rank for axis in self.axis))
        gamma = None if self.gamma is None else _value(self.gamma)
        beta = None if self.beta is None else _value(self.beta)
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


@functools.lru_cache(maxsize=None)
def _jax_layer_norm():
    """Layer normalization over the last axis as a `jax.custom_vjp` function
    `(x, gamma, beta, epsilon) -> y` (built on first use: JAX is imported only then)."""
    import jax
    import jax.numpy as jnp

    def forward(x, gamma, beta, epsilon):
        # Both moments in one pass over x, as Keras's `moments` computes them.
        mean = jnp.mean(x, axis=-1, keepdims=True)
        variance = jnp.maximum(jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean), 0.0)
        rstd = jax.lax.rsqrt(variance + epsilon)
        return (x - mean) * rstd * gamma + beta, (x, mean, rstd, gamma)

    def backward(epsilon, residuals, dy):
        x, mean, rstd, gamma = residuals
        xhat = (x - mean) * rstd
        g = dy * gamma
        dx = rstd * (
            g - jnp.mean(g, axis=-1, keepdims=True) - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True)
        )
        rows = tuple(range(x.ndim - 1))
        return dx, jnp.sum(dy * xhat, axis=rows), jnp.sum(dy, axis=rows)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def layer_norm(x, gamma, beta, epsilon):
        return forward(x, gamma, beta, epsilon)[0]

    layer_norm.defvjp(forward, backward)
    return layer_norm
