"""The data of a training run, for either pipeline: `TrainingData` reads or streams the
splits, builds the model `fit` runs (the network itself, or a
`keras_vitmix.device_pipeline.DeviceTrainer` holding the data) and scores the test split.
`keras_vitmix.training.train` drives it.
"""

import dataclasses
import os

import keras

from keras_vitmix.losses import ClassificationLoss
from keras_vitmix.metrics import accuracy_metrics, top1_accuracy, top5_accuracy

PIPELINES = ("auto", "device", "tf.data")


class TrainingData:
    """The splits of a run and how they reach the model, for either pipeline.

    The device pipeline reads every split into memory (`datasets.load_arrays`, or the
    arrays given) and trains a `device_pipeline.DeviceTrainer`; tf.data streams them
    (`datasets.load`) into the model itself.
    """

    def __init__(self, dataset, image_size, model, seed, validation_fraction, pipeline, distribute, test_fraction):
        from keras_vitmix import datasets

        self.seed = seed
        in_memory = isinstance(dataset, (tuple, list, dict))
        if in_memory:
            classes = int(model.output_shape[-1]) if isinstance(model, keras.Model) else None
            self.splits, infos = _array_splits(dataset, seed, validation_fraction, test_fraction, classes)
            self.info, self.validation_info, self.test_info = (infos[split] for split in datasets.SPLITS)
            self.size = self.info.image_shape[:2]
            wanted = datasets.as_image_size(image_size) or model_image_size(model)
            if tuple(wanted) != tuple(self.size):
                raise ValueError(
                    f"The images are {self.size[0]}x{self.size[1]} and the model takes {wanted[0]}x{wanted[1]}: "
                    "resize the arrays, or build the model for their size. "
                    f"Received: images of shape {self.splits['train'][0].shape}"
                )
            if pipeline == "tf.data":
                raise ValueError(
                    "In-memory arrays train through the device pipeline. Received: pipeline='tf.data' with arrays "
                    "(wrap them in a tf.data.Dataset and call model.fit for a tf.data pipeline of your own)"
                )
        if not in_memory:
            self.size = datasets.as_image_size(image_size) or model_image_size(model)
        self.pipeline = "device" if in_memory else _choose_pipeline(pipeline, dataset, self.size, distribute, validation_fraction)
        if self.pipeline == "device" and distribute not in (None, "none"):
            raise ValueError(
                "The device pipeline trains on one device. Received: pipeline='device' with "
                f"distribute={distribute!r}; use pipeline='tf.data' for data parallelism."
            )
        if in_memory:
            return
        load = dict(image_size=self.size, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction)
        if self.pipeline == "device":
            from keras_vitmix import device_pipeline

            self.splits, infos = {}, {}
            for split in datasets.SPLITS:
                images, labels, infos[split] = datasets.load_arrays(dataset, split, **load)
                self.splits[split] = (images, labels)
                if split == "train":
                    device_pipeline.check_fits(images.nbytes, f"The training images of {infos[split].name}")
            self.info, self.validation_info, self.test_info = (infos[split] for split in datasets.SPLITS)
        else:
            self.dataset, self.load = dataset, load
            self.info, self.validation_info, self.test_info = (
                datasets.load(dataset, split, batch_size=1, **load)[1] for split in datasets.SPLITS
            )

    @property
    def has_test(self):
        """Whether the run has a test split: images never used to select a checkpoint."""
        return self.test_info.num_examples > 0

    def training_batches(self, batch_size, augment, seed):
        if self.pipeline == "device":
            from keras_vitmix.device_pipeline import IndexBatches

            return IndexBatches(self.splits["train"][1], batch_size, seed)
        from keras_vitmix import datasets

        # One batch shape: XLA compiles one training step, not a second for the last batch.
        ds, _ = datasets.load(
            self.dataset, "train", batch_size=batch_size, augment=augment, drop_remainder=True, **self.load
        )
        return ds

    def trainer(self, net, run, seed, jit_compile):
        """The model `fit` runs: `net` itself, or a DeviceTrainer holding the data."""
        if self.pipeline != "device":
            return net
        from keras_vitmix.device_pipeline import DeviceTrainer

        images, labels = self.splits["train"]
        trainer = DeviceTrainer(
            net, images, labels, min(run["batch_size"], len(labels)), augment=run["augment"],
            flip=self.info.flip_invariant, test_time_flip=run["test_time_flip"], seed=seed,
        )
        trainer.compile(
            optimizer=net.optimizer, loss=net.loss, metrics=accuracy_metrics(net.output_shape[-1]), jit_compile=jit_compile
        )
        return trainer

    def callbacks(self, batches):
        if self.pipeline != "device":
            return ()
        from keras_vitmix.device_pipeline import EpochOrder

        return (EpochOrder(batches),)

    def validation(self, batch_size):
        if self.pipeline == "device":
            return self.splits["validation"]
        from keras_vitmix import datasets

        return datasets.load(self.dataset, "validation", batch_size=batch_size, **self.load)[0]

    def score(self, model, batch_size, flip, label_smoothing, split="test"):
        """Loss, accuracy (and top-5) of `model` on a split, each image's prediction
        averaged with its mirror's when `flip`; read as the run's pipeline read it."""
        if self.pipeline == "device":
            batches = array_batches(*self.splits[split], batch_size)
        else:
            from keras_vitmix import datasets

            ds, _ = datasets.load(self.dataset, split, batch_size=batch_size, **self.load)
            batches = iter(ds)
        return score_batches(model, batches, flip, label_smoothing)


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

    A dict keeps the splits it gives (no "test": the run has no test split); a pair has
    a test part and then a validation part held out of each class (seeded, disjoint), as
    a folder does.
    """
    from keras_vitmix import datasets

    if isinstance(dataset, dict):
        unknown = sorted(set(dataset) - set(datasets.SPLITS))
        if "train" not in dataset or unknown:
            raise ValueError(
                f"A dict of arrays needs a 'train' entry and may have 'validation' and 'test'. Received keys: "
                f"{sorted(dataset)}"
            )
        given = {k: _pair(v, k) for k, v in dataset.items()}
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
    info = datasets.array_info(*checked["train"], num_classes=num_classes)
    infos = {
        split: dataclasses.replace(info, split=split, num_examples=len(labels), note=notes[split])
        for split, (_, labels) in checked.items()
    }
    return checked, infos


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


def _choose_pipeline(pipeline, dataset, size, distribute, validation_fraction):
    """"device" or "tf.data" for a named dataset (see `train`'s `pipeline`)."""
    if pipeline != "auto":
        return pipeline
    if distribute not in (None, "none"):
        return "tf.data"
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return "device"  # without TensorFlow there is no tf.data
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
        device_pipeline.check_fits(count * height * width * 3)
    except ValueError:
        return "tf.data"
    return "device"


def model_image_size(model):
    """(height, width) of a model, a registered name or a `.keras`-loaded model."""
    if isinstance(model, keras.Model):
        return tuple(model.input_shape[1:3])
    from keras_vitmix.applications import model_info

    shape = model_info(model)["config"].get("input_shape", (224, 224, 3))
    return tuple(shape[:2])


def recipe_family(model):
    """What `keras_vitmix.recipes.get_recipe` takes for `model`: its class, or a
    registered name's family."""
    if isinstance(model, keras.Model):
        return model
    from keras_vitmix.applications import model_info

    try:
        return model_info(model)["family"]
    except (KeyError, ValueError):
        return "default"


def build_network(model, size, num_classes, overrides, drop_path_rate=0.0, explicit=None):
    """The network a run trains: a registered name built for the data's size and classes
    (with the recipe's drop path where its family takes one), or a given model as it
    is. `explicit`: the architecture options the caller gave (model_overrides,
    drop_path_rate, image_size, dtype); a given model is rebuilt with them, weights
    kept, or they are refused: an option is never only recorded."""
    import inspect

    from keras_vitmix.applications import create_model, model_info

    if isinstance(model, keras.Model):
        if model.output_shape[-1] != num_classes:
            raise ValueError(
                f"The model has {model.output_shape[-1]} classes and the dataset {num_classes}. "
                "Build the model with `classes` equal to the dataset's."
            )
        return rebuilt(model, dict(explicit or {}))
    overrides = dict(overrides or {})
    if overrides.get("classes", num_classes) != num_classes:
        raise ValueError(
            f"The model has {overrides['classes']} classes and the dataset {num_classes}. "
            f"Received: classes={overrides['classes']}"
        )
    overrides.update(classes=num_classes, input_shape=(*size, 3))
    family = model_info(model)["family"]
    if drop_path_rate and "drop_path_rate" in inspect.signature(family).parameters:
        overrides.setdefault("drop_path_rate", drop_path_rate)
    return create_model(model, **overrides)


def rebuilt(model, changes):
    """`model` rebuilt from its config with `changes` and its weights, or `model` itself
    when nothing changes. The families of `keras_vitmix.applications` rebuild; any
    other model, an image size other than the model's, or an argument its family does
    not take is a ValueError naming the option."""
    size = changes.pop("image_size", None)
    if size is not None:
        wanted = (size, size) if isinstance(size, int) else tuple(size)
        if wanted != tuple(model.input_shape[1:3]):
            raise ValueError(
                f"A given model trains at its own input size {tuple(model.input_shape[1:3])}. Received: "
                f"image_size={size!r} (build the model for that size, or train a registered name)"
            )
    dtype = changes.pop("dtype", None)
    if dtype is not None and str(model.dtype_policy.name) == dtype:
        dtype = None
    from keras_vitmix.applications._common import Application

    config = model.get_config() if isinstance(model, Application) else None
    changes = {k: v for k, v in changes.items() if config is None or config.get(k) != v}
    if not changes and dtype is None:
        return model
    options = ", ".join(f"{k}={v!r}" for k, v in {**changes, **({"dtype": dtype} if dtype else {})}.items())
    if config is None:
        raise ValueError(
            f"{model.name!r} ({type(model).__name__}) cannot be rebuilt with other options, so they would not "
            f"apply. Received: {options}. Build the model with them, or leave them out."
        )
    unknown = sorted(k for k in changes if k not in config)
    if unknown:
        raise ValueError(f"{type(model).__name__} takes no {unknown}. Received: {options}")
    network = type(model).from_config({**config, **changes})  # under the policy train() set
    network.set_weights(model.get_weights())
    print(f"Rebuilt {model.name!r} with {options}; weights kept.")
    return network
