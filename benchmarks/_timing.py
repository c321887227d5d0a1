"""Shared by the benchmark scripts: alternating runs, per-run ratios, a worker per backend."""

import json
import os
import statistics
import subprocess
import sys
import time


def alternate(functions, repeats, warmup=2, balanced=False):
    """Calls each of {name: fn} `warmup` times (tracing, compiling), then `repeats` rounds
    of one timed call each, in turn, so drifts in machine load hit all alike. With
    `balanced`, every other round runs them in reverse order, so that no function always
    runs first (right after the previous round's last one).

    Returns:
        {name: [seconds of each round]}.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for round_ in range(repeats):
        order = list(functions.items())
        for name, fn in order[::-1] if balanced and round_ % 2 else order:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(numerators, denominators):
    """The median of per-round ratios: robust to a round the whole machine was slow."""
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def emit(row):
    """Prints one result row for `run_worker` to collect (a worker's output)."""
    print("ROW" + json.dumps(row), flush=True)


def run_worker(script, backend, arguments):
    """Runs `script *arguments --worker backend` in a new process with KERAS_BACKEND set
    (Keras reads it once, at import) and returns the rows it `emit`ted; a failed worker's
    stderr is reported and the rows it finished are kept.
    """
    command = [sys.executable, str(script), *arguments, "--worker", backend]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    rows = [json.loads(line[3:]) for line in result.stdout.splitlines() if line.startswith("ROW")]
    if result.returncode != 0:
        print(f"{backend}: worker failed (exit {result.returncode}):\n{result.stderr[-3000:]}", file=sys.stderr)
    return rows


def this_machine():
    """This machine, as the results file names it: architecture, cores and, on Linux,
    the CPU's model and widest vector instructions (XLA's and oneDNN's kernels differ
    most between AVX2 and AVX-512 machines, which this workplace hands out alike)."""
    import platform

    described = f"{platform.machine()}, {os.cpu_count()} cores"
    model, flags = cpu_model_and_flags()
    if model:
        described += f", {model}"
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return described + (f" ({vector})" if vector else "")


def cpu_model_and_flags(cpuinfo="/proc/cpuinfo"):
    """(model name, set of flags) of the first CPU in `cpuinfo`; ("", set()) where it
    cannot be read (not Linux)."""
    model, flags = "", set()
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def append_section(results, title, script, argv, preamble, tables, machine=None):
    """Appends `## title — date`, the machine, the exact command, `preamble` and the
    tables to the results file (benchmarks/RESULTS.md), and says so. `machine`: where
    the numbers were measured, if not on this machine (rows rendered later)."""
    import datetime

    command = f"python benchmarks/{os.path.basename(script)} " + " ".join(argv)
    machine = machine or this_machine()
    with open(results, "a") as handle:
        handle.write(
            f"\n## {title} — {datetime.date.today()}\n\n"
            f"Machine: {machine}. Command: `{command.strip()}`. "
            f"{preamble}\n\n" + "\n\n".join(tables) + "\n"
        )
    print(f"Appended to {results}")


def run_backends(script, backends, arguments, show):
    """`run_worker` for each backend in turn, printing `show(rows so far)` after each.

    Returns:
        Every backend's rows, in order.
    """
    rows = []
    for backend in backends:
        rows += run_worker(script, backend, arguments)
        print(show(rows), flush=True)
    return rows
