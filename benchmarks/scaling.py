"""Cost as the work grows: throughput and peak memory against the number of patches.

ViT, MLP-Mixer, ConvMixer and the two hybrids are built at one width (`--hidden-dim`) and
one depth (`--depth`; the hybrids split it between their two kinds of block), at every
point of a sweep of the number of patches N: images growing at a fixed patch
(`--image-sizes 32 64 128 256 --patch-sizes 8`: 16 to 1,024 patches) or patches
shrinking in a fixed image (`--image-sizes 128 --patch-sizes 16 8 4`). At each point the
models are timed alternately, run by run, on one batch (inference with
`predict_on_batch`, a training step with `train_on_batch` and SGD), so each time also
reads as a ratio to the reference model (`--reference`, the Mixer: linear in N by
construction); the ratios are robust to the load of a shared machine, the times are not.
A yardstick (a fixed NumPy matrix product) runs in every round too: the exponents and
the figure use each time divided by the yardstick's in its round, times the yardstick's
median over the sweep, so a machine busier at one point than at another bends no curve.

Peak memory is `keras_vitmix.cost.peak_memory`: the resident memory one call adds at its
peak, after a call that compiled it (activations, workspaces, gradients; not the weights).
Exponents k of time ~ N^k are least-squares slopes in log-log over the `--fit-last`
largest points (`cost.power_law_exponent`), beside the exponent of the FLOPs
(`keras_vitmix.flops`). Self-attention is quadratic in N and everything else in these
blocks linear, so ViT's FLOPs only approach N^2 past N = 6 x hidden_dim, where the
attention products (2 N^2 D per block) outgrow the projections and the MLP (12 N D^2).

Each backend runs in its own process (KERAS_BACKEND is read at import), which opts in to
keras_vitmix's allocator tuning (`keras_vitmix.config.tune_malloc()`). The tables are
printed and replace the scaling section of benchmarks/RESULTS.md; the figure (log-log, a
column per backend) goes to `--output`.

    python benchmarks/scaling.py                                      # all backends
    python benchmarks/scaling.py --backends jax --models vit mixer --image-sizes 32 64 128
"""

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

from _timing import alternate, emit, median_ratio, run_backends, write_section  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's keras_vitmix, before an installed one
LABELS = {"vit": "ViT", "mixer": "Mixer", "convmixer": "ConvMixer", "mixer_vit": "Mixer→ViT",
          "convmixer_mixer": "ConvMixer→Mixer"}
CLASSES = 10


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"],
                        choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--models", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--reference", default="mixer", choices=list(LABELS), help="the model the ratios divide by")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--hidden-dim", type=int, default=192)
    parser.add_argument("--depth", type=int, default=4, help="blocks per model (hybrids: half of each kind)")
    parser.add_argument("--kernel-size", type=int, default=7, help="ConvMixer's depthwise kernel")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed alternating rounds per point")
    parser.add_argument("--fit-last", type=int, default=3, help="points the exponents are fitted on")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "scaling.png"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true", help="print the tables only")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # the backend, in a child
    args = parser.parse_args(argv)
    args.points = sweep(args.image_sizes, args.patch_sizes)
    if args.reference not in args.models:
        raise ValueError(f"The reference must be one of the models. Received: reference={args.reference!r}, "
                         f"models={args.models}")
    if args.depth < 2 or args.hidden_dim < 1 or args.batch_size < 1 or args.repeats < 1 or args.fit_last < 2:
        raise ValueError(f"Need depth >= 2, hidden_dim, batch_size, repeats >= 1 and fit_last >= 2. Received: "
                         f"depth={args.depth}, hidden_dim={args.hidden_dim}, batch_size={args.batch_size}, "
                         f"repeats={args.repeats}, fit_last={args.fit_last}")
    return args


