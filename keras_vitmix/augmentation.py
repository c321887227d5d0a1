"""The training split's augmentation policies, as Keras preprocessing layers.

One definition (`policy_layers`) serves both pipelines: `BatchAugmentation` runs the
layers on the accelerator inside the compiled training step (the device pipeline,
`keras_vitmix.device_pipeline`), and `augmenter` runs the same layers inside tf.data
(`keras_vitmix.datasets.load(..., augment=)`).

The policies, each the one before plus more:

- "none": nothing.
- "light": a padded random crop (zero padding of an eighth of the side, cropped back at
  a random offset drawn per image) and a horizontal flip where flips keep labels.
- "medium": light, then RandAugment (2 ops per batch; `keras.layers.RandAugment`) and
  random erasing (a quarter of the images; `keras.layers.RandomErasing`).
- "strong": medium, then MixUp or CutMix (one of the two per batch), which makes the
  labels soft one-hot rows.

The crop is `RandomPaddedCrop`, an offset per image: `keras.layers.RandomCrop` draws one
offset for the whole batch, a much weaker augmentation at CIFAR size, and
`keras.layers.RandomTranslation`, which can express the same crop, is an order of
magnitude slower under JAX (see `RandomPaddedCrop`).
"""

import keras
from keras import ops

from keras_vitmix import _internals

AUGMENTATIONS = ("none", "light", "medium", "strong")
# Older spellings that `keras_vitmix.datasets.load` has accepted.
_ALIASES = {False: "none", None: "none", True: "light"}
RAND_AUGMENT_OPS = 2
RAND_AUGMENT_FACTOR = 0.5  # Keras's default magnitude (0..1)
ERASING_PROBABILITY = 0.25


def policy_name(augment):
    """The policy name for `augment` (a name of `AUGMENTATIONS`, or False/True/None)."""
    if not isinstance(augment, str) and augment in _ALIASES and type(augment) in (bool, type(None)):
        return _ALIASES[augment]
    if augment not in AUGMENTATIONS:
        raise ValueError(
            f"`augment` must be one of {AUGMENTATIONS} (or False/True for 'none'/'light'). Received: augment={augment!r}"
        )
    return augment


