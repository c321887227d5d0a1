"""Measured compute cost: inference time against the number of tokens.

Self-attention compares every token with every other, so its cost grows as N^2 in the
number of tokens N (Vaswani et al., 2017, https://arxiv.org/abs/1706.03762, table 1);
MLP-Mixer's token-mixing MLP (Tolstikhin et al., 2021, https://arxiv.org/abs/2105.01601)
and ConvMixer's depthwise convolutions (Trockman & Kolter, 2022,
https://arxiv.org/abs/2201.09792) grow as N. These helpers time inference on the machine
at hand, measure the memory a call adds and fit the exponent of the power law; the
tutorials and benchmarks/scaling.py use them. `cost_curves` and `speed_accuracy` turn the
measurements into the data of a figure and leave the drawing to `keras_vitmix.plotting`.

Timings are wall-clock medians on whatever else the machine is doing: compare curves
measured together, in one process, and read exponents from the larger sizes, where fixed
per-call overhead no longer dominates.
"""

import collections
import ctypes
import ctypes.util
import math
import time

import numpy as np

from keras_vitmix.applications import create_model
from keras_vitmix.inspection import patch_grid
from keras_vitmix.plotting import charts

Measurement = collections.namedtuple("Measurement", "label tokens seconds parameters")
Measurement.__doc__ = """Inference time at several sizes: `tokens`, `seconds` (median per call) and
`parameters` are NumPy arrays, one entry per size."""


def time_forward(model, inputs, repeats=5, warmup=1):
    """Median wall time of one inference call, `model.predict_on_batch(inputs)`.

    `predict_on_batch` runs the backend's compiled predict step (XLA under jax,
    `tf.function` under tensorflow, eager under torch) and returns NumPy arrays, so the
    time includes waiting for the result. The `warmup` calls (compilation) are not timed.

    Args:
        model: a `keras.Model`.
        inputs: a batch the model accepts.
        repeats: int >= 1, timed calls.
        warmup: int >= 0, untimed calls first.

    Returns:
        float, seconds.

    Example:

    >>> model = keras_vitmix.applications.create_model("seed_convmixer")
    >>> seconds = time_forward(model, np.zeros((8, 32, 32, 3), "float32"))
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be an integer >= 1. Received: repeats={repeats!r}")
    for _ in range(warmup):
        model.predict_on_batch(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(inputs)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _tokens(model):
    """Patches for an image model (its PatchEmbedding grid), else the input's length."""
    try:
        return math.prod(patch_grid(model).grid_shape)
    except ValueError:
        return model.input_shape[1]


def cost_vs_tokens(build, sizes, batch_size=1, repeats=5, label=None, **overrides):
    """Times inference of a model built at each size; see `Measurement`.

    Args:
        build: a registered model name (built with `input_shape=(size, size, 3)`), or a
            callable `build(size) -> keras.Model`: an image model, or a model of token
            sequences (B, N, D) whose N is `size`.
        sizes: image sizes (for image models) or token counts, increasing.
        batch_size: int, inputs per call: random pixels in [0, 255] for images,
            standard-normal tokens otherwise.
        repeats: int, timed calls per size (the median is kept).
        label: the curve's name; defaults to the model name.
        **overrides: constructor arguments for a registered name (e.g. `hidden_dim=64`).

    Returns:
        A `Measurement`; `tokens` is the patch count for image models.

    Example:

    >>> vit = cost_vs_tokens("vit_cifar_patch4_32", [16, 32], num_layers=1)
    >>> vit.tokens
    array([16, 64])
    """
    if isinstance(build, str):
        name = build

        def build(size):
            return create_model(name, input_shape=(size, size, 3), **overrides)

    elif overrides:
        raise ValueError(f"Constructor overrides need a registered name. Received: {sorted(overrides)}")
    rng = np.random.default_rng(0)
    tokens, seconds, parameters = [], [], []
    for size in sizes:
        model = build(size)
        shape = (batch_size, *model.input_shape[1:])
        if len(shape) == 4:
            inputs = rng.uniform(0, 255, shape).astype("float32")
        else:
            inputs = rng.standard_normal(shape).astype("float32")
        seconds.append(time_forward(model, inputs, repeats))
        tokens.append(_tokens(model))
        parameters.append(model.count_params())
        label = label or model.name
    return Measurement(label, np.array(tokens), np.array(seconds), np.array(parameters))


def peak_memory(fn):
    """Resident memory that one call of `fn()` adds at its peak, in bytes (Linux).

    Hands freed heap memory back to the OS first (glibc `malloc_trim`), resets the
    process's resident high-water mark (`/proc/self/clear_refs`), calls `fn()`, and
    returns the high-water mark (`VmHWM`) minus the resident size just before. It counts
    the pages the call touches beyond what was resident: activations, workspaces and
    outputs; not the weights (already resident), nor buffers a backend keeps in a pool
    of its own and reuses. Call `fn` once beforehand so compilation is not counted.

    Args:
        fn: a callable of no arguments.

    Returns:
        int, bytes (0 or more); None where the OS offers no resettable high-water mark.

    Example:

    >>> peak_memory(lambda: np.ones(2**25, "uint8")) >= 2**24  # 32 MiB allocated
    True
    """
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    except OSError:
        return None
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)


def _status_bytes(key):
    """A memory line of /proc/self/status (reported in kB), in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def power_law_exponent(tokens, seconds, last=None):
    """The exponent k of seconds ~ tokens^k: the least-squares slope in log-log.

    Args:
        tokens, seconds: arrays of one length, >= 2 positive values.
        last: int, fit only the `last` largest sizes (small sizes mostly measure the
            fixed cost of a call); all when None.

    Returns:
        float.

    Example:

    >>> power_law_exponent([10, 100, 1000], [1e-3, 1e-1, 1e1])
    2.0
    """
    x, y = np.log(np.asarray(tokens, float)), np.log(np.asarray(seconds, float))
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"`tokens` and `seconds` must be 1-D of one length >= 2. Received: shapes "
                         f"{np.shape(tokens)} and {np.shape(seconds)}")
    last = len(x) if last is None else max(2, last)
    return round(float(np.polyfit(x[-last:], y[-last:], 1)[0]), 6)


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
    curves = [
        (f"{m.label} (~N^{power_law_exponent(m.tokens, m.seconds, last):.2f})", m.tokens, np.asarray(m.seconds) * scale)
        for m in measurements
    ]
    first = measurements[0]
    x = np.array([first.tokens[0], max(m.tokens[-1] for m in measurements)], float)
    references = [(f"slope {k}", x, first.seconds[0] * scale * (x / x[0]) ** k) for k in (1, 2)]
    return charts.loglog_curves(curves, "tokens N (patches)", ylabel, references, ax=ax)


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
    points = {label: (seconds * 1e3, accuracy * 100) for label, (seconds, accuracy) in results.items()}
    return charts.labelled_points(points, "inference time per batch (ms)", "test accuracy (%)")