def sweep(image_sizes, patch_sizes):
    """The (image, patch) points, by increasing patch count; one of the two lists may vary."""
    if len(image_sizes) > 1 and len(patch_sizes) > 1:
        raise ValueError("Sweep the image size or the patch size, not both. Received: "
                         f"image_sizes={image_sizes}, patch_sizes={patch_sizes}")
    points = [(image, patch) for image in image_sizes for patch in patch_sizes]
    for image, patch in points:
        if patch < 1 or image % patch:
            raise ValueError(f"The patch size must divide the image size. Received: patch_size={patch}, "
                             f"image size=({image}, {image})")
    tokens = [(image // patch) ** 2 for image, patch in points]
    if len(set(tokens)) < 2:
        raise ValueError(f"The sweep needs two or more patch counts. Received: image_sizes={image_sizes}, "
                         f"patch_sizes={patch_sizes}")
    return sorted(points, key=lambda point: (point[0] // point[1]) ** 2)


def build(key, image, patch, args):
    """One model of the comparison: the shared width, depth and head, at this point."""
    from keras_vitmix import applications as apps

    heads, half = max(1, args.hidden_dim // 64), args.depth // 2
    family, config = {
        "vit": (apps.ViT, dict(num_layers=args.depth, num_heads=heads)),
        "mixer": (apps.MLPMixer, dict(num_layers=args.depth)),
        "convmixer": (apps.ConvMixer, dict(num_layers=args.depth, kernel_size=args.kernel_size)),
        "mixer_vit": (apps.HybridMixerViT, dict(mixer_depth=half, attention_depth=args.depth - half, num_heads=heads)),
        "convmixer_mixer": (apps.HybridConvMixerMixer, dict(conv_depth=half, mixer_depth=args.depth - half,
                                                            kernel_size=args.kernel_size)),
    }[key]
    return family(patch_size=patch, hidden_dim=args.hidden_dim, input_shape=(image, image, 3), classes=CLASSES,
                  name=key, **config)


def yardstick():
    """A fixed workload (a 768 x 768 float32 matrix product): the machine's speed now."""
    import numpy as np

    matrix = np.random.default_rng(0).standard_normal((768, 768)).astype("float32")
    return lambda: matrix @ matrix


def measure_point(image, patch, args):
    """One row per model at this point: FLOPs, memory, alternating times and ratios."""
    import keras
    import numpy as np

    from keras_vitmix.cost import peak_memory
    from keras_vitmix.flops import count_flops

    x = np.random.default_rng(0).uniform(0, 255, (args.batch_size, image, image, 3)).astype("float32")
    y = np.arange(args.batch_size) % CLASSES
    rows, runners = {}, {}
    for key in args.models:
        model = build(key, image, patch, args)
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy")
        runners[key] = {"infer": lambda m=model: m.predict_on_batch(x), "train": lambda m=model: m.train_on_batch(x, y)}
        memory = {}
        for task, fn in runners[key].items():
            fn()  # compiles
            memory[task] = (peak_memory(fn) or 0) / 2**20
        rows[key] = dict(backend=keras.backend.backend(), model=key, image=image, patch=patch,
                         tokens=(image // patch) ** 2, params=model.count_params(),
                         flops=count_flops(model)["flops"], infer_mb=memory["infer"], train_mb=memory["train"])
    for task in ("infer", "train"):
        times = alternate({"yardstick": yardstick(), **{key: fns[task] for key, fns in runners.items()}},
                          args.repeats, warmup=0)
        for key, row in rows.items():
            row[task + "_s"] = statistics.median(times[key])
            row[task + "_ratio"] = median_ratio(times[key], times[args.reference])
            row[task + "_yardsticks"] = median_ratio(times[key], times["yardstick"])
            row["yardstick_s"] = statistics.median(times["yardstick"])
    return list(rows.values())


def worker(args):
    for image, patch in args.points:
        for row in measure_point(image, patch, args):
            emit(row)


def exponent(tokens, values, last):
    """cost.power_law_exponent, or nan where a value is not positive (memory below resolution)."""
    from keras_vitmix.cost import power_law_exponent

    return power_law_exponent(tokens, values, last) if min(values) > 0 else math.nan


def curves(rows):
    """{(backend, model): its rows by increasing patch count}, in the order measured."""
    grouped = {}
    for row in rows:
        grouped.setdefault((row["backend"], row["model"]), []).append(row)
    return {key: sorted(curve, key=lambda row: row["tokens"]) for key, curve in grouped.items()}


def steady_seconds(curve, task):
    """Times in yardsticks (per-round ratios) times the yardstick's median over the curve:
    seconds at the machine's typical speed during the sweep."""
    return [row[task + "_yardsticks"] * statistics.median(r["yardstick_s"] for r in curve) for row in curve]


def summarize(rows, args):
    """Per backend and model: exponents of FLOPs, time and memory, and FLOP/s at the largest N."""
    summary = []
    for (backend, key), curve in curves(rows).items():
        tokens = [row["tokens"] for row in curve]
        if len(set(tokens)) < 2:
            continue
        infer, train = steady_seconds(curve, "infer"), steady_seconds(curve, "train")
        fit = {name: exponent(tokens, values, args.fit_last) for name, values in (
            ("flops", [row["flops"] for row in curve]), ("infer_s", infer), ("train_s", train),
            ("train_mb", [row["train_mb"] for row in curve]))}
        local = [exponent(tokens[i:i + 2], infer[i:i + 2], 2) for i in range(len(curve) - 1)]
        largest = curve[-1]
        reference = next((row for row in rows if row["backend"] == backend and row["model"] == args.reference
                          and row["tokens"] == largest["tokens"]), dict(flops=math.nan))
        summary.append(dict(
            backend=backend, model=key, fit=fit, local=local, tokens=largest["tokens"],
            gflop_s=args.batch_size * largest["flops"] / largest["infer_s"] / 1e9,
            # FLOP/s relative to the reference, from the per-run time ratio: (F / F_ref) / (t / t_ref)
            gflop_s_ratio=largest["flops"] / reference["flops"] / largest["infer_ratio"],
        ))
    return summary


def format_rows(rows, args):
    ref = LABELS[args.reference]
    lines = [f"| backend | model | image / patch | N | params | GFLOPs/img | infer img/s | infer ÷ {ref} "
             f"| train img/s | train ÷ {ref} | GFLOP/s infer | infer MB | train MB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        throughput = args.batch_size / r["infer_s"]
        lines.append(
            f"| {r['backend']} | {LABELS[r['model']]} | {r['image']} / {r['patch']} | {r['tokens']} | {r['params']:,} "
            f"| {r['flops'] / 1e9:.3f} | {throughput:.1f} | {r['infer_ratio']:.2f}× "
            f"| {args.batch_size / r['train_s']:.1f} | {r['train_ratio']:.2f}× | {throughput * r['flops'] / 1e9:.1f} "
            f"| {r['infer_mb']:.0f} | {r['train_mb']:.0f} |")
    return "\n".join(lines)


def format_summary(summary, args):
    ref = LABELS[args.reference]
    lines = ["| backend | model | k FLOPs | k infer | k train | k train MB | infer slope, point to point "
             f"| GFLOP/s at largest N | ÷ {ref} |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for s in summary:
        fit = s["fit"]
        local = " → ".join(f"{k:.2f}" for k in s["local"])
        lines.append(f"| {s['backend']} | {LABELS[s['model']]} | {fit['flops']:.2f} | {fit['infer_s']:.2f} "
                     f"| {fit['train_s']:.2f} | {fit['train_mb']:.2f} | {local} | {s['gflop_s']:.1f} "
                     f"| {s['gflop_s_ratio']:.2f}× |")
    return "\n".join(lines)


def figure(rows, args):
    """A column per backend: inference and training time per image, training memory; log-log."""
    from keras_vitmix.cost import Measurement, cost_curves
    from keras_vitmix.plotting import pyplot

    panels = [(lambda curve: steady_seconds(curve, "infer"), 1e3 / args.batch_size, "inference (ms per image)"),
              (lambda curve: steady_seconds(curve, "train"), 1e3 / args.batch_size, "training step (ms per image)"),
              (lambda curve: [row["train_mb"] for row in curve], 1.0, "peak memory, training step (MB)")]
    backends = list(dict.fromkeys(row["backend"] for row in rows))
    fig, axes = pyplot().subplots(len(panels), len(backends), figsize=(4.5 * len(backends), 3.3 * len(panels)),
                                   squeeze=False, constrained_layout=True)
    for column, backend in enumerate(backends):
        for (values, scale, ylabel), ax in zip(panels, axes[:, column]):
            drawn = []
            for (curve_backend, key), curve in curves(rows).items():
                kept = [(row, value) for row, value in zip(curve, values(curve)) if value > 0]  # not below resolution
                if curve_backend == backend and len({row["tokens"] for row, _ in kept}) >= 2:
                    drawn.append(Measurement(LABELS[key], [row["tokens"] for row, _ in kept],
                                             [value for _, value in kept], [row["params"] for row, _ in kept]))
            if drawn:
                cost_curves(drawn, last=args.fit_last, ax=ax, scale=scale, ylabel=ylabel)
            ax.set_title(backend, fontsize=10)
    fig.savefig(args.output, dpi=72)
    return fig


def record(args, argv, tables):
    write_section(
        args.results, "Scaling with the number of patches", __file__, argv,
        f"Width {args.hidden_dim}, depth {args.depth} "
        f"(hybrids {args.depth // 2} + {args.depth - args.depth // 2}), batch {args.batch_size}, medians of "
        f"{args.repeats} alternating rounds; ÷ columns are medians of per-round time ratios to "
        f"{LABELS[args.reference]} at the same point. k (exponents of N, fitted on the {args.fit_last} largest "
        "points) and the figure use times relative to a fixed yardstick run in the same rounds, which "
        "takes out the machine's load changing between points. Memory: resident memory one call adds at its peak "
        f"(`cost.peak_memory`). Figure: `{os.path.relpath(args.output, REPO)}`.",
        tables,
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        from keras_vitmix import config

        config.tune_malloc()  # the worker owns its process; before any model runs
        return worker(args)
    rows = run_backends(__file__, args.backends, argv, lambda rows: format_rows(rows, args))
    if not rows:
        return
    summary = summarize(rows, args)
    tables = [format_rows(rows, args), format_summary(summary, args)]
    print(tables[1])
    figure(rows, args)
    print(f"Figure: {args.output}")
    if not args.no_record:
        record(args, argv, tables)


if __name__ == "__main__":
    main()
