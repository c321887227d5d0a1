"""Scoring a trained model the way its run scored it.

`evaluate` reads what the model's run recorded (`keras_vitmix.saving.model_metadata`, or
the run folder's metrics.json for a model that cannot carry it): the dataset, how its
splits were held out, the pipeline that read them, the batch size and test-time flip.
Given a run's model alone, it scores the run's test split exactly as `train` did, so the
two agree to the last image; every default it takes from the run is said in its line.
"""

import json
import os

import keras

from keras_vitmix import saving
from keras_vitmix.training_data import PIPELINES, array_batches, predict_batches


def run_metadata(model, path=None):
    """The run's record for `model`: its own metadata, else that of the metrics.json
    beside `path` (the `.keras` file it was loaded from); {} when neither exists."""
    metadata = saving.model_metadata(model)
    if metadata or path is None:
        return metadata
    metrics_path = os.path.join(os.path.dirname(os.path.abspath(path)), "metrics.json")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as handle:
            metrics = json.load(handle)
        # A run folder written before runs kept metadata names its dataset only.
        return dict(metrics.get("metadata") or {k: metrics[k] for k in ("dataset",) if k in metrics})
    return {}


def split_arguments(run):
    """The seed and held-out fractions the run's splits were made with, as keywords of
    `datasets.load` and `datasets.load_arrays` ({} for a run that records none)."""
    return {k: v for k, v in run.get("splits", {}).items() if k in ("seed", "validation_fraction", "test_fraction")}


def evaluate(
    model, dataset=None, split=None, batch_size=None, output_dir=None, test_time_flip=None, pipeline=None
):
    """Accuracy of a saved model on a dataset split, and a confusion-matrix PNG.

    Args:
        model: a `.keras` path or a `keras.Model`.
        dataset: "digits", a TFDS name or a folder; default: the run's dataset, with
            the run's seed and held-out fractions, so "test" is the run's test split.
        split: "train", "validation" or "test" (default). "validation" is the split the
            run selected its checkpoint on: not a test score.
        batch_size: int >= 1; default: the run's (else 128).
        output_dir: where to write confusion_matrix.png (default: the model's folder).
        test_time_flip: average each image's prediction with its mirror's; default:
            what the run used. Refused for data a flip changes (digits).
        pipeline: "device" (the split read into memory, as the device pipeline reads
            it), "tf.data" or "auto"; default: the run's, else "auto" (tf.data where
            TensorFlow is installed).

    Returns:
        {"accuracy", "examples", "confusion_matrix" (path), "split_note",
        "test_time_flip", "dataset", "split"}.
    """
    import numpy as np

    from keras_vitmix import plotting

    path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if path is not None:
        output_dir = output_dir or os.path.dirname(os.path.abspath(path))
        model = saving.load_model(path, compile=False)
    run = run_metadata(model, path)
    spec = _split_spec(run, dataset, split, batch_size, test_time_flip, pipeline)
    batches, info = _read_split(spec, tuple(model.input_shape[1:3]))
    if model.output_shape[-1] != info.num_classes:
        raise ValueError(f"The model has {model.output_shape[-1]} classes and the dataset {info.num_classes}.")
    if spec["test_time_flip"] and not info.flip_invariant:
        raise ValueError(f"A mirrored {info.name} image is another label: test_time_flip must be False. Received: True")
    labels, predictions = [], []
    for probabilities, batch_labels in predict_batches(model, batches, spec["test_time_flip"]):
        predictions.append(np.argmax(probabilities, axis=-1))
        labels.append(batch_labels)
    labels, predictions = np.concatenate(labels), np.concatenate(predictions)
    os.makedirs(output_dir or ".", exist_ok=True)
    figure_path = os.path.join(output_dir or ".", "confusion_matrix.png")
    plotting.confusion_matrix(labels, predictions, info.class_names).savefig(figure_path, dpi=100)
    accuracy = float(np.mean(labels == predictions))
    flip = ", test-time flip" if spec["test_time_flip"] else ""
    print(
        f"{model.name} on {info.name} ({spec['split']}, {len(labels)} images{flip}): accuracy {accuracy:.2%} "
        f"-> {figure_path}" + (f"\n  ({'; '.join(spec['from_run'])} from the run)" if spec["from_run"] else "")
    )
    return {
        "accuracy": accuracy, "examples": int(len(labels)), "confusion_matrix": figure_path,
        "split_note": info.note, "test_time_flip": spec["test_time_flip"], "dataset": info.name,
        "split": spec["split"],
    }


def _split_spec(run, dataset, split, batch_size, test_time_flip, pipeline):
    """What to read and how: each value given, else the run's (named in "from_run")."""
    from_run = []

    def pick(name, given, default):
        if given is not None:
            return given
        if run.get(name) is not None:
            from_run.append(f"{name}={run[name]!r}")
            return run[name]
        return default

    dataset = pick("dataset", dataset, None)
    if dataset is None:
        raise ValueError("The model records no dataset (no run metadata, no metrics.json beside it): pass `dataset`.")
    if dataset == "arrays":
        raise ValueError("The model's run trained on in-memory arrays, not a named dataset: pass `dataset`.")
    spec = {
        "dataset": dataset, "split": split or "test", "from_run": from_run,
        "batch_size": pick("batch_size", batch_size, 128),
        "test_time_flip": bool(pick("test_time_flip", test_time_flip, False)),
        "pipeline": pick("pipeline", pipeline, "auto"),
        "load": split_arguments(run) if os.fspath(dataset) == run.get("dataset") else {},
    }
    if isinstance(spec["batch_size"], bool) or not isinstance(spec["batch_size"], int) or spec["batch_size"] < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={spec['batch_size']!r}")
    if spec["pipeline"] not in PIPELINES:
        raise ValueError(f"`pipeline` must be one of {PIPELINES}. Received: pipeline={spec['pipeline']!r}")
    return spec


def _read_split(spec, size):
    """(batches, info) of the split, read as the run's pipeline read it."""
    from keras_vitmix import datasets

    pipeline = spec["pipeline"]
    if pipeline == "auto":
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            pipeline = "device"
        else:
            pipeline = "tf.data"
    dataset, split, load = spec["dataset"], spec["split"], spec["load"]
    if pipeline == "device":
        images, labels, info = datasets.load_arrays(dataset, split, image_size=size, **load)
        batches = array_batches(images, labels, spec["batch_size"])
    else:
        ds, info = datasets.load(dataset, split, image_size=size, batch_size=spec["batch_size"], **load)
        batches = iter(ds)
    if info.num_examples == 0:
        raise ValueError(
            f"The {split} split of {info.name} is empty: {info.note}. Received: split={split!r}"
            + (" (split='validation' scores the split the run selected its checkpoint on)" if split == "test" else "")
        )
    return batches, info
