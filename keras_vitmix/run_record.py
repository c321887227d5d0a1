"""What a training run records: the metadata its models carry
(`keras_vitmix.saving.model_metadata`), the numbers of metrics.json and the line the run
ends with. A score is called "test" only for the split nothing was selected on; the
values recorded are read back from the trained network, not copied from the arguments,
so that a setting that did not apply cannot be reported as applied.
"""

import os

import keras

def run_metadata(args, data, run):
    """What a run's models carry (`keras_vitmix.saving.model_metadata`): the data's
    identity, classes and splits, and the training values as trained."""
    dataset = args["dataset"]
    if isinstance(dataset, (tuple, list, dict)):
        dataset = "arrays"
    elif os.path.isdir(os.fspath(dataset)):
        dataset = os.path.abspath(os.fspath(dataset))
    infos = {"train": data.info, "validation": data.validation_info, "test": data.test_info}
    return {
        "class_names": [str(name) for name in data.info.class_names],
        "dataset": os.fspath(dataset),
        "splits": {
            "seed": args["seed"], "validation_fraction": args["validation_fraction"],
            "test_fraction": args["test_fraction"],
            **{split: {"examples": info.num_examples, "note": info.note} for split, info in infos.items()},
        },
        "pipeline": data.pipeline,
        "recipe": run["recipe"],
        **{k: run[k] for k in (*TRAINING_VALUES, "batch_size", "epochs")},
    }


TRAINING_VALUES = (
    "learning_rate", "weight_decay", "warmup_epochs", "label_smoothing", "augment", "drop_path_rate",
    "ema_momentum", "test_time_flip", "clipnorm", "mixed_precision", "image_size", "layer_decay", "weights",
    "freeze", "teacher", "distillation", "distillation_alpha", "distillation_tau",
)


def trained_values(net):
    """What the network trains with, read back from it: its drop path (None where its
    family has none), precision and image size."""
    from keras_vitmix.applications._common import Application

    config = net.get_config() if isinstance(net, Application) else {}
    return {
        "drop_path_rate": config.get("drop_path_rate"),
        "mixed_precision": str(net.dtype_policy.name).startswith("mixed"),
        "image_size": [int(d) for d in net.input_shape[1:3]],
    }


def run_metrics(net, data, scores, times, wall, resumed, seen, run):
    """metrics.json's numbers: test scores only where a test split exists."""
    per_epoch = sum(times) / max(1, len(times))
    metrics = {
        "model": net.name,
        "family": type(net).__name__,
        "dataset": data.info.name,
        "backend": keras.backend.backend(),
        "pipeline": data.pipeline,
        "recipe": run["recipe"],
        "validation_split": data.validation_info.note,
        "validation_examples": data.validation_info.num_examples,
        "test_split": data.test_info.note,
        "test_examples": data.test_info.num_examples,
        "parameters": int(net.count_params()),
        "epochs_run_now": len(times),
        "resumed": resumed,
        "seconds_per_epoch": per_epoch,
        "images_per_second": seen / per_epoch if per_epoch else None,
        "wall_seconds": wall,
        **{k: run[k] for k in (*TRAINING_VALUES, "batch_size", "epochs")},
    }
    for split, split_scores in scores.items():
        for name, value in split_scores.items():
            metrics[f"{split}_{name}"] = float(value)
    return metrics


def closing_line(metrics, output_dir):
    """The line a run ends with: the test score, or why there is none."""
    validation = (
        f"validation accuracy {metrics['validation_accuracy']:.2%} ({metrics['validation_examples']} images, "
        "used to select the checkpoint)"
    )
    if "test_accuracy" in metrics:
        score = f"test accuracy {metrics['test_accuracy']:.2%} ({metrics['test_examples']} images), {validation}"
    else:
        score = f"{validation}; no test score: {metrics['test_split']}"
    return (
        f"{metrics['model']} on {metrics['dataset']}: {score}, {metrics['parameters']:,} parameters, {metrics['epochs']} epochs, "
        f"{metrics['seconds_per_epoch']:.1f} s/epoch, {metrics['images_per_second'] or 0:.0f} images/s "
        f"({metrics['pipeline']} pipeline, recipe {metrics['recipe']!r}) -> {output_dir}"
    )
