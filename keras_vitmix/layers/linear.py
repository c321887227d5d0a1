"""`Dense` computed the way each backend's fastest kernel wants it.

Under JAX (route "dense_jax"), an input of rank > 2 (tokens: (B, N, D)) is flattened to
one (B*N, D) matrix product and reshaped back. Keras's `Dense` multiplies the 3-D tensor
directly, and in the backward pass XLA:CPU then contracts the kernel gradient over two
axes (B and N): it materializes a transposed copy of the activations and runs that
product off its fast matrix-multiply path. The flattening is a free reshape of a
contiguous array. Also under JAX, `activation="gelu"` is computed in the erf form
(`gelu` below).

Under torch (route "dense_torch"), Keras's `Dense` computes `matmul(x, W)` and then adds
the bias in a second pass over the output: a separate kernel launch and a full read and
write of the activations, forwards and backwards. `torch.nn.functional.linear` (what
timm's `nn.Linear` runs) folds the bias into the BLAS call (`addmm`); Keras's (in, out)
kernel goes to it as a transposed view (no copy).

TensorFlow, LoRA-enabled layers and the routes switched off (`keras_vitmix.config`) use
Keras's computation. The variables and results are Keras's `Dense`'s.
docs/performance.md has the measurements.
"""

import keras
from keras import ops

from keras_vitmix import config


@keras.saving.register_keras_serializable(package="keras_vitmix")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense`, computed as one fused `linear` call under torch and as one
    2-D matrix product (GELU in its erf form) under JAX.

    Example:

    >>> Dense(8)(keras.ops.ones((2, 5, 16))).shape
    (2, 5, 8)
    """

    def call(self, inputs, training=None):
        backend = keras.backend.backend()
        if self.lora_enabled or backend not in ("torch", "jax") or not config.fast_routes_enabled(f"dense_{backend}"):
            return super().call(inputs, training=training)
        if backend == "jax":
            return self._flat_call(inputs, training)
        import torch

        # A variable's value is already autocast to the policy's compute dtype;
        # `ops.cast` would re-check dtypes at every call (a fifth of the work around a
        # small matrix product).
        kernel = self.kernel.value
        bias = None if self.bias is None else self.bias.value
        if kernel.dtype != inputs.dtype:
            kernel = kernel.to(inputs.dtype)
            bias = None if bias is None else bias.to(inputs.dtype)
        outputs = torch.nn.functional.linear(inputs, kernel.t(), bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _flat_call(self, inputs, training):
        """Keras's computation on the input flattened to a matrix (shapes are static
        under JAX), with exact GELU in its erf form (`gelu`)."""
        shape = tuple(inputs.shape)
        flat = inputs if len(shape) <= 2 else ops.reshape(inputs, (-1, shape[-1]))
        outputs = ops.matmul(flat, self.kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation is keras.activations.gelu:
            outputs = gelu(outputs)
        elif self.activation is not None:
            outputs = self.activation(outputs)
        return outputs if len(shape) <= 2 else ops.reshape(outputs, shape[:-1] + (self.units,))


def gelu(x):
    """Exact GELU, x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2))), the form TensorFlow and
    PyTorch compute. JAX's `jax.nn.gelu(approximate=False)` (what Keras's "gelu" runs
    there) writes it with `erfc`, which XLA:CPU expands into two polynomial branches, a
    division and an exponential per element. The two agree to 1e-6 and the gradients to
    3e-7."""
    return ops.multiply(ops.multiply(x, 0.5), ops.add(1.0, ops.erf(ops.multiply(x, 0.7071067811865476))))
