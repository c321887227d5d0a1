"""Stochastic depth (DropPath).

Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016
(https://arxiv.org/abs/1603.09382). In a residual branch, each sample's whole branch
is dropped with probability ``rate`` during training, and kept branches are scaled by
``1 / (1 - rate)`` so the expected output is unchanged.
"""

import keras
from keras import ops

from keras_vitmix.layers._checks import check_rate


@keras.saving.register_keras_serializable(package="keras_vitmix")
class DropPath(keras.layers.Layer):
    """Drops whole samples of a residual branch during training.

    Args:
        rate: float in [0, 1), the probability of dropping a sample's branch.
        seed: optional int seeding the layer's `keras.random.SeedGenerator`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of any rank whose first axis is the batch.
        training: bool; the layer is the identity unless `training=True`.

    Returns:
        A tensor shaped like `inputs`.

    Example:

    >>> layer = DropPath(0.5, seed=1)
    >>> y = layer(keras.ops.ones((4, 3)), training=True)  # rows are 0 or 2

    Reference:
        Huang et al., 2016, https://arxiv.org/abs/1603.09382
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate, "rate")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        # One draw per sample, broadcast over every other axis.
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator) < keep
        mask = ops.cast(mask, inputs.dtype)
        return inputs * mask / ops.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
