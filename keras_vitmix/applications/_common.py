"""Pieces every application shares: argument checks, the input, preprocessing, the head."""

import inspect
import os

import keras
from keras import ops

from keras_vitmix import _internals
from keras_vitmix.layers import BatchNormalization, ConvMixerBlock, MixerBlock, PatchEmbedding, TransformerBlock
from keras_vitmix.layers._checks import check_positive_int, check_rate, to_pair

POOLINGS = ("token", "avg", "max", None)

# Per-channel statistics of the pixel values the preprocessing maps to ~N(0, 1).
NORMALIZATIONS = {
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # ViT / Mixer checkpoints
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ConvMixer, DeiT
    "miil": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # timm's *_miil checkpoints: pixels / 255
}

APPLICATION_ARGS_DOC = """\
        input_shape: optional (height, width, 3); defaults to the variant's size.
        include_top: bool, whether to end with the classification head.
        include_preprocessing: bool; when True the model takes pixel values in
            [0, 255] and rescales and normalizes them itself.
        normalization: the per-channel mean and std the preprocessing normalizes
            with: "inception" (0.5, 0.5), "imagenet", or "miil" (pixels / 255 only);
            a checkpoint's own (see `keras_vitmix.weights`).
        weights: None (random initialization) or the path to a `.weights.h5` file;
            `create_model(name, weights="timm")` loads timm's ImageNet checkpoints.
        input_tensor: optional Keras tensor to use as the model's input.
        pooling: "token" (the class token), "avg", "max", or None. With
            `include_top=False` and `pooling=None` the model returns its tokens.
        classes: int, number of classes of the head.
        classifier_activation: activation of the head ("softmax", None for logits).
        name: the model's name.
        **kwargs: `keras.Model` keyword arguments (`dtype`, `trainable`), and two that
            `get_config` writes so that a `.keras` file keeps them: `metadata`, a
            JSON-able dict of what the model was trained on (`class_names`, `dataset`,
            ...; see `keras_vitmix.saving.model_metadata`), and `frozen_layers`, the
            names of the top-level layers whose `trainable` is False (Keras rebuilds a subclassed
            model from its constructor, which would thaw them)."""


def fill_docstring(cls):
    """Puts the shared application arguments into a family's docstring."""
    cls.__doc__ = cls.__doc__.replace("{application_args}", APPLICATION_ARGS_DOC)
    return cls


def check_application_args(include_top, pooling, classes, weights, allowed_poolings, family):
    if pooling not in allowed_poolings:
        raise ValueError(
            f"{family} supports pooling in {allowed_poolings}. Received: pooling={pooling!r}"
        )
    if include_top and pooling is None:
        raise ValueError(
            "A classification head needs pooled features: `include_top=True` requires "
            f"`pooling` in {tuple(p for p in allowed_poolings if p)}. Received: pooling=None"
        )
    if include_top:
        check_positive_int(classes, "classes")
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise ValueError(
                f"`weights` must be None or the path to a weights file. Received: weights={weights!r}"
            )
        if not os.path.isfile(weights):
            hint = ""
            if str(weights).startswith("timm"):
                hint = ". timm checkpoints load through create_model(name, weights='timm')"
            raise ValueError(
                f"`weights` must be None or the path to an existing weights file. "
                f"Received: weights={os.fspath(weights)!r}, which does not exist{hint}"
            )


def check_depths(**depths):
    for name, value in depths.items():
        check_positive_int(value, name, minimum=0)
    if sum(depths.values()) < 1:
        raise ValueError(f"The model needs at least one block. Received: {depths}")


def check_rates(**rates):
    for name, value in rates.items():
        check_rate(value, name)


def image_input(input_shape, input_tensor, default_size, require_rgb):
    """Returns (model inputs, image tensor, resolved input shape)."""
    if input_shape is None:
        if input_tensor is not None and input_tensor.shape[1:] != (None,) * 3:
            input_shape = tuple(input_tensor.shape[1:])
        else:
            input_shape = (default_size, default_size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(d is None or int(d) < 1 for d in input_shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels) with known positive sizes. "
            f"Received: input_shape={input_shape}"
        )
    input_shape = tuple(int(d) for d in input_shape)
    if require_rgb and input_shape[-1] != 3:
        raise ValueError(
            "With `include_preprocessing=True` the model normalizes RGB images and needs 3 "
            f"channels. Received: input_shape={input_shape} ({input_shape[-1]} channels)"
        )
    if input_tensor is None:
        inputs = keras.Input(shape=input_shape, name="images")
        return inputs, inputs, input_shape
    if not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=input_shape, name="images")
        return inputs, inputs, input_shape
    return input_tensor, input_tensor, input_shape


def preprocess(x, normalization):
    mean, std = NORMALIZATIONS[normalization]
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(x)
    return keras.layers.Normalization(
        mean=list(mean), variance=[s * s for s in std], name="normalization"
    )(x)


