"""The metrics of the training recipe, importable with the package so saved models reload.

`top1_accuracy` and `top5_accuracy` take integer or one-hot (mixed: the larger share
counts) labels, so the same metric reads plain and MixUp/CutMix batches. They are
registered with Keras's serialization under "keras_vitmix", and `import keras_vitmix`
imports this module: a `.keras` file compiled by `keras_vitmix.training` then loads,
compiled, with `keras.saving.load_model` alone. The module imports only Keras.
"""

import keras
from keras import ops


def integer_labels(y_true, y_pred):
    """Integer labels from integer or one-hot (mixed: the larger share) labels."""
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1]:
        return ops.argmax(y_true, axis=-1)
    return ops.reshape(ops.cast(y_true, "int32"), (-1,))


@keras.saving.register_keras_serializable(package="keras_vitmix")
def top1_accuracy(y_true, y_pred):
    """1.0 per example whose most probable class is its label, else 0.0."""
    return ops.cast(ops.equal(integer_labels(y_true, y_pred), ops.argmax(y_pred, axis=-1)), "float32")


@keras.saving.register_keras_serializable(package="keras_vitmix")
def top5_accuracy(y_true, y_pred):
    """1.0 per example whose label is among its five most probable classes, else 0.0."""
    labels = ops.cast(integer_labels(y_true, y_pred), "int32")
    return ops.cast(ops.in_top_k(labels, ops.cast(y_pred, "float32"), 5), "float32")


def accuracy_metrics(num_classes):
    """The recipe's compiled metrics: "accuracy", and "top5" for more than 5 classes."""
    metrics = [keras.metrics.MeanMetricWrapper(top1_accuracy, name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.MeanMetricWrapper(top5_accuracy, name="top5"))
    return metrics
