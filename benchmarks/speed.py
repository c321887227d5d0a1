"""Speed against timm and keras-hub: inference and a training step, per backend.

Each backend runs in its own process. There, for each model: our model (compiled with
`jit_compile="auto"`, Keras's default: XLA under JAX; under TensorFlow XLA only where a
GPU is present, `--jit-compile true` forces it), the same architecture in timm (PyTorch eager, as
many threads as cores) and, for ViT, keras-hub's `ViTBackbone` with an equal config plus
the same head, are timed alternately run by run on the same batch; the table reports our
median time and the median of per-run ratios (ours ÷ reference: below 1 is faster).
Also: parameters, FLOPs per image (`keras_vitmix.flops`, 2 × MACs), the peak resident
memory our model added to the process while it ran alone, and the FLOP/s reached.

timm comes with the `[weights]` extra and keras-hub with `[benchmarks]`; a reference whose
package is not installed is skipped, its columns left empty ("–"), and the run says so in
one line.

Each worker owns its process, so it opts in to keras_vitmix's allocator tuning
(`keras_vitmix.config.tune_malloc()`, as the `keras-vitmix` command does; process-wide,
so timm and keras-hub run with it too; `KERAS_VITMIX_MALLOC=system` refuses it). The
table replaces the speed section of benchmarks/RESULTS.md (`--no-record`: print only).

    python benchmarks/speed.py                                  # all backends, default models
    python benchmarks/speed.py --backends jax --models vit_tiny_patch16_224 --repeats 5
    python benchmarks/speed.py --backends torch --no-fast-routes dense_torch   # one route off
"""

import argparse
import importlib.util
import os
import resource
import statistics
import sys
from pathlib import Path

from _timing import alternate, emit, median_ratio, run_backends, write_section  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
# name: (timm name or None, overrides of ours and timm's depth for time)
MODELS = {
    "vit_tiny_patch16_224": ("vit_tiny_patch16_224", {}),
    "mixer_s16_224": ("mixer_s16_224", {}),
    "convmixer_768_32": ("convmixer_768_32", {"num_layers": 4}),
    "hybrid_mixer_vit_cifar_patch4_32": (None, {}),
    "hybrid_convmixer_mixer_cifar_patch2_32": (None, {}),
}
# The references: column name -> the package that provides it.
REFERENCES = {"timm": "timm", "keras-hub": "keras_hub"}
# timm's ConvMixer arguments for its registered names (ReLU, as both libraries' 768/32).
TIMM_CONVMIXER = {"convmixer_768_32": dict(dim=768, kernel_size=7, patch_size=7)}


def missing_references():
    """The references (of `REFERENCES`) whose package is not installed here."""
    return [name for name, module in REFERENCES.items() if importlib.util.find_spec(module) is None]


def missing_note(missing):
    """One line saying which columns stay empty, or None."""
    if not missing:
        return None
    packages = " and ".join(REFERENCES[name] for name in missing)
    columns = " and ".join(f"÷{name}" for name in missing)
    verb = "is" if len(missing) == 1 else "are"
    return (f"speed.py: {packages} {verb} not installed, so the {columns} columns are left empty (–); "
            "pip install -e '.[benchmarks]' adds them.")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--jit-compile", default="auto", choices=("auto", "true", "false"),
                        help="compile()'s jit_compile for ours and keras-hub (auto: XLA where the backend has it)")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--no-fast-routes", nargs="*", default=None, metavar="NAME",
                        help="keras_vitmix's fast routes off: all of them, or those named (config.FAST_ROUTES)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # the backend, in a child
    return parser.parse_args(argv)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare(ours, references, repeats):
    """Alternating runs: our median seconds and {reference: median(ours_i / ref_i)}."""
    times = alternate({"ours": ours, **references}, repeats)
    ratios = {name: median_ratio(times["ours"], times[name]) for name in references}
    return statistics.median(times["ours"]), ratios


def jit_compile(args):
    return {"auto": "auto", "true": True, "false": False}[args.jit_compile]


def ours_runners(name, overrides, batch, jit="auto"):
    import keras
    import numpy as np

    from keras_vitmix.applications import create_model

    model = create_model(name, **overrides)
    x = np.random.default_rng(0).uniform(0, 255, (batch, *model.input_shape[1:])).astype("float32")
    y = np.arange(batch) % model.output_shape[-1]
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy", jit_compile=jit)
    return model, {
        "infer1": lambda: model.predict_on_batch(x[:1]),
        "infer": lambda: model.predict_on_batch(x),
        "train": lambda: model.train_on_batch(x, y),
    }


def timm_runners(timm_name, overrides, batch, size):
    import torch

    from keras_vitmix.weights import import_timm  # timm beside TensorFlow needs care

    timm = import_timm()

    torch.set_num_threads(os.cpu_count())
    if timm_name in TIMM_CONVMIXER and "num_layers" in overrides:
        # timm's convmixer_* constructors fix `depth`: its ConvMixer class at the reduced depth.
        from timm.models.convmixer import ConvMixer

        net = ConvMixer(depth=overrides["num_layers"], act_layer=torch.nn.ReLU, **TIMM_CONVMIXER[timm_name])
    else:
        kwargs = {"depth": overrides["num_layers"]} if "num_layers" in overrides else {}
        net = timm.create_model(timm_name, pretrained=False, **kwargs)
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 1000
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def infer(images):
        net.eval()
        with torch.inference_mode():
            net(images)

    def train():
        net.train()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()

    return {"infer1": lambda: infer(x[:1]), "infer": lambda: infer(x), "train": train}


def keras_hub_runners(model, batch, jit="auto"):
    """keras-hub's ViTBackbone with our model's config, class token and the same head."""
    import keras
    import keras_hub
    import numpy as np

    config = model.get_config()
    backbone = keras_hub.models.ViTBackbone(
        image_shape=model.input_shape[1:], patch_size=config["patch_size"], num_layers=config["num_layers"],
        num_heads=config["num_heads"], hidden_dim=config["hidden_dim"], mlp_dim=config["mlp_dim"] or 4 * config["hidden_dim"],
    )
    inputs = keras.Input(model.input_shape[1:])
    outputs = keras.layers.Dense(config["classes"], activation="softmax")(backbone(inputs)[:, 0])
    hub = keras.Model(inputs, outputs)
    hub.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy", jit_compile=jit)
    x = np.random.default_rng(0).uniform(0, 1, (batch, *model.input_shape[1:])).astype("float32")
    y = np.arange(batch) % config["classes"]
    return {
        "infer1": lambda: hub.predict_on_batch(x[:1]),
        "infer": lambda: hub.predict_on_batch(x),
        "train": lambda: hub.train_on_batch(x, y),
    }


def worker(args):
    import keras

    from keras_vitmix import config
    from keras_vitmix.flops import count_flops

    if args.no_fast_routes is not None:  # the flag alone: every route
        config.set_fast_routes(False, routes=args.no_fast_routes or None)

    rows, missing = [], missing_references()
    for name in args.models:
        timm_name, overrides = MODELS[name]
        before = peak_rss_mb()
        model, ours = ours_runners(name, overrides, args.batch_size, jit_compile(args))
        for fn in ours.values():  # alone first, for our memory
            fn()
        memory = peak_rss_mb() - before
        references = {}
        if timm_name and "timm" not in missing:
            references["timm"] = timm_runners(timm_name, overrides, args.batch_size, model.input_shape[1])
        if name.startswith("vit_") and "keras-hub" not in missing:
            references["keras-hub"] = keras_hub_runners(model, args.batch_size, jit_compile(args))
        row = dict(backend=keras.backend.backend(), model=name, depth=overrides.get("num_layers"),
                   params=model.count_params(), flops=count_flops(model)["flops"], peak_mb=memory,
                   malloc_tuned=config.malloc_tuned())
        for task in ("infer1", "infer", "train"):
            seconds, ratios = compare(ours[task], {k: v[task] for k, v in references.items()}, args.repeats)
            row[task] = dict(seconds=seconds, ratios=ratios)
        rows.append(row)
        emit(row)


def ratio(row, task, reference):
    value = row[task]["ratios"].get(reference)
    return f"{value:.2f}×" if value is not None else "–"


def format_table(rows, batch):
    lines = [
        f"| backend | model | params | GFLOPs/img | infer b1 | ÷timm | infer b{batch} | ÷timm | ÷keras-hub "
        f"| train b{batch} | ÷timm | ÷keras-hub | GFLOP/s (infer) | peak MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = r["model"] + (f" (depth {r['depth']})" if r["depth"] else "")
        throughput = batch / r["infer"]["seconds"]
        lines.append(
            f"| {r['backend']} | `{name}` | {r['params']:,} | {r['flops'] / 1e9:.2f} "
            f"| {r['infer1']['seconds'] * 1e3:.1f} ms | {ratio(r, 'infer1', 'timm')} "
            f"| {throughput:.1f} img/s | {ratio(r, 'infer', 'timm')} | {ratio(r, 'infer', 'keras-hub')} "
            f"| {r['train']['seconds'] * 1e3:.0f} ms | {ratio(r, 'train', 'timm')} | {ratio(r, 'train', 'keras-hub')} "
            f"| {throughput * r['flops'] / 1e9:.1f} | {r['peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        from keras_vitmix import config

        config.tune_malloc()  # before any model runs
        if args.worker == "jax":
            config.tune_xla_cpu()  # as the keras-vitmix command does; before JAX computes
        return worker(args)
    note = missing_note(missing_references())  # the workers skip the same references
    if note:
        print(note, file=sys.stderr)
    rows = run_backends(__file__, args.backends, argv, lambda rows: format_table(rows, args.batch_size))
    if rows and not args.no_record:
        tuned = all(row.get("malloc_tuned") for row in rows)
        write_section(
            args.results, "Speed against timm and keras-hub", __file__, argv,
            f"Medians of {args.repeats} alternating runs; ÷ columns are medians of per-run ratios (ours ÷ "
            "reference, below 1 = we are faster). timm runs PyTorch eager in the same process; keras-hub "
            "runs under the same backend. malloc: "
            + ("tuned in each worker (`keras_vitmix.config.tune_malloc()`; process-wide, so the references run "
               "with it too)." if tuned else "glibc's defaults (not tuned in every worker).")
            + (f" {note.partition(': ')[2]}" if note else ""),
            [format_table(rows, args.batch_size)],
        )


if __name__ == "__main__":
    main()
