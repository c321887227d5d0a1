"""ConvMixer.

Trockman & Kolter, "Patches Are All You Need?", TMLR 2023
(https://arxiv.org/abs/2201.09792): a patch convolution, then blocks that mix space
with a large depthwise convolution and channels with a pointwise one, all at the
patch grid's resolution; no attention, no downsampling. The ImageNet variants match
timm's parameter counts (timm's 768/32 uses ReLU, the others GELU).
"""

import keras

from keras_vitmix.applications import _common
from keras_vitmix.applications.registry import register_model


@keras.saving.register_keras_serializable(package="keras_vitmix")
class ConvMixer(_common.Application):
    """ConvMixer-h/d.

    Args:
        hidden_dim: int, channels h.
        num_layers: int, depth d.
        patch_size: int or (int, int), patch size; must divide the image size.
        kernel_size: int, depthwise kernel size.
        activation: str, "gelu" or "relu".
{application_args}
    With `include_top=False, pooling=None` the model returns the grid (B, h, w, D).

    Example:

    >>> model = ConvMixer(hidden_dim=32, num_layers=2, patch_size=2, kernel_size=3,
    ...                   input_shape=(32, 32, 3), classes=10)
    >>> model(keras.ops.zeros((1, 32, 32, 3))).shape
    (1, 10)

    Reference:
        Trockman & Kolter, 2023, https://arxiv.org/abs/2201.09792
    """

    def __init__(
        self,
        hidden_dim=768,
        num_layers=32,
        patch_size=7,
        kernel_size=7,
        activation="gelu",
        input_shape=None,
        include_top=True,
        include_preprocessing=True,
        normalization="imagenet",
        weights=None,
        input_tensor=None,
        pooling="avg",
        classes=1000,
        classifier_activation="softmax",
        name="conv_mixer",
        **kwargs,
    ):
        _common.check_application_args(
            include_top, pooling, classes, weights, ("avg", "max", None), "ConvMixer"
        )
        _common.check_depths(num_layers=num_layers)
        inputs, x, input_shape = _common.image_stem(
            "ConvMixer", input_shape, input_tensor, include_preprocessing, normalization, patch_size
        )
        x = _common.conv_stem(x, hidden_dim, patch_size, activation)
        x = _common.conv_mixer_blocks(x, 0, num_layers, kernel_size, activation)
        outputs = _common.pool_and_head(x, pooling, include_top, classes, classifier_activation)
        config = _common.constructor_config(ConvMixer, locals())
        self._finish(inputs, outputs, config, weights, name, **kwargs)


_common.fill_docstring(ConvMixer)

register_model(
    "convmixer_768_32", ConvMixer, "ConvMixer-768/32, patch 7, kernel 7, ReLU (as timm), 224 px",
    hidden_dim=768, num_layers=32, patch_size=7, kernel_size=7, activation="relu",
)
register_model(
    "convmixer_1536_20", ConvMixer, "ConvMixer-1536/20, patch 7, kernel 9, 224 px",
    hidden_dim=1536, num_layers=20, patch_size=7, kernel_size=9,
)
register_model(
    "convmixer_256_8", ConvMixer, "CIFAR-size ConvMixer-256/8, patch 2, kernel 5, 32 px",
    hidden_dim=256, num_layers=8, patch_size=2, kernel_size=5, input_shape=(32, 32, 3), classes=10,
)
register_model(
    "seed_convmixer", ConvMixer,
    "Seed reproduction: the original notebook's ConvMixer-16/1, patch 2, kernel 5, 32 px",
    hidden_dim=16, num_layers=1, patch_size=2, kernel_size=5, input_shape=(32, 32, 3), classes=10,
)
