"""Serving speed: the exported SavedModel and ONNX model against the Keras model, and
the price of serving attention.

For each model, exports both formats (`keras_vitmix.export`), then times, in one process
and alternating run by run, the Keras model (`predict_on_batch` under the chosen
backend), the SavedModel (`tf.saved_model.load(...).serve`) and the ONNX model
(onnxruntime, CPU), on the same uint8 images: latency at batch 1, throughput at batch
32. A model with attention blocks is also exported with `attention=True` (its scores
and rollout served beside the probabilities, every output fetched) and timed in the
same rounds. It reports medians and the median of per-run ratios (export ÷ Keras: below
1 is faster than Keras; with attention ÷ without), prints two tables and writes them in
place of the serving section of benchmarks/RESULTS.md. The script owns its process and opts in to keras_vitmix's
allocator tuning (`keras_vitmix.config.tune_malloc()`), as the `keras-vitmix` command does.

    python benchmarks/serving.py --backend jax
    python benchmarks/serving.py --backend tensorflow --models vit_tiny_patch16_224 --repeats 30
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _timing import alternate, median_ratio, write_section  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
ATTENTION = "_attention"  # the runners of an export with attention=True
DEFAULT_MODELS = ["vit_tiny_patch16_224", "mixer_s16_224", "hybrid_mixer_vit_cifar_patch4_32", "hybrid_convmixer_mixer_cifar_patch2_32"]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default=None)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per runner and batch size")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def runners(model, folder):
    """name -> callable(uint8 images) returning the class probabilities, for the Keras
    model and its two exports, and for a model with attention blocks the two exports
    with `attention=True` ("saved_model_attention", "onnx_attention"), which fetch
    every output."""
    import numpy as np
    import onnxruntime
    import tensorflow as tf

    from keras_vitmix import export
    from keras_vitmix.layers import TransformerBlock

    run, kept = {"keras": lambda x: np.asarray(model.predict_on_batch(x.astype("float32")))}, []
    variants = [("", False)]
    if any(isinstance(layer, TransformerBlock) for layer in model.layers):
        variants.append((ATTENTION, True))
    for suffix, attention in variants:
        saved, onnx = folder / f"saved_model{suffix}", folder / f"model{suffix}.onnx"
        export.export(model, saved, attention=attention, verbose=False)
        export.export(model, onnx, format="onnx", attention=attention, verbose=False)
        loaded = tf.saved_model.load(str(saved))
        session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        kept.append(loaded)  # a loaded SavedModel serves only while referenced
        run["saved_model" + suffix] = lambda x, loaded=loaded: _probabilities(loaded.serve(tf.constant(x)))
        run["onnx" + suffix] = lambda x, session=session, names=names: _probabilities(
            dict(zip(names, session.run(None, {"images": x})))
        )
    return run, kept


def _probabilities(outputs):
    """The probabilities among every output, each read out as NumPy (as a server sends them)."""
    import numpy as np

    if not isinstance(outputs, dict):
        return np.asarray(outputs)
    values = {name: np.asarray(value) for name, value in outputs.items()}
    return values.get("probabilities", values.get("output_0"))


def measure(run, images, repeats):
    """Median seconds per call of each runner, and median per-run ratios: an export's to
    Keras, an export with attention's to the same export without."""
    import numpy as np

    outputs = {name: fn(images) for name, fn in run.items()}
    for name in run:
        diff = float(np.max(np.abs(outputs[name] - outputs["keras"])))
        assert diff < 1e-3, f"{name} disagrees with Keras by {diff}"
    times = alternate({name: (lambda fn=fn: fn(images)) for name, fn in run.items()}, repeats)
    ratios = {
        name: median_ratio(times[name], times[name.removesuffix(ATTENTION) if name.endswith(ATTENTION) else "keras"])
        for name in run if name != "keras"
    }
    return {name: statistics.median(t) for name, t in times.items()}, ratios


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from keras_vitmix import config
    from keras_vitmix.applications import create_model

    config.tune_malloc()  # before any model runs

    rows, attention_rows = [], []
    rng = np.random.default_rng(0)
    for name in args.models:
        model = create_model(name)
        with tempfile.TemporaryDirectory() as folder:
            run, _keep = runners(model, Path(folder))
            for batch in args.batch_sizes:
                images = rng.integers(0, 256, (batch, *model.input_shape[1:])).astype("uint8")
                seconds, ratios = measure(run, images, args.repeats)
                rows.append((name, batch, seconds, ratios))
                print(format_row(*rows[-1]), flush=True)
                if "onnx" + ATTENTION in ratios:
                    attention_rows.append((name, batch, seconds, ratios))
                    print(format_attention_row(*attention_rows[-1]), flush=True)
    table = format_table(rows)
    tables = [table] + ([format_attention_table(attention_rows)] if attention_rows else [])
    print("\n\n".join(tables))
    if not args.no_record:
        write_section(
            args.results, "Serving: exports against the Keras model", __file__, argv,
            f"Keras backend {keras.backend.backend()}. Medians of {args.repeats} alternating runs (per call: time "
            "and images/s); the ratios are medians of per-run ratios, below 1 = faster than Keras. The second "
            "table: each attention model exported with `attention=True` (every block's scores and the rollout "
            "served beside the probabilities, all fetched), timed in the same rounds; ratio = with attention "
            "÷ without, the price of serving attention.",
            tables,
        )


def format_row(name, batch, seconds, ratios):
    cells = [f"`{name}`", str(batch)]
    for runner in ("keras", "saved_model", "onnx"):
        cells.append(f"{seconds[runner] * 1e3:.1f} ms ({batch / seconds[runner]:,.0f}/s)")
    cells += [f"{ratios['saved_model']:.2f}×", f"{ratios['onnx']:.2f}×"]
    return "| " + " | ".join(cells) + " |"


def format_attention_row(name, batch, seconds, ratios):
    cells = [f"`{name}`", str(batch)]
    for runner in ("saved_model", "onnx"):
        with_attention = seconds[runner + ATTENTION]
        cells += [f"{seconds[runner] * 1e3:.1f} ms", f"{with_attention * 1e3:.1f} ms", f"{ratios[runner + ATTENTION]:.2f}×"]
    return "| " + " | ".join(cells) + " |"


def format_attention_table(rows):
    header = (
        "| model | batch | SavedModel | SavedModel + attention | ÷ without | ONNX | ONNX + attention | ÷ without |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    return "\n".join([header] + [format_attention_row(*row) for row in rows])


def format_table(rows):
    header = (
        "| model | batch | Keras | SavedModel | ONNX (onnxruntime) | SavedModel ÷ Keras | ONNX ÷ Keras |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    return "\n".join([header] + [format_row(*row) for row in rows])


if __name__ == "__main__":
    main()
