"""Convolution routes: keras_vitmix's `Conv2D` / `DepthwiseConv2D` / `BatchNormalization`
against Keras's own.

`keras_vitmix.layers` computes a depthwise convolution as shifted multiply-adds under JAX
on the CPU and as one channels-last `conv2d` under torch, a convolution whose kernel
tiles the image (patch embeddings, 1x1 pointwise convolutions) as reshape + matmul, and
batch normalization at inference as one fused call under torch. This script checks that
choice per backend: for the shapes our registered models use, a one-layer model (the
layer, global average pooling, a 10-way softmax head) built with our layer and with
Keras's is timed alternately for inference (`predict_on_batch`) and a training step
(`train_on_batch`, AdamW); then whole models. It reports the median of per-run ratios
(ours ÷ Keras's: below 1 is faster), prints a table and appends it to
benchmarks/RESULTS.md. Each backend runs in its own process.

    python benchmarks/conv_routes.py
    python benchmarks/conv_routes.py --backends jax --repeats 10
"""

import argparse
import sys
from pathlib import Path

from _timing import alternate, append_section, emit, median_ratio, run_backends  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
# label: (layer kind, layer kwargs, input shape (batch included))
LAYERS = {
    "depthwise 5x5, 16x16x256 (convmixer_256_8)": ("depthwise", dict(kernel_size=5, padding="same"), (32, 16, 16, 256)),
    "depthwise 7x7, 32x32x768 (convmixer_768_32), batch 8": ("depthwise", dict(kernel_size=7, padding="same"), (8, 32, 32, 768)),
    "depthwise 9x9, 32x32x256 (seed_convmixer)": ("depthwise", dict(kernel_size=9, padding="same"), (32, 32, 32, 256)),
    "batch norm, 32x32x768 (convmixer_768_32), batch 8": ("norm", dict(epsilon=1e-5, momentum=0.9), (8, 32, 32, 768)),
    "pointwise 1x1, 16x16x256 (convmixer_256_8)": ("conv", dict(filters=256, kernel_size=1), (32, 16, 16, 256)),
    "patch 16x16, 224 px -> 192 (vit_tiny_patch16_224)": ("conv", dict(filters=192, kernel_size=16, strides=16), (32, 224, 224, 3)),
    "patch 4x4, 32 px -> 256 (hybrid_mixer_vit_cifar)": ("conv", dict(filters=256, kernel_size=4, strides=4), (32, 32, 32, 3)),
}
# Whole models: the routes on against Keras's layers swapped back in.
MODELS = ["convmixer_256_8", "vit_tiny_patch16_224"]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def one_layer_model(layer, shape):
    import keras

    inputs = keras.Input(shape[1:])
    x = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy")
    return model


def tasks(model, shape):
    import numpy as np

    x = np.random.default_rng(0).uniform(-1, 1, shape).astype("float32")
    y = np.arange(shape[0]) % model.output_shape[-1]
    return {"infer": lambda: model.predict_on_batch(x), "train": lambda: model.train_on_batch(x, y)}


def keras_routes(enabled):
    """Context: our layers' fast routes on (as shipped) or off (Keras's computation)."""
    import contextlib

    from keras_vitmix.layers import BatchNormalization, Conv2D, DepthwiseConv2D

    switches = [
        (Conv2D, "_matmul_applies"),
        (Conv2D, "_torch_applies"),
        (DepthwiseConv2D, "_shifted_applies"),
        (DepthwiseConv2D, "_torch_applies"),
        (BatchNormalization, "_fused_applies"),
    ]

    @contextlib.contextmanager
    def scope():
        saved = [getattr(cls, name) for cls, name in switches]
        if not enabled:
            for cls, name in switches:
                setattr(cls, name, lambda self, *args: False)
        try:
            yield
        finally:
            for (cls, name), method in zip(switches, saved):
                setattr(cls, name, method)

    return scope()


def scoped(fn, enabled):
    def call():
        with keras_routes(enabled):
            return fn()

    return call


def worker(args):
    import keras

    from keras_vitmix.applications import create_model
    from keras_vitmix.layers import BatchNormalization, Conv2D, DepthwiseConv2D

    ours_cls = {"conv": Conv2D, "depthwise": DepthwiseConv2D, "norm": BatchNormalization}
    keras_cls = {
        "conv": keras.layers.Conv2D,
        "depthwise": keras.layers.DepthwiseConv2D,
        "norm": keras.layers.BatchNormalization,
    }
    pairs = []
    for label, (kind, kwargs, shape) in LAYERS.items():
        ours = tasks(one_layer_model(ours_cls[kind](**kwargs), shape), shape)
        theirs = tasks(one_layer_model(keras_cls[kind](**kwargs), shape), shape)
        pairs.append((label, ours, theirs))
    for name in args.models:
        built = {}
        for enabled in (True, False):
            with keras_routes(enabled):  # traced (and compiled) inside the scope
                model = create_model(name)
                model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy")
                shape = (32, *model.input_shape[1:])
                built[enabled] = tasks(model, shape)
                for fn in built[enabled].values():
                    fn()
        # Under torch (eager) the routes are chosen at every call, not at tracing, so
        # each timed call runs inside its own scope too.
        pairs.append((f"model `{name}`", *({task: scoped(fn, enabled) for task, fn in built[enabled].items()} for enabled in (True, False))))
    for label, ours, theirs in pairs:
        row = {"backend": keras.backend.backend(), "case": label}
        for task in ("infer", "train"):
            times = alternate({"ours": ours[task], "keras": theirs[task]}, args.repeats)
            row[task] = dict(ours=sorted(times["ours"])[len(times["ours"]) // 2], ratio=median_ratio(times["ours"], times["keras"]))
        emit(row)


def format_table(rows):
    lines = [
        "| backend | case | infer, ours | ÷ Keras's | train step, ours | ÷ Keras's |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['case']} | {r['infer']['ours'] * 1e3:.1f} ms | {r['infer']['ratio']:.2f}× "
            f"| {r['train']['ours'] * 1e3:.0f} ms | {r['train']['ratio']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        return worker(args)
    rows = run_backends(__file__, args.backends, argv, format_table)
    if rows and not args.no_record:
        append_section(
            args.results, "Convolution routes against Keras's layers", __file__, argv,
            f"Batch 32 unless the case says otherwise; medians of {args.repeats} alternating runs; ÷ = median of per-run ratios "
            "(ours ÷ Keras's computation, below 1 = our route is faster). TensorFlow runs without XLA "
            "(Keras's default on a CPU-only machine), JAX with XLA, torch eagerly.",
            [format_table(rows)],
        )


if __name__ == "__main__":
    main()
