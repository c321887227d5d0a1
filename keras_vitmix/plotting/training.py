"""Figures of a training run: its loss and accuracy curves, and the confusion matrix of
an evaluation (`keras_vitmix.training` writes both into the run folder)."""

import numpy as np

from keras_vitmix.plotting.base import pyplot


def training_curves(history):
    """Loss and accuracy, train and validation, by epoch.

    Args:
        history: a `keras.callbacks.History`, its `.history` dict, or a dict of lists
            as read from the CSV log (keys "loss", "val_loss", "accuracy", ...).

    Returns:
        A Figure with two axes: loss, accuracy.
    """
    history = getattr(history, "history", history)
    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key, title in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        for prefix, label, style in (("", "train", "-o"), ("val_", "validation", "-s")):
            values = history.get(prefix + key)
            if values is not None and len(values):
                ax.plot(epochs[: len(values)], values, style, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix(labels, predictions, class_names):
    """A confusion matrix (rows: true class, columns: predicted), counts in each cell.

    Args:
        labels: int array (N,) of true classes.
        predictions: int array (N,) of predicted classes.
        class_names: sequence of names, in label order.

    Returns:
        A Figure with one axis.
    """
    labels = np.asarray(labels).astype(int)
    predictions = np.asarray(predictions).astype(int)
    n = len(class_names)
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (labels, predictions), 1)
    plt = pyplot()
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), constrained_layout=True)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"accuracy {accuracy:.2%} on {matrix.sum()} images")
    if n <= 20:
        threshold = matrix.max() / 2
        for i in range(n):
            for j in range(n):
                color = "white" if matrix[i, j] > threshold else "black"
                ax.text(j, i, matrix[i, j], ha="center", va="center", color=color, fontsize=8)
    fig.matrix = matrix
    return fig
