"""`Dense` with the bias fused into the matrix product under torch.

Keras's `Dense` computes `matmul(x, W)` and then adds the bias in a second pass over the
output. Under the torch backend that second pass is a separate kernel launch and a full
read and write of the activations, forwards and backwards. `torch.nn.functional.linear`
(what timm's `nn.Linear` runs) folds the bias into the BLAS call (`addmm`). This
subclass calls it under torch, with Keras's (in, out) kernel passed as a transposed
view (no copy); every other backend, and LoRA- or quantization-enabled layers, use
Keras's computation. The variables and results are Keras's `Dense`'s.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vitmix")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense`, computed as one fused `linear` call under torch.

    Example:

    >>> Dense(8)(keras.ops.ones((2, 5, 16))).shape
    (2, 5, 8)
    """

    def call(self, inputs, training=None):
        if keras.backend.backend() != "torch" or self.lora_enabled:
            return super().call(inputs, training=training)
        import torch

        kernel = ops.cast(self.kernel, inputs.dtype)
        bias = None if self.bias is None else ops.cast(self.bias, inputs.dtype)
        outputs = torch.nn.functional.linear(inputs, kernel.t(), bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
