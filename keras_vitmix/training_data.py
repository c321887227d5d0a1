"""The data of a training run and how it reaches the model: one core, two feeds.

`training_data` reads a run's splits and returns one of two feeds behind one interface
(`TrainingData`):

- `HeldFeed` (pipeline "device"): every split read into memory (`datasets.load_arrays`,
  or the arrays given), the training images held on the accelerator; each step gets a
  batch of indices.
- `StreamedFeed` (pipeline "tf.data"): data too large to hold streams from storage
  through tf.data as uint8 batches of images and labels.

Both train the same core, `keras_vitmix.device_pipeline.DeviceTrainer`: the batch is
augmented inside the compiled step by one `augmentation.BatchAugmentation`, validation
and the final scores predict with one test-time-flip rule (`predict_batches`), and
`keras.distribution` (JAX) or `tf.distribute` (TensorFlow) spreads either feed over
devices. `keras_vitmix.training.train` drives it.
"""

import dataclasses
import os

import keras
import numpy as np

from keras_vitmix.losses import ClassificationLoss
from keras_vitmix.metrics import accuracy_metrics, top1_accuracy, top5_accuracy
from keras_vitmix.training_network import model_image_size

PIPELINES = ("auto", "device", "tf.data")


def training_data(dataset, image_size, model, seed, validation_fraction, pipeline, test_fraction, new_head=False):
    """The feed of a run: a `HeldFeed` for data held in memory, else a `StreamedFeed`.

    "auto" holds a named dataset whose training images fit the device's share
    (`device_pipeline.check_fits`) and streams it otherwise; the feed's `reason` says
    which and why (metrics.json records it). Arrays count a given model's classes as
    theirs (labels may leave some out), unless `new_head`: the run rebuilds the model
    for the labels' classes (`train(weights=...)`).
    """
    from keras_vitmix import datasets

    if isinstance(dataset, (tuple, list, dict)):
        return HeldFeed.from_arrays(
            dataset, image_size, model, seed, validation_fraction, pipeline, test_fraction, new_head
        )
    size = datasets.as_image_size(image_size) or model_image_size(model)
    load = dict(image_size=size, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction)
    chosen, reason = _choose_pipeline(pipeline, dataset, size, validation_fraction)
    if chosen == "device":
        return HeldFeed.from_dataset(dataset, load, reason)
    return StreamedFeed(dataset, load, reason)


class TrainingData:
    """What both feeds share: the splits' infos, the core they train, and scoring.

    Attributes:
        pipeline: "device" or "tf.data".
        reason: why the run uses this feed.
        info, validation_info, test_info: the splits' `DatasetInfo`.
        size: (height, width) of the images.
    """

    pipeline = None

    def __init__(self, infos, size, seed, reason):
        from keras_vitmix import datasets

        self.info, self.validation_info, self.test_info = (infos[split] for split in datasets.SPLITS)
        self.size, self.seed, self.reason = tuple(size), seed, reason

    @property
    def has_test(self):
        """Whether the run has a test split: images never used to select a checkpoint."""
        return self.test_info.num_examples > 0

    def held(self):
        """(images, labels) to hold on the device, or (None, None)."""
        return None, None

    def trainer(self, net, run, seed, jit_compile, teacher=None):
        """The model `fit` runs: a `DeviceTrainer` around `net`, compiled as `net` is,
        distilling `teacher` (a model, or None) as `run` says."""
        from keras_vitmix.device_pipeline import DeviceTrainer

        distillation = {} if teacher is None else dict(
            teacher=teacher, distillation=run["distillation"], distillation_alpha=run["distillation_alpha"],
            distillation_tau=run["distillation_tau"],
        )
        trainer = DeviceTrainer(
            net, *self.held(), augment=run["augment"], flip=self.info.flip_invariant,
            test_time_flip=run["test_time_flip"], seed=seed, **distillation,
        )
        trainer.compile(
            optimizer=net.optimizer, loss=net.loss, metrics=accuracy_metrics(net.output_shape[-1]), jit_compile=jit_compile
        )
        return trainer

    def callbacks(self, batches):
        return ()

    def score(self, model, batch_size, flip, label_smoothing, split="test"):
        """Loss, accuracy (and top-5) of `model` on a split, each image's prediction
        averaged with its mirror's when `flip`; read as the run's feed read it."""
        return score_batches(model, self.batches(split, batch_size), flip, label_smoothing)

    def validation(self, batch_size, replicas=1):
        """`fit`'s validation data: batches of (images, labels), or where `replicas` > 1
        (JAX's data parallelism, which splits every batch evenly over the devices)
        (images, labels, weights) with the last batch padded to a multiple of `replicas`
        by rows of weight 0: accuracy is exact, and the loss counts the at most
        `replicas - 1` padding rows as 0 in its mean."""
        raise NotImplementedError


