"""One fast route on against the same route off, timed in one process (issue #34).

The experiment behind docs/performance.md's "Re-timed on 2026-12-07": on a shared 2-core
machine `speed.py`'s ratios to timm moved more between runs than most routes save, so
this compares our model with itself. Both sides are timed in alternating rounds, the
order reversed every other round, after two warm-up calls; it prints the median of the
per-round ratios on ÷ off (below 1: the route saves time) for batch-1 inference,
batch-B inference and a training step, and the ratio of the fastest rounds. The model
is built and compiled as `speed.py` builds it (AdamW, `jit_compile` "auto" unless
`--jit`, malloc tuned, JAX with `config.tune_xla_cpu()`).

Torch checks the routes at every call, so one model serves both sides and the route is
switched around each call. JAX and TensorFlow trace a step once, so each side is its
own model, traced under its own setting. `--threads 1` (torch): on a loaded machine
torch's threads wait on each other whenever one is descheduled, which swamps a
millisecond-scale call.

    KERAS_BACKEND=torch python benchmarks/route_ab.py hybrid_mixer_vit_cifar_patch4_32 dense_torch --threads 1 --repeats 20
    KERAS_BACKEND=jax python benchmarks/route_ab.py vit_tiny_patch16_224 attention_jax_cpu --repeats 7
    KERAS_BACKEND=tensorflow python benchmarks/route_ab.py convmixer_768_32 conv_matmul --jit false --overrides '{"num_layers":4}'
"""

import argparse
import json
import statistics

from _timing import alternate, median_ratio  # benchmarks/ is the script's folder


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a registered model name")
    parser.add_argument("route", help="a name from keras_vitmix.config.FAST_ROUTES")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=12, help="timed rounds of each side")
    parser.add_argument("--jit", default="auto", choices=("auto", "true", "false"))
    parser.add_argument("--threads", type=int, default=0, help="torch's threads (0: torch's default)")
    parser.add_argument("--policy", default=None, help="a Keras dtype policy, e.g. mixed_bfloat16")
    parser.add_argument("--overrides", default="{}", help="create_model keyword arguments, as JSON")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    from keras_vitmix import config

    config.tune_malloc()  # before any model runs, as speed.py's workers
    import keras

    if keras.backend.backend() == "jax":
        config.tune_xla_cpu()
    if args.threads and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(args.threads)
    import numpy as np

    from keras_vitmix.applications import create_model

    jit = {"auto": "auto", "true": True, "false": False}[args.jit]

    def runners(model, enabled):
        x = np.random.default_rng(0).uniform(0, 255, (args.batch, *model.input_shape[1:])).astype("float32")
        y = np.arange(args.batch) % model.output_shape[-1]
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy", jit_compile=jit)

        def switched(fn):
            def run():
                with config.fast_routes(enabled, routes=[args.route]):
                    return fn()

            return run

        return {
            "infer1": switched(lambda: model.predict_on_batch(x[:1])),
            "infer": switched(lambda: model.predict_on_batch(x)),
            "train": switched(lambda: model.train_on_batch(x, y)),
        }

    keras.utils.set_random_seed(0)
    if args.policy:
        keras.config.set_dtype_policy(args.policy)
    overrides = json.loads(args.overrides)
    if keras.backend.backend() == "torch":
        model = create_model(args.model, **overrides)
        on, off = runners(model, True), runners(model, False)
    else:
        on = runners(create_model(args.model, **overrides), True)
        off = runners(create_model(args.model, **overrides), False)
        for side in (on, off):  # trace every shape under the side's own setting
            for fn in side.values():
                fn()
    out = dict(backend=keras.backend.backend(), model=args.model, route=args.route, batch=args.batch,
               threads=args.threads or None, policy=args.policy)
    for task in ("infer1", "infer", "train"):
        times = alternate({"on": on[task], "off": off[task]}, args.repeats, balanced=True)
        out[task] = dict(on_ms=statistics.median(times["on"]) * 1e3, off_ms=statistics.median(times["off"]) * 1e3,
                         on_over_off=median_ratio(times["on"], times["off"]),
                         min_on_over_off=min(times["on"]) / min(times["off"]), on_s=times["on"], off_s=times["off"])
    print("AB" + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
