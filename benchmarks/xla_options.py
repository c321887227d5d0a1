"""XLA:CPU compiler options under JAX: our models' steps with keras_vitmix's options
against XLA's defaults.

Under JAX on the CPU, `keras_vitmix.applications` models compile their `fit`, `evaluate`
and `predict` steps with `Application.jax_cpu_compiler_options` (matrix products left to
XLA, not YNNPACK; see keras_vitmix/applications/_jax_compile.py). This script checks that
choice: for each model it builds two copies with the same weights, one with the options
and one with `{}` (XLA's defaults), and times them alternately, in balanced order, for
inference (`predict_on_batch`) and a training step (`train_on_batch`, AdamW). It reports
the median of per-round ratios (options ÷ defaults: below 1 is faster) and the largest
difference between the two copies' predictions, prints a table and appends it to
benchmarks/RESULTS.md. JAX only (the options do nothing elsewhere); it runs in its own
process with KERAS_BACKEND=jax.

    python benchmarks/xla_options.py
    python benchmarks/xla_options.py --models vit_tiny_patch16_224 --repeats 10
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from _timing import alternate, append_section, emit, median_ratio, run_backends  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
# name: (create_model overrides, batch size)
MODELS = {
    "vit_tiny_patch16_224": ({}, 32),
    "mixer_s16_224": ({}, 32),
    "convmixer_768_32": ({"num_layers": 4}, 32),
    "hybrid_mixer_vit_cifar_patch4_32": ({}, 128),
    "hybrid_convmixer_mixer_cifar_patch2_32": ({}, 128),
}


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registered names")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=None, help="instead of each model's batch above")
    parser.add_argument("--overrides", default=None, help="JSON create_model overrides for every model (tests)")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def twin_runners(build, batch):
    """Two copies of `build()` with the same weights, one with our options and one with
    XLA's defaults, and {task: {copy: fn}} to time them; also their predictions."""
    import keras
    import numpy as np

    from keras_vitmix.applications._jax_compile import JAX_CPU_COMPILER_OPTIONS

    copies = {"options": build(), "defaults": build()}
    copies["defaults"].set_weights(copies["options"].get_weights())
    copies["options"].jax_cpu_compiler_options = JAX_CPU_COMPILER_OPTIONS
    copies["defaults"].jax_cpu_compiler_options = {}
    x = np.random.default_rng(0).uniform(0, 255, (batch, *copies["options"].input_shape[1:])).astype("float32")
    y = np.arange(batch) % copies["options"].output_shape[-1]
    predictions = {name: model.predict_on_batch(x) for name, model in copies.items()}
    for model in copies.values():
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy")
    tasks = {
        "infer": {name: (lambda m=model: m.predict_on_batch(x)) for name, model in copies.items()},
        "train": {name: (lambda m=model: m.train_on_batch(x, y)) for name, model in copies.items()},
    }
    return tasks, predictions


def worker(args):
    import keras
    import numpy as np

    from keras_vitmix.applications import create_model

    for name in args.models:
        overrides, batch = MODELS.get(name, ({}, 32))
        overrides = json.loads(args.overrides) if args.overrides else overrides
        batch = args.batch_size or batch
        keras.utils.set_random_seed(0)
        tasks, predictions = twin_runners(lambda: create_model(name, **overrides), batch)
        row = {"model": name + (f" ({', '.join(f'{k} {v}' for k, v in overrides.items())})" if overrides else ""),
               "batch": batch,
               "max_diff": float(np.abs(predictions["options"] - predictions["defaults"]).max())}
        for task, fns in tasks.items():
            times = alternate(fns, args.repeats, balanced=True)
            row[task] = {
                "options": statistics.median(times["options"]), "defaults": statistics.median(times["defaults"]),
                "ratio": median_ratio(times["options"], times["defaults"]),
            }
        emit(row)
        keras.backend.clear_session()


def format_table(rows):
    lines = [
        "| model | batch | infer, XLA defaults | infer, options | ÷ | train step, XLA defaults | train step, options | ÷ | max prediction gap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [f"`{row['model']}`", str(row["batch"])]
        for task in ("infer", "train"):
            r = row[task]
            cells += [f"{r['defaults'] * 1e3:.0f} ms", f"{r['options'] * 1e3:.0f} ms", f"{r['ratio']:.2f}×"]
        cells.append(f"{row['max_diff']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        return worker(args)
    rows = run_backends(__file__, ["jax"], argv, format_table)
    if rows and not args.no_record:
        append_section(
            args.results, "XLA:CPU: matrix products outside YNNPACK (JAX)", __file__, argv,
            f"Medians of {args.repeats} alternating rounds in balanced order, one process; ÷ = median of per-round "
            "ratios (with keras_vitmix's `jax_cpu_compiler_options` ÷ with XLA's defaults, below 1 = the options "
            "are faster); the two copies share their weights.",
            [format_table(rows)],
        )
    return rows


if __name__ == "__main__":
    main()