class HeldFeed(TrainingData):
    """Splits held in memory; the training images and labels go to the device once and
    each step is a batch of indices (`device_pipeline.IndexBatches`)."""

    pipeline = "device"

    def __init__(self, splits, infos, size, seed, reason):
        super().__init__(infos, size, seed, reason)
        self.splits = splits

    @classmethod
    def from_arrays(cls, dataset, image_size, model, seed, validation_fraction, pipeline, test_fraction,
                    new_head=False):
        from keras_vitmix import datasets

        classes = int(model.output_shape[-1]) if isinstance(model, keras.Model) and not new_head else None
        splits, infos = _array_splits(dataset, seed, validation_fraction, test_fraction, classes)
        size = infos["train"].image_shape[:2]
        wanted = datasets.as_image_size(image_size) or model_image_size(model)
        if tuple(wanted) != tuple(size):
            raise ValueError(
                f"The images are {size[0]}x{size[1]} and the model takes {wanted[0]}x{wanted[1]}: "
                "resize the arrays, or build the model for their size. "
                f"Received: images of shape {splits['train'][0].shape}"
            )
        if pipeline == "tf.data":
            raise ValueError(
                "In-memory arrays train through the device pipeline. Received: pipeline='tf.data' with arrays "
                "(wrap them in a tf.data.Dataset and call model.fit for a tf.data pipeline of your own)"
            )
        return cls(splits, infos, size, seed, "in-memory arrays are held on the device")

    @classmethod
    def from_dataset(cls, dataset, load, reason):
        from keras_vitmix import datasets, device_pipeline

        splits, infos = {}, {}
        for split in datasets.SPLITS:
            images, labels, infos[split] = datasets.load_arrays(dataset, split, **load)
            splits[split] = (images, labels)
            if split == "train":
                device_pipeline.check_fits(images.nbytes, f"The training images of {infos[split].name}")
        return cls(splits, infos, load["image_size"], load["seed"], reason)

    def held(self):
        return self.splits["train"]

    def training_batches(self, batch_size, augment, seed):
        from keras_vitmix.device_pipeline import IndexBatches

        process_index, process_count = processes()
        return IndexBatches(len(self.splits["train"][1]), batch_size, seed, process_index, process_count)

    def callbacks(self, batches):
        from keras_vitmix.device_pipeline import EpochOrder

        return (EpochOrder(batches),)

    def validation(self, batch_size, replicas=1):
        if replicas <= 1:
            return self.splits["validation"]
        return PaddedBatches(*self.splits["validation"], batch_size, replicas)

    def batches(self, split, batch_size):
        return array_batches(*self.splits[split], batch_size)


class StreamedFeed(TrainingData):
    """Splits streamed from storage through tf.data (`datasets.load`), decoded and
    resized on the host; the training batches reach the step as uint8 pixels (a quarter
    of float32's bytes to copy) and are augmented there, as the held feed's are."""

    pipeline = "tf.data"

    def __init__(self, dataset, load, reason):
        from keras_vitmix import datasets

        self.dataset, self.load = dataset, load
        infos = {split: datasets.load(dataset, split, batch_size=1, **load)[1] for split in datasets.SPLITS}
        super().__init__(infos, load["image_size"] or infos["train"].image_shape[:2], load["seed"], reason)

    def training_batches(self, batch_size, augment, seed):
        from keras_vitmix import datasets

        # One batch shape: XLA compiles one training step, not a second for the last batch.
        ds, _ = datasets.load(
            self.dataset, "train", batch_size=batch_size, drop_remainder=True, dtype="uint8", **self.load
        )
        return ds.map(lambda images, labels: {"images": images, "labels": labels})

    def validation(self, batch_size, replicas=1):
        from keras_vitmix import datasets

        ds = datasets.load(self.dataset, "validation", batch_size=batch_size, **self.load)[0]
        if replicas <= 1:
            return ds
        import tensorflow as tf

        def padded(images, labels):
            count = tf.shape(images)[0]
            extra = (-count) % replicas
            weights = tf.concat([tf.ones([count]), tf.zeros([extra])], 0)
            return tf.pad(images, [[0, extra], [0, 0], [0, 0], [0, 0]]), tf.pad(labels, [[0, extra]]), weights

        return ds.map(padded)

    def batches(self, split, batch_size):
        from keras_vitmix import datasets

        return iter(datasets.load(self.dataset, split, batch_size=batch_size, **self.load)[0])


