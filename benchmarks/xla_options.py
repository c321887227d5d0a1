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
import contextlib
import sys
from pathlib import Path

from _timing import append_section, run_backends  # benchmarks/ is the script's folder
from _twins import emit_twin_rows, twin_table

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


def sides():
    """The copy with keras_vitmix's options, and the copy with XLA's defaults."""
    from keras_vitmix.applications._jax_compile import JAX_CPU_COMPILER_OPTIONS

    def with_options(options):
        @contextlib.contextmanager
        def setup(model):
            model.jax_cpu_compiler_options = options
            yield

        return setup

    return {"options": with_options(JAX_CPU_COMPILER_OPTIONS), "defaults": with_options({})}


def worker(args):
    emit_twin_rows(args.models, MODELS, args, sides())


def format_table(rows):
    lead = {"model": lambda r: f"`{r['model']}`", "batch": lambda r: str(r["batch"])}
    return twin_table(rows, lead, (("options", "options"), ("defaults", "XLA defaults")))


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
