"""Timing shared by the benchmark scripts: alternating runs and per-run ratios."""

import statistics
import time


def alternate(functions, repeats, warmup=2):
    """Calls each of {name: fn} `warmup` times (tracing, compiling), then `repeats` rounds
    of one timed call each, in turn, so drifts in machine load hit all alike.

    Returns:
        {name: [seconds of each round]}.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(numerators, denominators):
    """The median of per-round ratios: robust to a round the whole machine was slow."""
    return statistics.median(n / d for n, d in zip(numerators, denominators))
