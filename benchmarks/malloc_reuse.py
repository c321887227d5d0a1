"""Reusing freed memory: our models' steps with keras_vitmix's malloc settings against
glibc's defaults.

`import keras_vitmix` sets glibc's malloc to keep and reuse large freed blocks
(keras_vitmix/_malloc.py): XLA:CPU's per-step buffers are otherwise mapped afresh, with a
page fault per 4 KiB page, at every step. The settings are process-wide and act only
before the frameworks' threads allocate, so the two sides cannot share a process: this
script alternates worker processes, `KERAS_VITMIX_MALLOC=reuse` (the default) and
`KERAS_VITMIX_MALLOC=system`, in balanced order (reuse first in even rounds, system first
in odd ones). Each worker builds the model with the same seed, times `--steps` calls of
inference (`predict_on_batch`) and of a training step (`train_on_batch`, AdamW) after two
warm-up calls each, and counts the page faults (minor faults) of each call. The table gives
the medians over rounds, the median of per-round ratios (reuse ÷ system, below 1 = reuse
is faster) and the worker's peak resident memory.

    python benchmarks/malloc_reuse.py
    python benchmarks/malloc_reuse.py --backends jax --models vit_tiny_patch16_224 --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _timing import append_section, emit, median_ratio  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
# name: batch size
MODELS = {"vit_tiny_patch16_224": 32, "mixer_s16_224": 32, "seed_mixer": 64}
SIDES = ("reuse", "system")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registered names")
    parser.add_argument("--batch-size", type=int, default=None, help="instead of each model's batch above")
    parser.add_argument("--rounds", type=int, default=3, help="worker processes per side")
    parser.add_argument("--steps", type=int, default=3, help="timed calls per task in each worker")
    parser.add_argument("--jit-compile", default="auto", choices=("auto", "true", "false"))
    parser.add_argument("--overrides", default=None, help="JSON create_model overrides for every model (tests)")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args):
    """One side, one model, in this process: emits a row of times and faults."""
    import resource
    import time

    import keras
    import numpy as np

    import keras_vitmix
    from keras_vitmix.applications import create_model

    keras.utils.set_random_seed(0)
    model = create_model(args.worker, **json.loads(args.overrides or "{}"))
    batch = args.batch_size or MODELS.get(args.worker, 32)
    x = np.random.default_rng(0).uniform(0, 255, (batch, *model.input_shape[1:])).astype("float32")
    y = np.arange(batch) % model.output_shape[-1]
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy", jit_compile=jit)
    row = {"tuned": keras_vitmix._malloc._state["tuned"], "batch": batch}
    for task, call in (("infer", lambda: model.predict_on_batch(x)), ("train", lambda: model.train_on_batch(x, y))):
        call(), call()
        times, faults = [], []
        for _ in range(args.steps):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        row[task] = statistics.median(times)
        # The median call: with reuse, an early call can still fault while the heap settles.
        row[f"{task}_faults"] = statistics.median(faults)
    row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emit(row)


def run_side(argv, backend, model, side):
    command = [sys.executable, __file__, *argv, "--worker", model]
    env = {**os.environ, "KERAS_BACKEND": backend, "KERAS_VITMIX_MALLOC": side, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    rows = [json.loads(line[3:]) for line in result.stdout.splitlines() if line.startswith("ROW")]
    if result.returncode != 0 or not rows:
        raise RuntimeError(f"{backend} {model} ({side}): worker failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return rows[-1]


def measure(argv, args, backend, model):
    """Balanced rounds of one worker per side: the row of medians and ratios."""
    runs = {side: [] for side in SIDES}
    for round_ in range(args.rounds):
        for side in SIDES[::-1] if round_ % 2 else SIDES:
            runs[side].append(run_side(argv, backend, model, side))
    row = {"backend": backend, "model": model, "batch": runs["reuse"][0]["batch"],
           "tuned": [run["tuned"] for run in runs["reuse"]]}
    for task in ("infer", "train"):
        for side in SIDES:
            row[f"{task}_{side}"] = statistics.median(run[task] for run in runs[side])
            row[f"{task}_faults_{side}"] = statistics.median(run[f"{task}_faults"] for run in runs[side])
        row[f"{task}_ratio"] = median_ratio([r[task] for r in runs["reuse"]], [r[task] for r in runs["system"]])
    for side in SIDES:
        row[f"peak_mb_{side}"] = statistics.median(run["peak_mb"] for run in runs[side])
    return row


def format_table(rows):
    lines = [
        "| backend | model | batch | infer, system | infer, reuse | ÷ | faults per call | train step, system "
        "| train step, reuse | ÷ | faults per step | peak MB, system → reuse |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [r["backend"], f"`{r['model']}`", str(r["batch"])]
        for task in ("infer", "train"):
            cells += [
                f"{r[f'{task}_system'] * 1e3:.0f} ms", f"{r[f'{task}_reuse'] * 1e3:.0f} ms", f"{r[f'{task}_ratio']:.2f}×",
                f"{r[f'{task}_faults_system']:,.0f} → {r[f'{task}_faults_reuse']:,.0f}",
            ]
        cells.append(f"{r['peak_mb_system']:,.0f} → {r['peak_mb_reuse']:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        return worker(args)
    rows = []
    for backend in args.backends:
        for model in args.models:
            rows.append(measure(argv, args, backend, model))
            print(format_table(rows[-1:]), flush=True)
    print(format_table(rows))
    if rows and not args.no_record:
        append_section(
            args.results, "Reusing freed memory: keras_vitmix's malloc settings against glibc's defaults", __file__,
            argv,
            f"Medians of {args.rounds} worker processes per side, alternating in balanced order, each timing "
            f"{args.steps} calls per task after two warm-up calls; ÷ = median of per-round ratios (reuse ÷ system, "
            "below 1 = reuse is faster); faults = minor page faults of a worker's median call (medians over "
            "workers); peak MB = the workers' "
            "peak resident memory.",
            [format_table(rows)],
        )
    return rows


if __name__ == "__main__":
    main()