def check_grid(input_shape, patch_size, family):
    """Raises the model-level error for a patch size that does not divide the image."""
    patch = to_pair(patch_size, "patch_size")
    if input_shape[0] % patch[0] or input_shape[1] % patch[1]:
        raise ValueError(
            f"{family}: the patch size must divide the image size. Received: "
            f"patch_size={patch_size}, image size=({input_shape[0]}, {input_shape[1]})"
        )


def pool_and_head(x, pooling, include_top, classes, classifier_activation, num_prefix_tokens=0, pooled_norm=None):
    """Pools tokens (B, N, D) or a grid (B, h, w, D), then the optional Dense head;
    `pooled_norm`, a layer, normalizes the pooled features (timm's `fc_norm`)."""
    if pooling is not None:
        if len(x.shape) == 4:
            pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
            x = pool(name=f"{pooling}_pool")(x)
        else:
            x = TokenPooling(pooling, num_prefix_tokens, name=f"{pooling}_pool")(x)
        if pooled_norm is not None:
            x = pooled_norm(x)
    if include_top:
        x = keras.layers.Dense(classes, name="head")(x)
        # Probabilities (or logits) in float32 under mixed precision.
        x = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    return x


def distilled_pool_and_head(x, include_top, classes, classifier_activation):
    """DeiT's two heads: `head` on the class token, `head_dist` on the distillation
    token, their logits averaged (timm at inference); without a top, the two tokens'
    mean (timm's pre-logits)."""
    class_token = TokenPooling("token", 2, name="token_pool")(x)
    distillation_token = TokenPooling("distillation_token", 2, name="distillation_token_pool")(x)
    if not include_top:
        return keras.layers.Average(name="token_average")([class_token, distillation_token])
    logits = keras.layers.Average(name="head_average")(
        [
            keras.layers.Dense(classes, name="head")(class_token),
            keras.layers.Dense(classes, name="head_dist")(distillation_token),
        ]
    )
    return keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(logits)


@keras.saving.register_keras_serializable(package="keras_vitmix")
class TokenPooling(keras.layers.Layer):
    """(B, p + N, D) -> (B, D): the class token, or the mean/max of the N patch tokens.

    Args:
        pooling: "token", "avg" or "max"; "distillation_token" reads DeiT's second
            token.
        num_prefix_tokens: int, leading class/distillation/register tokens, left out
            of "avg" and "max" as timm does.
    """

    def __init__(self, pooling, num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("token", "distillation_token", "avg", "max"):
            raise ValueError(f"Unknown pooling. Received: pooling={pooling!r}")
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, inputs):
        if self.pooling == "token":
            return inputs[:, 0]
        if self.pooling == "distillation_token":
            return inputs[:, 1]
        patches = inputs[:, self.num_prefix_tokens :]
        if self.pooling == "avg":
            return ops.mean(patches, axis=1)
        return ops.max(patches, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"pooling": self.pooling, "num_prefix_tokens": self.num_prefix_tokens})
        return config


def drop_path_rates(rate, depth):
    """Stochastic depth grows linearly with depth, from 0 to `rate` (timm, DeiT)."""
    if depth <= 1:
        return [float(rate)] * depth
    return [float(rate) * i / (depth - 1) for i in range(depth)]


def constructor_config(cls, arguments):
    """The constructor arguments of `cls` taken from its `locals()`, for `get_config`.

    `weights` and `input_tensor` are left out: weights are the model's saved state and a
    tensor does not serialize (the resolved `input_shape` stands in for it).
    """
    skip = {"self", "kwargs", "name", "weights", "input_tensor"}
    names = [n for n in inspect.signature(cls.__init__).parameters if n not in skip]
    return {n: arguments[n] for n in names}


