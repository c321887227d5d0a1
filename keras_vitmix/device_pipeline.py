"""The device pipeline: a dataset held on the accelerator, sampled and augmented there.

For data that fits in memory (digits, CIFAR-size folders and TFDS sets, a user's arrays)
the images are decoded once and kept, as uint8, in a non-trainable Keras variable on the
accelerator. Each training step receives only a batch of indices from the host; the
step gathers the images and labels, augments them with Keras's own layers
(`keras_vitmix.augmentation.BatchAugmentation`) and trains, all inside the one compiled
function `model.fit` builds, under jax, torch and tensorflow alike, with no TensorFlow
needed. A host pipeline instead decodes, augments and copies every batch, which kept an
H200 waiting ~98% of the time on CIFAR-10 (issue #28).

`DeviceTrainer` wraps the model being trained: `fit` on it trains the wrapped model's own
variables, and the run's checkpoints save the wrapped model (`DeviceTrainer.network`),
never the held data.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_vitmix.augmentation import BatchAugmentation

# The held training images may take at most this share of the accelerator's memory
# (or of the host's, on a CPU): the rest is the model's, its activations' and XLA's.
MEMORY_FRACTION = 0.25


def device_memory_bytes():
    """Memory of the device Keras computes on: the accelerator's, else the host's RAM."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            if stats.get("bytes_limit"):
                return int(stats["bytes_limit"])
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info()[1])
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                # TensorFlow does not report a GPU's memory size; assume a 16 GiB card.
                return int(details.get("memory_limit", 16 << 30))
    except Exception:  # a backend that cannot say: fall back to the host's memory
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(nbytes, what="The training images"):
    """Raises a ValueError when `nbytes` exceed `MEMORY_FRACTION` of the device's memory."""
    limit = int(device_memory_bytes() * MEMORY_FRACTION)
    if nbytes > limit:
        raise ValueError(
            f"{what} take {_size(nbytes)} as uint8, more than the device pipeline holds on this "
            f"device ({MEMORY_FRACTION:.0%} of its memory: {_size(limit)}). Use "
            "pipeline='tf.data', which streams batches from storage, or a smaller image_size."
        )


def _size(nbytes):
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


class HeldData(keras.layers.Layer):
    """The training images and labels as non-trainable variables, never saved.

    They are the data, not the model: `save_own_variables` writes nothing, so a resumable
    backup holds only the weights and the optimizer, and a resumed run re-reads the data.
    `targets` holds the current batch's (possibly mixed) one-hot targets, written by the
    forward pass and read by the loss (`DeviceTrainer.compute_loss`) in the same step.
    """

    def __init__(self, images, labels, batch_size, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.images = keras.Variable(images, dtype="uint8", trainable=False, name="images")
        self.labels = keras.Variable(labels, dtype="int32", trainable=False, name="labels")
        # autocast=False: under a mixed policy Keras's torch backend reads an autocast
        # variable as a cast copy, and `assign` wrote into that copy (the loss then saw
        # zeros and nothing learned: tests/test_training.py's mixed-precision run).
        self.targets = keras.Variable(
            np.zeros((batch_size, num_classes), "float32"), trainable=False, autocast=False, name="targets"
        )
        self.built = True

    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass


class DeviceTrainer(keras.Model):
    """Trains `network` on data held on the device, augmented inside the training step.

    Called on a rank-1 batch of indices, it gathers those held images (and, in training,
    augments them and records their targets for the loss); called on a batch of images
    (B, H, W, C), it runs the network on them, averaged with their mirror images when
    `test_time_flip` is set. Training accuracy is measured against each image's own label,
    before MixUp or CutMix.

    Args:
        network: the `keras.Model` to train (pixels in [0, 255] in, probabilities out).
        images: uint8 array (N, H, W, C), the training images.
        labels: int array (N,).
        batch_size: int, the training batch size.
        augment: a policy name of `keras_vitmix.augmentation.AUGMENTATIONS`.
        flip: whether horizontal flips keep the labels (augmentation and test-time flip).
        test_time_flip: whether inference on images averages each image and its mirror.
        seed: int, seeds the augmentation.
    """

    def __init__(self, network, images, labels, batch_size, augment="light", flip=True, test_time_flip=False,
                 seed=0, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{network.name}_on_device"), **kwargs)
        num_classes = int(network.output_shape[-1])
        self.network = network
        self.held = HeldData(images, labels, batch_size, num_classes, name="held_data")
        self.augmentation = BatchAugmentation(augment, images.shape[1:], num_classes, flip, seed)
        self.augmentation.build()
        self.test_time_flip = bool(test_time_flip and flip)
        self.built = True

    def call(self, inputs, training=False):
        if len(inputs.shape) == 1:  # indices into the held images
            indices = ops.cast(inputs, "int32")
            images = ops.take(self.held.images, indices, axis=0)
            if training:
                labels = ops.take(self.held.labels, indices, axis=0)
                images, targets = self.augmentation(images, labels)
                self.held.targets.assign(targets)
            return self.network(ops.cast(images, "float32"), training=training)
        images = ops.cast(inputs, "float32")
        probabilities = self.network(images, training=training)
        if self.test_time_flip and not training:
            mirrored = self.network(ops.flip(images, axis=2), training=False)
            probabilities = (probabilities + mirrored) / 2
        return probabilities

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if training and x is not None and len(x.shape) == 1:
            y = ops.convert_to_tensor(self.held.targets)  # this step's augmented targets
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)

    @property
    def output_shape(self):
        return self.network.output_shape

    def get_config(self):
        raise NotImplementedError(
            "A DeviceTrainer holds its training data and is not saved: save its `network` instead."
        )


class IndexBatches(keras.utils.PyDataset):
    """Batches of (indices, labels) over a split, a seeded permutation per epoch.

    The last, partial batch is dropped (a different remainder each epoch), so every step
    has one shape and compiles once. The order of epoch `e` depends only on (`seed`, `e`):
    a resumed run sees the same batches as one that was not interrupted, once
    `set_epoch` is called with the epoch (`EpochOrder` does that).
    """

    def __init__(self, labels, batch_size, seed=0):
        super().__init__()
        self.labels = np.asarray(labels, "int32")
        self.batch_size = min(int(batch_size), len(self.labels))
        self.seed = int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels)).astype("int32")

    def __len__(self):
        return len(self.labels) // self.batch_size

    def __getitem__(self, index):
        chosen = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return chosen, self.labels[chosen]


class EpochOrder(keras.callbacks.Callback):
    """Gives `IndexBatches` the epoch about to run (a resumed run starts past 0)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
