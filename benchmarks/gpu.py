"""Throughput on a GPU: images/s, the fraction of the GPU's peak FLOP/s, timm beside us,
and fused (flash) attention on and off.

Each backend runs in its own process (`--backends`; TensorFlow only where it is
installed with GPU support). There, under the "mixed_bfloat16" policy at batch 256
(`--batch-size`) with XLA where the backend has it (`jit_compile="auto"`), each model's
inference (`predict_on_batch`) and training step (`train_on_batch`, AdamW,
cross-entropy) run on a batch already on the device, alternating run by run with the
same architecture in timm (PyTorch eager under `torch.autocast(bfloat16)`, AdamW, same
batch); the table gives our images/s, the median of per-run time ratios (ours ÷ timm:
below 1 is faster), the FLOP/s reached (`keras_vitmix.flops`: 2 × MACs per image
forward, 3 × that for a training step) as a fraction of the GPU's dense bf16 peak, and
the process's peak GPU memory. The tables replace the GPU section of
benchmarks/RESULTS.md.

For the attention models, a second table times `flash_attention=True` against
`flash_attention=False` on the same weights: whether the fused kernel ran (under JAX:
a cuDNN fused-attention call in the compiled program; under torch: PyTorch's flash
SDPA, which raises where it cannot run), the time ratio, and how far the two outputs
are apart.

    python benchmarks/gpu.py                       # jax and torch, default models
    python benchmarks/gpu.py --backends jax --models vit_base_patch16_224 --repeats 20

A worker's output can be kept and rendered later (a machine lent for a limited time):

    KERAS_BACKEND=jax python benchmarks/gpu.py --worker jax > jax.rows
    python benchmarks/gpu.py --rows jax.rows torch.rows
"""

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

from _timing import alternate, emit, median_ratio, run_backends, this_machine, write_section  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
# Our registered name: (timm's or None where timm has none, overrides of both sides' depth).
# ConvMixer-768/32 trains at batch 256 only at reduced depth in 80 GB (both sides alike).
MODELS = {
    "vit_tiny_patch16_224": ("vit_tiny_patch16_224", {}),
    "vit_base_patch16_224": ("vit_base_patch16_224", {}),
    "mixer_s16_224": ("mixer_s16_224", {}),
    "mixer_b16_224": ("mixer_b16_224", {}),
    "convmixer_768_32": ("convmixer_768_32", {"num_layers": 8}),
    "hybrid_mixer_vit_cifar_patch4_32": (None, {}),
    "hybrid_convmixer_mixer_cifar_patch2_32": (None, {}),
}
ATTENTION = ("vit_", "hybrid_mixer_vit")
# Dense bfloat16 tensor-core peaks (TFLOP/s) from NVIDIA's data sheets, by device name;
# the first key found in the name counts, so longer names come before their prefixes.
PEAKS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4, "H20": 148.0, "A100": 312.0,
         "L40S": 362.0, "L4": 121.0}


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each side")
    parser.add_argument("--precision", default="mixed_bfloat16", choices=("mixed_bfloat16", "float32"))
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense peak for --precision (default: looked up by name, bf16)")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="render (and record) the tables from saved worker outputs instead of running")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def device_and_peak(args):
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (PyTorch sees none); use speed.py on a CPU.")
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops
    if peak is None and args.precision == "mixed_bfloat16":
        peak = bf16_peak(name)
    return name, peak


def bf16_peak(device_name):
    """The dense bf16 peak (TFLOP/s) of a device by name, or None when unknown."""
    return next((value for key, value in PEAKS.items() if key in device_name), None)


def synced(fn):
    """`fn` and then a wait for the device (our runners return NumPy, which waits)."""
    import torch

    def run():
        fn()
        torch.cuda.synchronize()

    return run


def ours_runners(name, batch, **overrides):
    import keras
    import numpy as np

    from keras_vitmix.applications import create_model

    model = create_model(name, **overrides)
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.uniform(0, 255, (batch, *model.input_shape[1:])).astype("float32"))
    y = keras.ops.convert_to_tensor((np.arange(batch) % model.output_shape[-1]).astype("int32"))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy", jit_compile="auto")
    return model, x, {
        "infer": lambda: model.predict_on_batch(x),
        "train": lambda: model.train_on_batch(x, y),
    }