def policy_layers(policy, image_shape, flip=True, seed=0, in_tf_data=False):
    """The Keras layers of a policy, in the order they apply, by role.

    Args:
        policy: a name of `AUGMENTATIONS` (or False/True).
        image_shape: (height, width, channels) of the images.
        flip: whether horizontal flips keep the labels (False for digits).
        seed: int; each layer gets its own seed derived from it.
        in_tf_data: the layers run inside tf.data, where Keras's own layers switch to
            TensorFlow whatever the backend: the crop is then
            `keras.layers.RandomTranslation` (nearest pixels, zero fill): the same crops
            as `RandomPaddedCrop` (which computes with the backend's ops), its offsets
            drawn continuously and rounded to whole pixels.

    Returns:
        A dict with the keys that apply of "crop", "flip", "rand_augment", "erasing",
        "mixup" and "cutmix". The layers compute in float32 whatever the dtype policy.
    """
    policy = policy_name(policy)
    height, width = image_shape[:2]
    layers = {}
    if policy == "none":
        return layers
    common = dict(dtype="float32")
    pad_h, pad_w = max(1, height // 8), max(1, width // 8)
    if in_tf_data:
        layers["crop"] = keras.layers.RandomTranslation(
            pad_h / height, pad_w / width, fill_mode="constant", fill_value=0.0, interpolation="nearest",
            seed=seed, **common,
        )
    else:
        layers["crop"] = RandomPaddedCrop(pad_h, pad_w, seed=seed, **common)
    if flip:
        layers["flip"] = keras.layers.RandomFlip("horizontal", seed=seed + 1, **common)
    if policy in ("medium", "strong"):
        rand_augment = keras.layers.RandAugment(
            value_range=(0, 255), num_ops=RAND_AUGMENT_OPS, factor=RAND_AUGMENT_FACTOR, seed=seed + 2, **common
        )
        if not in_tf_data:  # (inside tf.data, `augmenter` counts with tf.math.bincount)
            _internals.use_segment_sum_histograms(rand_augment)
        layers["rand_augment"] = rand_augment
        layers["erasing"] = keras.layers.RandomErasing(
            factor=ERASING_PROBABILITY, value_range=(0, 255), fill_value=0.0, seed=seed + 3, **common
        )
    if policy == "strong":
        layers["mixup"] = keras.layers.MixUp(alpha=0.2, seed=seed + 4, **common)
        layers["cutmix"] = keras.layers.CutMix(factor=1.0, seed=seed + 5, **common)
    return layers


@keras.saving.register_keras_serializable(package="keras_vitmix")
class RandomPaddedCrop(keras.layers.Layer):
    """Zero-pads each image by `padding` pixels and crops it back at a random offset drawn
    per image: the standard CIFAR crop.

    Keras's `RandomCrop` draws one offset per batch. `RandomTranslation` with nearest
    sampling and zero fill gives the same images as this layer, but its interpolated
    gather cost 700-780 ms per step of 64 images under JAX on a 2-core EPYC, against
    55 ms for the whole step without it. Here the crop is two batched products with
    one-hot shift matrices, exact for pixel values and fast on every backend.

    Args:
        height_padding: int >= 0, pixels added above and below.
        width_padding: int >= 0, pixels added left and right.
        seed: int or None.

    Call arguments:
        images: (B, H, W, C) floats. `training=False` returns them unchanged.
    """

    def __init__(self, height_padding, width_padding=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.height_padding = int(height_padding)
        self.width_padding = int(height_padding if width_padding is None else width_padding)
        if self.height_padding < 0 or self.width_padding < 0:
            raise ValueError(
                f"Padding must be >= 0. Received: height_padding={height_padding!r}, width_padding={width_padding!r}"
            )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _shifts(self, batch, size, padding):
        """(B, size, size + 2 * padding) one-hot rows selecting a window of the padded axis."""
        offsets = keras.random.randint((batch, 1), 0, 2 * padding + 1, seed=self.seed_generator)
        wanted = offsets + ops.arange(size)[None, :]  # (B, size): padded index of each output
        return ops.one_hot(wanted, size + 2 * padding, dtype=self.compute_dtype)

    def call(self, images, training=True):
        if not training:
            return images
        images = ops.cast(images, self.compute_dtype)
        batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
        pads = [[0, 0], [self.height_padding] * 2, [self.width_padding] * 2, [0, 0]]
        padded = ops.pad(images, pads)
        rows = self._shifts(batch, height, self.height_padding)
        cols = self._shifts(batch, width, self.width_padding)
        out = ops.einsum("bih,bhwc->biwc", rows, padded)
        return ops.einsum("bjw,biwc->bijc", cols, out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "height_padding": self.height_padding,
            "width_padding": self.width_padding,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="keras_vitmix")
class BatchAugmentation(keras.layers.Layer):
    """A policy applied to a batch of pixels and labels, with `keras.ops` only.

    It runs wherever Keras runs (jax, torch, tensorflow; inside a jitted or XLA-compiled
    training step) and draws all randomness from `keras.random` seed generators that the
    layers hold: the same seed gives the same augmented batches.

    Args:
        policy: a name of `AUGMENTATIONS`.
        image_shape: (height, width, channels).
        num_classes: int, the width of the one-hot targets.
        flip: whether horizontal flips keep the labels.
        seed: int.

    Call arguments:
        images: (B, H, W, C) pixels in [0, 255] of any dtype.
        labels: (B,) integer labels.

    Returns:
        `(images, targets)`: float32 pixels, and float32 one-hot targets (B, num_classes),
        soft where MixUp or CutMix mixed two images.
    """

    def __init__(self, policy="light", image_shape=(32, 32, 3), num_classes=10, flip=True, seed=0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.policy = policy_name(policy)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        self.flip = bool(flip)
        self.seed = int(seed)
        self._by_role = policy_layers(self.policy, self.image_shape, self.flip, self.seed)
        for role, layer in self._by_role.items():
            setattr(self, role, layer)  # tracked: their seed generators are this layer's state
        if "mixup" in self._by_role:
            self.choice_seed = keras.random.SeedGenerator(self.seed + 6)

    def build(self, input_shape=None):
        for layer in self._by_role.values():
            layer.build((None, *self.image_shape))
        self.built = True

    def call(self, images, labels):
        images = ops.cast(images, "float32")
        for role in ("crop", "flip", "rand_augment", "erasing"):
            if role in self._by_role:
                images = self._by_role[role](images, training=True)
        targets = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes, dtype="float32")
        if "mixup" not in self._by_role:
            return images, targets
        data = {"images": images, "labels": targets}
        mixed = self.mixup(data, training=True)
        cut = self.cutmix(data, training=True)
        # One of the two per batch. Both are computed (elementwise, cheap): a select,
        # unlike a branch, keeps every seed generator's update outside control flow.
        use_mixup = keras.random.uniform((), seed=self.choice_seed) < 0.5
        return (
            ops.where(use_mixup, mixed["images"], cut["images"]),
            ops.where(use_mixup, mixed["labels"], cut["labels"]),
        )

    def compute_output_spec(self, images, labels):
        batch = images.shape[0]
        return (
            keras.KerasTensor((batch, *self.image_shape), "float32"),
            keras.KerasTensor((batch, self.num_classes), "float32"),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "policy": self.policy,
            "image_shape": self.image_shape,
            "num_classes": self.num_classes,
            "flip": self.flip,
            "seed": self.seed,
        }


def augmenter(info, strength, seed):
    """The policy's layers run inside tf.data on a batch of uint8-range float images."""
    import tensorflow as tf

    layers = policy_layers(strength, info.image_shape, info.flip_invariant, seed, in_tf_data=True)
    if "rand_augment" in layers:
        # Inside tf.data the layers compute with TensorFlow, but Keras picks the form of
        # equalization's histogram from the global backend: under JAX, a loop over 256 bins.
        _internals.use_bincount_histograms(layers["rand_augment"])

    def label_preserving(images, labels):
        for role in ("crop", "flip", "rand_augment", "erasing"):
            if role in layers:
                images = layers[role](images, training=True)
        return images, labels

    if "mixup" not in layers:
        return label_preserving
    num_classes = info.num_classes

    def mixing(images, labels):
        images, labels = label_preserving(images, labels)
        data = {"images": images, "labels": tf.one_hot(labels, num_classes)}
        mixed = tf.cond(
            tf.random.uniform((), seed=seed) < 0.5,
            lambda: layers["mixup"](data, training=True),
            lambda: layers["cutmix"](data, training=True),
        )
        return mixed["images"], mixed["labels"]

    return mixing
