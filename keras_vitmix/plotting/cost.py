"""Figures of measured cost (`keras_vitmix.cost`): inference time against the number of
tokens on log-log axes, where a power law is a straight line whose slope is its exponent,
and accuracy against inference time, the trade-off a user picks a model by."""

import numpy as np

from keras_vitmix.cost import Measurement, power_law_exponent
from keras_vitmix.plotting.base import pyplot


def cost_curves(measurements, last=None, ax=None, scale=1e3, ylabel="inference time per batch (ms)"):
    """Inference time against tokens, log-log, one line per measurement (and slopes 1, 2).

    Args:
        measurements: a `Measurement` or a list of them.
        last: passed to `power_law_exponent` for the exponents in the legend.
        ax: a matplotlib axis to draw into (one panel of a larger figure); a new
            figure when None.
        scale, ylabel: the y axis shows `seconds * scale`, under `ylabel`. The defaults
            plot milliseconds; another positive quantity stored in `seconds` (bytes,
            say) plots with its own `scale` and `ylabel`.

    Returns:
        The Figure holding the log-log axis; each curve's legend gives its fitted
        exponent. Dotted reference lines of slope 1 and 2 start at the first curve's
        first point.

    Example:

    >>> fig = cost_curves(Measurement("toy", np.array([4, 16]), np.array([1e-3, 4e-3]), np.array([10, 10])))
    """
    measurements = [measurements] if isinstance(measurements, Measurement) else list(measurements)
    if ax is None:
        _, ax = pyplot().subplots(figsize=(5.5, 4), constrained_layout=True)
    for m in measurements:
        exponent = power_law_exponent(m.tokens, m.seconds, last)
        ax.plot(m.tokens, np.asarray(m.seconds) * scale, "-o", markersize=4, label=f"{m.label} (~N^{exponent:.2f})")
    first = measurements[0]
    x = np.array([first.tokens[0], max(m.tokens[-1] for m in measurements)], float)
    for slope, style in ((1, ":"), (2, "--")):
        ax.plot(x, first.seconds[0] * scale * (x / x[0]) ** slope, style, color="gray", linewidth=1,
                label=f"slope {slope}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens N (patches)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax.figure


def speed_accuracy(results):
    """Accuracy against inference time, one labelled point per model: the trade-off.

    Args:
        results: dict `{label: (seconds, accuracy)}`, e.g. seconds per batch from
            `time_forward` and test accuracy in [0, 1].

    Returns:
        A Figure with one axis: x = inference time (ms), y = accuracy (%).

    Example:

    >>> fig = speed_accuracy({"ViT": (0.02, 0.91), "Mixer": (0.01, 0.88)})
    """
    fig, ax = pyplot().subplots(figsize=(5, 4), constrained_layout=True)
    for label, (seconds, accuracy) in results.items():
        ax.scatter(seconds * 1e3, accuracy * 100, s=30)
        ax.annotate(label, (seconds * 1e3, accuracy * 100), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xlabel("inference time per batch (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    return fig
