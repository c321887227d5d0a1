"""Plain charts that know nothing of models: curves on log-log axes and labelled points.
`keras_vitmix.cost` draws its measurements with them (time against tokens, accuracy
against time), so the numbers stay in `cost` and the drawing here."""

from keras_vitmix.plotting.base import pyplot


def loglog_curves(curves, xlabel, ylabel, references=(), ax=None):
    """Curves on log-log axes, where a power law y ~ x^k is a straight line of slope k.

    Args:
        curves: sequence of `(label, x, y)`, drawn with markers.
        xlabel, ylabel: the axis labels.
        references: sequence of `(label, x, y)`, drawn as thin grey guides (dotted, then
            dashed).
        ax: a matplotlib axis to draw into (one panel of a larger figure); a new figure
            when None.

    Returns:
        The Figure holding the axis.

    Example:

    >>> fig = loglog_curves([("toy", [4, 16], [1.0, 4.0])], "tokens", "ms")
    """
    if ax is None:
        _, ax = pyplot().subplots(figsize=(5.5, 4), constrained_layout=True)
    for label, x, y in curves:
        ax.plot(x, y, "-o", markersize=4, label=label)
    for (label, x, y), style in zip(references, (":", "--", "-.")):
        ax.plot(x, y, style, color="gray", linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax.figure


def labelled_points(points, xlabel, ylabel):
    """One point per entry, with its label beside it.

    Args:
        points: dict `{label: (x, y)}`.
        xlabel, ylabel: the axis labels.

    Returns:
        A Figure with one axis.

    Example:

    >>> fig = labelled_points({"ViT": (20.0, 91.0), "Mixer": (10.0, 88.0)}, "ms", "%")
    """
    fig, ax = pyplot().subplots(figsize=(5, 4), constrained_layout=True)
    for label, (x, y) in points.items():
        ax.scatter(x, y, s=30)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig
