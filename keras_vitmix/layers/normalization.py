"""`BatchNormalization` with torch's fused inference kernel.

At inference, Keras's torch backend normalizes in three passes over the activations
(`x - mean`, then an in-place scale and shift), the first allocating a new tensor. Under
torch this subclass calls `torch.nn.functional.batch_norm` once, on a channels-first
view of the channels-last activations (no copy: the view has PyTorch's `channels_last`
layout, which the kernel reads and writes directly). ConvMixer normalizes twice per block;
on ConvMixer-768 at batch 32, Keras's three passes took about a fifth of torch inference
(`benchmarks/conv_routes.py` measures the layer per backend). Training keeps Keras's
computation (batch moments, moving averages with the biased variance). Same arguments,
variables and results as `keras.layers.BatchNormalization`.
"""

import keras
from keras import ops


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