def timm_runners(timm_name, overrides, batch, size):
    import torch

    from keras_vitmix.weights import import_timm
    from speed import TIMM_CONVMIXER

    timm = import_timm()
    if timm_name in TIMM_CONVMIXER and "num_layers" in overrides:
        from timm.models.convmixer import ConvMixer

        net = ConvMixer(depth=overrides["num_layers"], act_layer=torch.nn.ReLU, **TIMM_CONVMIXER[timm_name])
    else:
        kwargs = {"depth": overrides["num_layers"]} if "num_layers" in overrides else {}
        net = timm.create_model(timm_name, pretrained=False, **kwargs)
    net = net.cuda()
    x = torch.randn(batch, 3, size, size, device="cuda")
    y = torch.arange(batch, device="cuda") % 1000
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def infer():
        net.eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            net(x)

    def train():
        net.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()

    return {"infer": synced(infer), "train": synced(train)}


def peak_gpu_mb():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0) / 2**20
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def fused_attention_in_program(model, x):
    """Whether XLA's compiled inference program calls cuDNN's fused attention (JAX)."""
    import jax

    def forward(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    values = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
    text = jax.jit(forward).lower(*values, x).compile().as_text()
    return "cudnn$fmha" in text or "__cudnn$fmha" in text


def flash_row(name, batch, repeats, reference_model):
    """flash_attention=True against False, same weights: time ratio and output gap."""
    import keras
    import numpy as np

    row = dict(backend=keras.backend.backend(), model=name)
    try:
        flash, x, flash_fns = ours_runners(name, batch, flash_attention=True)
        plain, _, plain_fns = ours_runners(name, batch, flash_attention=False)
        plain.set_weights(reference_model.get_weights())
        flash.set_weights(reference_model.get_weights())
        gap = np.abs(np.asarray(flash.predict_on_batch(x), np.float32) - np.asarray(plain.predict_on_batch(x), np.float32))
        row["max_gap"] = float(gap.max())
        row["same_top1"] = float(np.mean(np.argmax(flash.predict_on_batch(x), -1) == np.argmax(plain.predict_on_batch(x), -1)))
        if keras.backend.backend() == "jax":
            row["kernel"] = "cuDNN fused attention" if fused_attention_in_program(flash, x) else "none found (XLA)"
        else:
            row["kernel"] = "PyTorch flash SDPA"
        for task in ("infer", "train"):
            times = alternate({"flash": flash_fns[task], "plain": plain_fns[task]}, repeats)
            row[task] = median_ratio(times["flash"], times["plain"])
    except Exception as error:  # a backend or GPU without the kernel: say so in the table
        lines = [line.strip() for line in _plain(error).splitlines() if line.strip()] or [""]
        reason = next((line for line in lines if "flash" in line.lower()), lines[0])
        row["error"] = f"{type(error).__name__}: {reason[:120]} … {reason.rsplit('; ', 1)[-1][:200]}"
    return row


def _plain(error):
    """An exception's text without the terminal colour codes Keras adds."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(error))


def measure(name, args, device, peak):
    """Our model and timm's, alternating; then flash on and off for attention models."""
    import keras
    import torch

    from keras_vitmix.flops import count_flops

    timm_name, overrides = MODELS[name]
    keras.config.set_dtype_policy(args.precision)  # per model: `release` clears the session, policy too
    torch.cuda.reset_peak_memory_stats()
    model, _, ours = ours_runners(name, args.batch_size, **overrides)
    for fn in ours.values():
        fn()
    row = dict(kind="speed", backend=keras.backend.backend(), device=device, peak=peak, model=name,
               policy=model.dtype_policy.name, depth=overrides.get("num_layers"), params=model.count_params(), flops=count_flops(model)["flops"],
               peak_mb=peak_gpu_mb(), batch=args.batch_size, repeats=args.repeats, host=this_machine())
    timm_fns = timm_runners(timm_name, overrides, args.batch_size, model.input_shape[1]) if timm_name else {}
    for task in ("infer", "train"):
        times = alternate({"ours": ours[task], **({"timm": timm_fns[task]} if timm_fns else {})}, args.repeats)
        row[task] = statistics.median(times["ours"])
        row[f"{task}_timm"] = median_ratio(times["ours"], times["timm"]) if timm_fns else None
    emit(row)
    if name.startswith(ATTENTION):
        emit(dict(kind="flash", **flash_row(name, args.batch_size, args.repeats, model)))


def release():
    """Frees the last model's device memory before the next (one process runs them all).
    `clear_session` also resets the global dtype policy: `measure` sets it again."""
    import gc

    import keras
    import torch

    keras.backend.clear_session()
    gc.collect()
    torch.cuda.empty_cache()
    if keras.backend.backend() == "jax":
        import jax

        jax.clear_caches()


def recorded(rows, key, default):
    """The setting the speed rows were measured with (rows from before rows carried
    settings: `default`); several values are all named, "a / b"."""
    values = list(dict.fromkeys(r.get(key, default) for r in rows if r["kind"] == "speed")) or [default]
    return values[0] if len(values) == 1 else " / ".join(str(v) for v in values)


def worker(args):
    import keras

    device, peak = device_and_peak(args)
    for name in args.models:
        try:
            measure(name, args, device, peak)
        except Exception as error:  # e.g. out of memory: the row says so, the next model runs
            lines = [line.strip() for line in _plain(error).splitlines() if line.strip()] or [""]
            emit(dict(kind="failed", backend=keras.backend.backend(), model=name,
                      error=f"{type(error).__name__}: {lines[0][:300]}"))
        release()


def format_tables(rows, batch):
    speed = [r for r in rows if r["kind"] == "speed"]
    flash = [r for r in rows if r["kind"] == "flash"]
    failed = [r for r in rows if r["kind"] == "failed"]
    lines = [
        f"| backend | model | our policy | params | GFLOPs/img | infer img/s | ÷timm | infer % of peak | train img/s "
        "| ÷timm | train % of peak | peak GPU MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(value):
        return f"{value:.2f}×" if value is not None else "–"

    for r in speed:
        images = r.get("batch", batch)  # the batch the worker ran at, where its row says
        infer_rate, train_rate = images / r["infer"], images / r["train"]
        depth = f" (depth {r['depth']})" if r.get("depth") else ""
        def share(rate, factor):
            return f"{100 * rate * factor * r['flops'] / (r['peak'] * 1e12):.1f}%" if r["peak"] else "–"
        lines.append(
            f"| {r['backend']} | `{r['model']}`{depth} | {r.get('policy', '?')} | {r['params']:,} | {r['flops'] / 1e9:.2f} | {infer_rate:,.0f} "
            f"| {ratio(r['infer_timm'])} | {share(infer_rate, 1)} | {train_rate:,.0f} | {ratio(r['train_timm'])} "
            f"| {share(train_rate, 3)} | {r['peak_mb']:,.0f} |"
        )
    lines += [f"| {r['backend']} | `{r['model']}` | failed: {r['error']} |" + " – |" * 9 for r in failed]
    tables = ["\n".join(lines)]
    if flash:
        lines = [
            "| backend | model | fused kernel | infer time flash ÷ plain | train step flash ÷ plain "
            "| max output gap | same top-1 |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in flash:
            if "error" in r:
                lines.append(f"| {r['backend']} | `{r['model']}` | {r['error']} | – | – | – | – |")
            else:
                lines.append(
                    f"| {r['backend']} | `{r['model']}` | {r['kernel']} | {r['infer']:.2f}× | {r['train']:.2f}× "
                    f"| {r['max_gap']:.2e} | {r['same_top1']:.0%} |"
                )
        tables.append("\n".join(lines))
    return tables


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and PyTorch share the GPU
        from keras_vitmix import config

        config.tune_malloc()  # the worker owns its process; before any model runs
        return worker(args)
    if args.rows:
        rows = [json.loads(line[3:]) for path in args.rows for line in open(path) if line.startswith("ROW")]
        print("\n\n".join(format_tables(rows, args.batch_size)))
    else:
        rows = run_backends(
            __file__, args.backends, argv, lambda rows: "\n\n".join(format_tables(rows, args.batch_size))
        )
    if rows and not args.no_record:
        speed = [r for r in rows if r["kind"] == "speed"]
        device = speed[0]["device"] if speed else "?"
        peak = speed[0]["peak"] if speed else None
        # Rendered from saved rows, the settings are the workers', not this command's defaults.
        batch, repeats = recorded(rows, "batch", args.batch_size), recorded(rows, "repeats", args.repeats)
        write_section(
            args.results, "GPU throughput", __file__, argv,
            f"{args.precision}, batch {batch}, XLA under JAX; medians of {repeats} alternating runs; "
            f"÷timm = median of per-run time ratios (ours ÷ timm eager with bf16 autocast; below 1 = we are "
            f"faster). % of peak = FLOP/s reached ÷ {peak or '?'} TFLOP/s (dense bf16); a training step counts "
            "3 × the forward FLOPs.",
            format_tables(rows, args.batch_size),
            machine=f"{recorded(rows, 'host', None) or this_machine()}, {device}",
        )


if __name__ == "__main__":
    main()
