"""Callbacks of the training recipe: atomic checkpoints, epoch timing, live curves, and
`callbacks()`, the list `training.train` runs with."""

import csv
import os
import time

import keras


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the model as `.keras` at each epoch end, or only when `monitor` improves.

    The file is written beside the target and moved into place with `os.replace`, so a
    run killed mid-save leaves the previous checkpoint intact.

    Args:
        path: target `.keras` path.
        monitor: optional metric name (e.g. "val_accuracy"); None saves every epoch.
        mode: "max" or "min", the direction in which `monitor` improves.
        best: the best `monitor` value so far (when resuming), or None.
        save_ties: whether an epoch that equals the best `monitor` value replaces the
            checkpoint. A small validation set ties often (180 digits: steps of 0.56%),
            and under a decaying learning rate the later of two tied epochs is usually
            the better model.
        frozen: names of layers frozen for this run (a linear probe), saved trainable
            (`keras_vitmix.pretrained.thawed`) so that the file reloads as a whole model.
    """

    def __init__(self, path, monitor=None, mode="max", best=None, save_ties=False, frozen=()):
        super().__init__()
        self.frozen = tuple(frozen)
        self.path = path
        self.monitor = monitor
        self.mode = mode
        self.best = best  # a resumed run passes the best value reached before
        self.save_ties = save_ties

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None:
                return
            if self.best is not None and value == self.best:
                better = self.save_ties
            else:
                better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            if not better:
                return
            self.best = value
        tmp = f"{self.path[:-len('.keras')]}.tmp.keras"
        # A DeviceTrainer (the device pipeline) holds data: the checkpoint is its network.
        network = getattr(self.model, "network", self.model)
        if self.frozen:
            from keras_vitmix.pretrained import thawed

            with thawed(network, self.frozen):
                network.save(tmp)
        else:
            network.save(tmp)
        os.replace(tmp, self.path)


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of each epoch in `self.times` (seconds)."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


class TrainingCurves(keras.callbacks.Callback):
    """Redraws the loss/accuracy curves PNG from the CSV history as epochs end, so a
    resumed run's figure covers all its epochs.

    Drawing takes about 0.3 s, a tenth of a short epoch, so the figure is redrawn at an
    epoch's end only once `min_interval` seconds have passed since the last drawing (the
    first epoch always draws), and always when training ends.

    Args:
        csv_path: the `CSVLogger`'s file.
        png_path: the figure's path.
        min_interval: seconds between redraws during training.
    """

    def __init__(self, csv_path, png_path, min_interval=10.0):
        super().__init__()
        self.csv_path = csv_path
        self.png_path = png_path
        self.min_interval = min_interval
        self._drawn_at = None
        self._pending = False

    def on_epoch_end(self, epoch, logs=None):
        self._pending = True
        if self._drawn_at is None or time.perf_counter() - self._drawn_at >= self.min_interval:
            self._draw()

    def on_train_end(self, logs=None):
        if self._pending:
            self._draw()

    def _draw(self):
        history = read_history(self.csv_path)
        if not history:
            return
        from keras_vitmix import plotting

        fig = plotting.training_curves(history)
        tmp = f"{self.png_path[:-4]}.tmp.png"
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, self.png_path)
        import matplotlib.pyplot as plt

        plt.close(fig)
        self._drawn_at = time.perf_counter()
        self._pending = False


def read_history(csv_path):
    """The CSV log as {column: [floats]} ({} when there is none yet)."""
    if not os.path.exists(csv_path):
        return {}
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")] for key in rows[0]}


def callbacks(output_dir, extra=(), ema=False, frozen=()):
    """Best and last checkpoints (atomic), resumable backup, CSV history, curves PNG, timing.

    With `ema=True` (an optimizer with `use_ema=True`), validation and both checkpoints
    see the averaged weights; the backup, written first, keeps the raw ones. `frozen`:
    the layers a linear probe froze, saved trainable in the checkpoints.
    """
    history = read_history(os.path.join(output_dir, "history.csv"))
    best = max(history["val_accuracy"]) if history.get("val_accuracy") else None
    return [
        keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup")),
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []),
        # The later of tied epochs: a small validation set ties often, and the learning
        # rate has decayed further by then.
        AtomicCheckpoint(
            os.path.join(output_dir, "model.keras"), monitor="val_accuracy", mode="max", best=best, save_ties=True,
            frozen=frozen,
        ),
        AtomicCheckpoint(os.path.join(output_dir, "last.keras"), frozen=frozen),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "history.csv"), append=True),
        TrainingCurves(os.path.join(output_dir, "history.csv"), os.path.join(output_dir, "curves.png")),
        EpochTimer(),
        *extra,
    ]