class PaddedBatches(keras.utils.PyDataset):
    """(images, labels, weights) in consecutive batches, the last one padded to a
    multiple of `replicas` with rows of weight 0 (see `TrainingData.validation`)."""

    def __init__(self, images, labels, batch_size, replicas):
        super().__init__()
        self.images, self.labels = images, labels
        self.batch_size = max(int(replicas), int(batch_size) - int(batch_size) % int(replicas))
        self.replicas = int(replicas)

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        images, labels = self.images[part], self.labels[part]
        extra = (-len(labels)) % self.replicas
        weights = np.concatenate([np.ones(len(labels), "float32"), np.zeros(extra, "float32")])
        images = np.concatenate([images, np.zeros((extra, *images.shape[1:]), images.dtype)])
        return images, np.concatenate([labels, np.zeros(extra, labels.dtype)]), weights


def processes():
    """(index, count) of this process among those of `keras.distribution.initialize`
    (JAX's multi-process runtime); (0, 1) elsewhere."""
    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def array_batches(images, labels, batch_size):
    """(images, labels) in consecutive batches, the last one partial."""
    return ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size))


def predict_batches(model, batches, flip=False):
    """(probabilities, labels) as NumPy for each (images, labels) batch; with `flip`, each
    prediction is the mean of the image's and its mirror's (test-time flip)."""
    import numpy as np

    for images, labels in batches:
        images = np.asarray(images, "float32")  # JAX refuses tf tensors
        probabilities = keras.ops.convert_to_numpy(model.predict_on_batch(images))
        if flip:
            mirrored = keras.ops.convert_to_numpy(model.predict_on_batch(images[:, :, ::-1]))
            probabilities = (probabilities + mirrored) / 2
        yield probabilities.astype("float32"), np.asarray(labels)


def score_batches(model, batches, flip=False, label_smoothing=0.0):
    """{"loss", "accuracy", "top5" (more than 5 classes)} of `model` over (images, labels)
    batches, predicted as `predict_batches` does."""
    import numpy as np

    loss_fn = ClassificationLoss(label_smoothing=label_smoothing, reduction=None)
    totals = {"loss": 0.0, "accuracy": 0.0, "top5": 0.0}
    count = 0
    for probabilities, labels in predict_batches(model, batches, flip):
        totals["loss"] += float(np.sum(keras.ops.convert_to_numpy(loss_fn(labels, probabilities))))
        totals["accuracy"] += float(np.sum(keras.ops.convert_to_numpy(top1_accuracy(labels, probabilities))))
        if probabilities.shape[-1] > 5:
            totals["top5"] += float(np.sum(keras.ops.convert_to_numpy(top5_accuracy(labels, probabilities))))
        count += len(labels)
    scores = {k: v / max(1, count) for k, v in totals.items()}
    if model.output_shape[-1] <= 5:
        del scores["top5"]
    return scores


