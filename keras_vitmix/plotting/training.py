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


def class_indices(values, name, num_classes):
    """`values` as int class indices in [0, num_classes); anything else is refused, since
    counting with np.add.at would put a -1 in the last class without a word."""
    values = np.asarray(values).ravel()
    if values.size and not (np.issubdtype(values.dtype, np.number) and np.array_equal(values, np.round(values))
                            and 0 <= values.min() <= values.max() < num_classes):
        raise ValueError(f"`{name}` must be class indices in [0, {num_classes - 1}]. "
                         f"Received: dtype {values.dtype}, range [{values.min()}, {values.max()}]")
    return values.astype(int)


def confusion_matrix(labels, predictions, class_names):
    """A confusion matrix (rows: true class, columns: predicted), counts in each cell.

    Args:
        labels: int array (N,) of true classes.
        predictions: int array (N,) of predicted classes.
        class_names: sequence of names, in label order.

    Returns:
        A Figure with two axes: the matrix, coloured from 0 to its largest count, and its
        colour bar (past 20 classes the cells carry no numbers, so the colours must).
    """
    n = len(class_names)
    labels, predictions = class_indices(labels, "labels", n), class_indices(predictions, "predictions", n)
    if len(labels) != len(predictions):
        raise ValueError(f"`labels` and `predictions` must have the same length. "
                         f"Received: {len(labels)} labels, {len(predictions)} predictions")
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (labels, predictions), 1)
    plt = pyplot()
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), constrained_layout=True)
    fig.colorbar(ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, matrix.max())), ax=ax, label="images",
                 shrink=0.8)
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
