"""The device pipeline: a dataset held on the accelerator, sampled and augmented there.

For data that fits in memory (digits, CIFAR-size folders and TFDS sets, a user's arrays)
the images are decoded once and kept, as uint8, in a non-trainable Keras variable on the
accelerator. Each training step receives only a batch of indices from the host; the
step gathers the images and labels, augments them with Keras's own layers
(`keras_vitmix.augmentation.BatchAugmentation`) and trains, all inside the one compiled
function `model.fit` builds, under jax, torch and tensorflow alike, with no TensorFlow
needed. A host pipeline instead decodes, augments and copies every batch, which kept an
H200 waiting ~98% of the time on CIFAR-10 (issue #28). Data too large to hold streams
through tf.data as uint8 batches into the same step and the same augmentation
(`keras_vitmix.training_data.StreamedFeed`).

`DeviceTrainer` wraps the model being trained: `fit` on it trains the wrapped model's own
variables, and the run's checkpoints save the wrapped model (`DeviceTrainer.network`),
never the held data. Given a teacher, the same step distills it (DeiT,
`keras_vitmix.distillation`): the teacher sees the augmented batch, on the device.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_vitmix import distillation as distill
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
    Under `keras.distribution.DataParallel` they are replicated on every device (a
    variable's default layout there): the data the device pipeline holds fits one
    device's share by construction (`check_fits`), and a replica gathers its part of each
    batch from its own copy with no traffic between devices. Under
    `tf.distribute.MirroredStrategy` they are mirrored, for the same reason.
    """

    def __init__(self, images, labels, **kwargs):
        super().__init__(**kwargs)
        self.images = keras.Variable(images, dtype="uint8", trainable=False, name="images")
        self.labels = keras.Variable(labels, dtype="int32", trainable=False, name="labels")
        self.built = True

    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass


class DeviceTrainer(keras.Model):
    """Trains `network` with the batch augmented inside the compiled training step.

    One core for both feeds of `keras_vitmix.training_data`:

    - the held feed calls it on a rank-1 batch of indices into `images`/`labels` held on
      the device (`HeldData`): the step gathers the images and their labels there, so
      labels reach the device once, with the images;
    - the streamed feed (tf.data) calls it on a dict {"images": uint8 pixels, "labels":
      ints}.

    In training, both are then augmented by one `BatchAugmentation` (the same layer
    objects, the same MixUp/CutMix choice) and the call returns a dict of the network's
    `probabilities`, the (possibly mixed) one-hot `targets` the loss reads
    (`compute_loss`) and the images' own `labels` that accuracy is measured against
    (`compute_metrics`): the targets travel as an output of the step, not through a
    variable written inside `call` (which Keras's torch backend read as a stale cast copy
    under a mixed policy, 6dff7ad). Called on images (B, H, W, C), or outside training,
    it predicts: the network's probabilities, averaged with those of the mirror images
    when `test_time_flip` is set, so validation in `fit`, `evaluate` and the final score
    all follow one test-time-flip rule on both feeds.

    With a `teacher`, the training call also runs it, frozen and in inference mode, on
    the same augmented images, and returns its probabilities ("teacher") beside the
    student's distilled logits ("distilled"; for a DeiT also its class head's,
    "class_logits"); the loss is then DeiT's mix of the compiled loss and the
    distillation term (`keras_vitmix.distillation.DeiTDistillation`). Accuracy stays the
    student's prediction against the labels. `keras.distillation.Distiller` cannot be
    this step: it calls the teacher on the step's input `x` (here indices or uint8
    pixels, before augmentation, so the teacher would not see the student's images),
    distills the student's final output (probabilities here, and for a DeiT the average
    of both heads, where only `head_dist` should learn from the teacher), applies the
    base loss to that same output (where a DeiT's `head` alone learns the labels), and
    has no hard (argmax) distillation.

    Args:
        network: the `keras.Model` to train (pixels in [0, 255] in, probabilities out).
        images: None (streamed feed), or uint8 array (N, H, W, C) to hold.
        labels: None, or int array (N,) with `images`.
        augment: a policy name of `keras_vitmix.augmentation.AUGMENTATIONS`.
        flip: whether horizontal flips keep the labels (augmentation and test-time flip).
        test_time_flip: whether inference averages each image and its mirror.
        seed: int, seeds the augmentation.
        teacher: None, or a `keras.Model` with the network's classes and image size
            (probabilities out; see `keras_vitmix.distillation.resolve_teacher`). It is
            frozen in place (`trainable = False`).
        distillation: "hard" or "soft" (DeiT's two terms).
        distillation_alpha: float in [0, 1], the distillation term's weight.
        distillation_tau: float > 0, the soft term's temperature.
    """

    def __init__(self, network, images=None, labels=None, augment="light", flip=True, test_time_flip=False,
                 seed=0, teacher=None, distillation="hard", distillation_alpha=0.5, distillation_tau=1.0,
                 **kwargs):
        super().__init__(name=kwargs.pop("name", f"{network.name}_on_device"), **kwargs)
        num_classes = int(network.output_shape[-1])
        self.network = network
        self.held = None if images is None else HeldData(images, labels, name="held_data")
        image_shape = tuple(network.input_shape[1:]) if images is None else images.shape[1:]
        self.augmentation = BatchAugmentation(augment, image_shape, num_classes, flip, seed)
        self.augmentation.build()
        self.test_time_flip = bool(test_time_flip and flip)
        self.teacher = self.student = self.distillation = None
        if teacher is not None:
            self.distillation = distill.DeiTDistillation(distillation, distillation_alpha, distillation_tau)
            distill.check_teacher(teacher, network)
            teacher.trainable = False
            self.teacher = teacher
            self.student = distill.student_view(network)
        self.built = True

    def _batch(self, inputs):
        """(images, labels) of a training input: gathered indices, or a streamed dict."""
        if isinstance(inputs, dict):
            return inputs["images"], inputs["labels"]
        if self.held is None:
            raise ValueError(
                "This DeviceTrainer holds no images: call it on images (B, H, W, C) or on a dict "
                f"{{'images', 'labels'}}. Received: a batch of shape {tuple(inputs.shape)}"
            )
        indices = ops.cast(inputs, "int32")
        return ops.take(self.held.images, indices, axis=0), ops.take(self.held.labels, indices, axis=0)

    def call(self, inputs, training=False):
        if not isinstance(inputs, dict) and len(inputs.shape) != 1:
            return self.predict_images(inputs, training=training)
        images, labels = self._batch(inputs)
        if not training:
            return self.predict_images(images)
        images, targets = self.augmentation(images, labels)
        if self.teacher is not None:
            return {**self.distilled(ops.cast(images, "float32")), "targets": targets, "labels": labels}
        probabilities = self.network(ops.cast(images, "float32"), training=True)
        return {"probabilities": probabilities, "targets": targets, "labels": labels}

    def predict_images(self, images, training=False):
        """The network's probabilities for pixels, with the test-time flip outside training."""
        images = ops.cast(images, "float32")
        probabilities = self.network(images, training=training)
        if self.test_time_flip and not training:
            mirrored = self.network(ops.flip(images, axis=2), training=False)
            probabilities = (probabilities + mirrored) / 2
        return probabilities

    def distilled(self, images):
        """The student's outputs for distillation and the teacher's probabilities, on one
        batch of augmented images."""
        if self.student is not None:
            outputs = dict(self.student(images, training=True))
        else:
            probabilities = self.network(images, training=True)
            outputs = {"probabilities": probabilities, "distilled": distill.logits_of(probabilities)}
        teacher = self.teacher(images, training=False)
        return {**outputs, "teacher": ops.stop_gradient(ops.cast(teacher, "float32"))}

    def _labels(self, x):
        """The labels of a batch given without `y` (indices or a streamed dict), or None."""
        if isinstance(x, dict) or (x is not None and len(x.shape) == 1 and self.held is not None):
            return self._batch(x)[1]
        return None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if isinstance(y_pred, dict) and "teacher" in y_pred:
            return self._distillation_loss(x, y_pred, sample_weight, training)
        if isinstance(y_pred, dict):  # a training step: the loss reads this step's targets
            y, y_pred = y_pred["targets"], y_pred["probabilities"]
        elif y is None:
            y = self._labels(x)
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)

    def _distillation_loss(self, x, y_pred, sample_weight, training):
        """DeiT's loss: the compiled loss on the targets (a DeiT's class head alone; any loss
        a layer adds, none in this package's models, is part of it), mixed with the
        distillation of the teacher into the student's distilled logits. Validation has no
        teacher: its loss is the compiled loss on the prediction."""
        predicted = y_pred["probabilities"]
        if "class_logits" in y_pred:
            predicted = ops.softmax(ops.cast(y_pred["class_logits"], "float32"), axis=-1)
        base = super().compute_loss(
            x=x, y=y_pred["targets"], y_pred=predicted, sample_weight=sample_weight, training=training
        )
        return self.distillation.total(base, distill.logits_of(y_pred["teacher"]), y_pred["distilled"])

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):  # accuracy against each image's own label, before mixing
            y, y_pred = y_pred["labels"], y_pred["probabilities"]
        elif y is None:
            y = self._labels(x)
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    @property
    def output_shape(self):
        return self.network.output_shape

    def get_config(self):
        raise NotImplementedError(
            "A DeviceTrainer holds its training data and is not saved: save its `network` instead."
        )


class IndexBatches(keras.utils.PyDataset):
    """Batches of indices into the held training split, a seeded permutation per epoch.

    The last, partial batch is dropped (a different remainder each epoch), so every step
    has one shape and compiles once. The order of epoch `e` depends only on (`seed`, `e`):
    a resumed run sees the same batches as one that was not interrupted, once
    `set_epoch` is called with the epoch (`EpochOrder` does that).

    With several processes (`keras.distribution.initialize`), every process draws the
    same global permutation and yields its own `1 / process_count` of each global batch:
    Keras's JAX trainer assembles the processes' parts into the global batch
    (`jax.make_array_from_process_local_data`).

    Args:
        count: the number of held examples (or their labels, whose length is taken).
        batch_size: int, the global batch size.
        seed: int.
        process_index, process_count: this process's place among the processes.
    """

    def __init__(self, count, batch_size, seed=0, process_index=0, process_count=1):
        super().__init__()
        self.count = count if isinstance(count, int) else len(count)
        self.batch_size = min(int(batch_size), self.count)
        if self.batch_size % process_count:
            raise ValueError(
                f"The global batch must split evenly over {process_count} processes. Received: "
                f"batch_size={batch_size}"
            )
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.seed = int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(self.count).astype("int32")

    def __len__(self):
        return self.count // self.batch_size

    def __getitem__(self, index):
        chosen = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        local = self.batch_size // self.process_count
        return chosen[self.process_index * local:(self.process_index + 1) * local]


class EpochOrder(keras.callbacks.Callback):
    """Gives `IndexBatches` the epoch about to run (a resumed run starts past 0)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