class Application(keras.Model):
    """Base of the families: a functional model that keeps its constructor arguments,
    its run metadata and which of its layers are frozen."""

    _MODEL_KWARGS = ("dtype", "trainable")
    _SAVED_STATE = ("metadata", "frozen_layers")

    def _finish(self, inputs, outputs, config, weights, name, **kwargs):
        unknown = sorted(set(kwargs) - set(self._MODEL_KWARGS) - set(self._SAVED_STATE))
        if unknown:
            valid = sorted(config) + ["name", "weights", "input_tensor", *self._MODEL_KWARGS, *self._SAVED_STATE]
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {unknown}. "
                f"Valid arguments: {', '.join(valid)}"
            )
        metadata, frozen = kwargs.pop("metadata", None), kwargs.pop("frozen_layers", None)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._config = config
        self.metadata = metadata
        if frozen:
            freeze_layers(self, frozen)
        if weights is not None:
            self.load_weights(weights)

    @property
    def metadata(self):
        """What the model was trained on (`class_names`, `dataset`, ...): a dict that
        `get_config`, and so every `.keras` file, keeps."""
        return dict(self._metadata)

    @metadata.setter
    def metadata(self, value):
        self._metadata = check_metadata(value)

    def call(self, inputs, training=None, mask=None, **kwargs):
        # Keras only warns on a mismatched functional input, and the normalization
        # would broadcast one channel to three: refuse instead.
        expected = tuple(self.inputs[0].shape[1:])
        received = tuple(inputs.shape[1:])
        if len(received) != len(expected) or any(
            e is not None and r is not None and e != r for e, r in zip(expected, received)
        ):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects images of shape "
                f"{(None, *expected)} (batch, height, width, channels). Received: images of "
                f"shape {tuple(inputs.shape)}. Resize the images, or build the model with "
                "another `input_shape`."
            )
        if mask is None and not kwargs and _internals.graph_calls_available(self):
            # Under torch, each layer of the graph without Keras's per-call work.
            return _internals.call_graph(self, inputs, training)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def get_compile_config(self):
        # Keras records a backend's own optimizer class (a module in its private backend
        # package, e.g. torch's Adam), so a file compiled under torch would import torch
        # when loaded under TensorFlow. Point it at the public, backend-neutral class so
        # a saved model loads compiled under any backend.
        config = super().get_compile_config()
        optimizer = (config or {}).get("optimizer")
        if (
            isinstance(optimizer, dict)
            and ".backend." in optimizer.get("module", "")
            and hasattr(keras.optimizers, optimizer.get("class_name", ""))
        ):
            optimizer["module"] = "keras.optimizers"
        return config

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, **self._config}
        if self._metadata:
            config["metadata"] = dict(self._metadata)
        frozen = frozen_layer_paths(self)
        if frozen:
            config["frozen_layers"] = frozen
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def check_metadata(value):
    """`value` as a dict that JSON can write (a model's `metadata`); None is {}."""
    import json

    if value is None:
        return {}
    if not isinstance(value, dict):
        # Keras's attribute tracking may have wrapped a list: name the plain type.
        kind = next((t.__name__ for t in (list, tuple, set, str) if isinstance(value, t)), type(value).__name__)
        raise TypeError(f"`metadata` must be a dict. Received: metadata of type {kind}")
    try:
        return json.loads(json.dumps(value))  # a copy, and proof that a config can hold it
    except (TypeError, ValueError) as error:
        raise TypeError(f"`metadata` must hold JSON values only (str, numbers, lists, dicts): {error}") from None


def frozen_layer_paths(model):
    """The names of `model`'s top-level layers that hold weights and are frozen
    (`trainable = False`), e.g. ["patch_embedding", "block_0"]. A layer frozen inside a
    trainable block is not listed: features, probes and layer decay freeze by block."""
    return [layer.name for layer in model.layers if not layer.trainable and layer.weights]


def freeze_layers(model, names):
    """Sets `trainable = False` on the top-level layers of `model` named in `names`."""
    layers = {layer.name: layer for layer in model.layers}
    missing = [name for name in names if name not in layers]
    if missing:
        raise ValueError(
            f"`frozen_layers` names layers that {model.name!r} does not have: {missing}. "
            f"Its layers: {sorted(layers)}"
        )
    for name in names:
        layers[name].trainable = False


def image_stem(family, input_shape, input_tensor, include_preprocessing, normalization, patch_size):
    """Input, size checks and preprocessing: returns (inputs, x, resolved input_shape)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"{family}: `normalization` must be one of {tuple(NORMALIZATIONS)}. "
            f"Received: normalization={normalization!r}"
        )
    inputs, x, input_shape = image_input(input_shape, input_tensor, 224, include_preprocessing)
    check_grid(input_shape, patch_size, family)
    if include_preprocessing:
        x = preprocess(x, normalization)
    return inputs, x, input_shape


def transformer_blocks(x, start, depth, drop_path_rates, **block_kwargs):
    """Stacks TransformerBlocks named block_{start} ..."""
    for i in range(depth):
        x = TransformerBlock(drop_path_rate=drop_path_rates[start + i], name=f"block_{start + i}", **block_kwargs)(x)
    return x


def mixer_blocks(x, start, depth, drop_path_rates, **block_kwargs):
    """Stacks MixerBlocks named block_{start} ..."""
    for i in range(depth):
        x = MixerBlock(drop_path_rate=drop_path_rates[start + i], name=f"block_{start + i}", **block_kwargs)(x)
    return x


def conv_stem(x, hidden_dim, patch_size, activation):
    """ConvMixer's stem: patch convolution -> activation -> BatchNorm, on the grid."""
    x = PatchEmbedding(hidden_dim, patch_size, position_embedding=None, flatten=False, name="patch_embedding")(x)
    x = keras.layers.Activation(activation, name="stem_activation")(x)
    return BatchNormalization(epsilon=1e-5, momentum=0.9, name="stem_norm")(x)


def conv_mixer_blocks(x, start, depth, kernel_size, activation):
    for i in range(depth):
        x = ConvMixerBlock(kernel_size, activation=activation, name=f"block_{start + i}")(x)
    return x
