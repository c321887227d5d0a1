"""Shared by the benchmark scripts: alternating runs, per-run ratios, a worker per backend,
and the results file's sections (one per benchmark, replaced by its next run)."""

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
    most between AVX2 and AVX-512 machines: docs/performance.md)."""
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


def this_commit(repo=None):
    """The checkout's commit, short, with "+ local changes" where tracked files differ
    from it; "unknown" outside a git checkout."""
    repo = repo or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*arguments):
        return subprocess.run(["git", "-C", repo, *arguments], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + local changes" if changed else "")


def write_section(results, title, script, argv, preamble, tables, machine=None, commit=None):
    """Writes `## title`, then the date, machine, commit and exact command, `preamble`
    and the tables, into the results file (benchmarks/RESULTS.md): in place of the
    section with the same title, or at the end if it has none. The file holds the
    current table of each benchmark; earlier runs stay in git history. `machine`: where
    the numbers were measured, if not on this machine (rows rendered later)."""
    import datetime

    command = f"python benchmarks/{os.path.basename(script)} " + " ".join(argv)
    section = (
        f"## {title}\n\n"
        f"Date: {datetime.date.today()}. Machine: {machine or this_machine()}. "
        f"Commit: {commit or this_commit()}. Command: `{command.strip()}`.\n\n"
        f"{preamble}\n\n" + "\n\n".join(tables) + "\n"
    )
    text = open(results).read() if os.path.exists(results) else ""
    with open(results, "w") as handle:
        handle.write(replace_section(text, title, section))
    print(f"Wrote the section {title!r} of {results}")


def replace_section(text, title, section):
    """`text` (Markdown) with its `## title` section, up to the next `## ` heading,
    replaced by `section`; `section` appended where there is no such heading."""
    lines = text.splitlines(keepends=True)
    heading = f"## {title}"
    starts = [i for i, line in enumerate(lines) if line.rstrip() == heading]
    if not starts:
        return text.rstrip("\n") + ("\n\n" if text.strip() else "") + section
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + after if after else "")


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