def _array_splits(dataset, seed, validation_fraction, test_fraction, num_classes=None):
    """{split: (images, labels)} and {split: `DatasetInfo`} of in-memory arrays.

    A dict keeps the splits it gives (no "test": the run has no test split) and may name
    the classes ("class_names", in label order; "0", "1", ... otherwise); a pair has a
    test part and then a validation part held out of each class (seeded, disjoint), as a
    folder does.
    """
    from keras_vitmix import datasets

    class_names = None
    if isinstance(dataset, dict):
        unknown = sorted(set(dataset) - set(datasets.SPLITS) - {"class_names"})
        if "train" not in dataset or unknown:
            raise ValueError(
                f"A dict of arrays needs a 'train' entry and may have 'validation', 'test' and 'class_names'. "
                f"Received keys: {sorted(dataset)}"
            )
        class_names = dataset.get("class_names")
        if class_names is not None:
            num_classes = _named_classes(class_names, num_classes)
        given = {k: _pair(v, k) for k, v in dataset.items() if k != "class_names"}
    else:
        given = {"train": _pair(dataset, "train")}
    train_images, train_labels = datasets.check_arrays(*given["train"], num_classes=num_classes)
    num_classes = num_classes or int(train_labels.max()) + 1
    checked = {"train": (train_images, train_labels)}
    for split in ("validation", "test"):
        if split in given:
            checked[split] = datasets.check_arrays(*given[split], num_classes=num_classes, name=f"{split} images")
    notes = {split: "given" for split in checked}
    if len(given) == 1:
        notes.update(_hold_out_arrays(checked, seed, validation_fraction, test_fraction))
    elif "validation" not in checked:
        checked["train"], checked["validation"] = datasets.split_arrays(
            train_images, train_labels, validation_fraction, seed
        )
        notes["validation"] = f"held out of 'train': {validation_fraction:.0%} of each class, seed {seed}"
    if "test" not in checked:
        checked["test"] = (train_images[:0], train_labels[:0])
        notes["test"] = "no test split: the dict of arrays has no 'test' entry"
    info = datasets.array_info(*checked["train"], num_classes=num_classes, class_names=class_names)
    infos = {
        split: dataclasses.replace(info, split=split, num_examples=len(labels), note=notes[split])
        for split, (_, labels) in checked.items()
    }
    return checked, infos


def _named_classes(class_names, num_classes):
    """The class count of a dict's "class_names", checked against a given model's."""
    if isinstance(class_names, str) or not all(isinstance(name, str) for name in class_names):
        raise TypeError(f"'class_names' must be a sequence of str, in label order. Received: {class_names!r}")
    if num_classes is not None and num_classes != len(class_names):
        raise ValueError(
            f"The model has {num_classes} classes and 'class_names' names {len(class_names)}. Received: "
            f"class_names={list(class_names)!r}"
        )
    return len(class_names)


def _hold_out_arrays(checked, seed, validation_fraction, test_fraction):
    """Splits `checked["train"]` in place into train, validation and test parts by a
    folder's rule (`datasets.hold_out_arrays`). Returns the splits' notes."""
    from keras_vitmix import datasets

    parts, reason = datasets.hold_out_arrays(*checked["train"], validation_fraction, test_fraction, seed)
    checked.update(parts)
    held = f"{validation_fraction:.0%} of each class, seed {seed}"
    return {
        "train": "the arrays less the held-out parts",
        "validation": f"held out of the arrays: {held}",
        "test": reason or f"held out of the arrays: {test_fraction:.0%} of each class, seed {seed}, disjoint from validation",
    }


def _pair(value, split):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(
            f"In-memory data must be (images, labels) pairs. Received for {split!r}: {type(value).__name__}"
            + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
        )
    return value


def _choose_pipeline(pipeline, dataset, size, validation_fraction):
    """("device" or "tf.data", why) for a named dataset (see `train`'s `pipeline`)."""
    if pipeline != "auto":
        return pipeline, f"pipeline={pipeline!r} was asked for"
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return "device", "TensorFlow is not installed: there is no tf.data to stream with"
    from keras_vitmix import datasets, device_pipeline

    name = os.fspath(dataset)
    if name == "digits":
        count = 1257  # its training split
    elif os.path.isdir(name):
        paths = datasets.list_folder(name, "train", validation_fraction=validation_fraction)[0]
        count = len(paths)
    else:
        _, info = datasets.load(name, "train", image_size=size, batch_size=1, validation_fraction=validation_fraction)
        count = info.num_examples
    height, width = size or datasets.read_image(paths[0]).shape[:2]
    try:
        device_pipeline.check_fits(count * height * width * 3, f"The {count:,} training images")
    except ValueError as error:
        return "tf.data", f"streamed: {str(error).split(' Use ')[0]}"
    share = f"{device_pipeline.MEMORY_FRACTION:.0%}"
    return "device", f"held: {count:,} training images of {height}x{width} fit {share} of the device's memory"
