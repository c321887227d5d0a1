"""Python's share of a torch forward pass: keras_vitmix against timm at a width where the
kernels cost almost nothing.

Under the torch backend Keras runs every operation eagerly, from Python. On a GPU the
kernels of a small model (ViT-Ti at batch 256 takes 10 ms in timm on an H100) finish
before Python has issued the next ones, so the step time is Python's time, not the
GPU's: that is where the torch backend's ViT-Ti stood at 2.23x timm's time
(RESULTS.md, "GPU throughput", 2026-11-24). This script measures that time on any
machine: it builds ViT-Ti's and Mixer-S/16's graphs (12 and 8 blocks, the same
operations) at width 12 on 64-px images (16 tokens), where every kernel takes
microseconds, in keras_vitmix and in timm with the same parameter count, and times their
inference at batch 1 alternately, in balanced order, in one process, under "float32"
and "mixed_bfloat16" (timm under `torch.autocast` with bfloat16, what the GPU benchmark
compares with). It reports each side's median time and the median of per-round ratios
(ours / timm: the Python work ours does per forward pass, relative), prints a table and
appends it to benchmarks/RESULTS.md.

    python benchmarks/torch_overhead.py
    python benchmarks/torch_overhead.py --repeats 50 --policies mixed_bfloat16
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

from _timing import alternate, append_section, median_ratio  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
MODELS = ("vit_tiny_patch16_224", "mixer_s16_224")
WIDTH, IMAGE, PATCH = 12, 64, 16


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds of each side")
    parser.add_argument("--threads", type=int, default=1, help="torch's intra-op threads, both sides")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true")
    return parser.parse_args(argv)


def twins(name):
    """(ours, timm's) with `name`'s blocks at width 12 on 64-px images: the same graph
    and parameter count, in inference mode."""
    from keras_vitmix.applications import create_model
    from keras_vitmix.weights import import_timm

    timm = import_timm()  # where TensorFlow is loaded too
    timm_vit, timm_mixer = timm.models.vision_transformer, timm.models.mlp_mixer

    common = dict(input_shape=(IMAGE, IMAGE, 3), include_preprocessing=False, classes=10)
    if name == "vit_tiny_patch16_224":
        ours = create_model(name, hidden_dim=WIDTH, mlp_dim=4 * WIDTH, **common)
        theirs = timm_vit.VisionTransformer(
            img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, depth=12, num_heads=3, mlp_ratio=4, num_classes=10
        )
    else:
        ours = create_model(name, hidden_dim=WIDTH, token_mlp_dim=WIDTH // 2, channel_mlp_dim=4 * WIDTH, **common)
        theirs = timm_mixer.MlpMixer(
            img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, num_blocks=8, mlp_ratio=(0.5, 4.0), num_classes=10
        )
    return ours, theirs.eval()


def measure(name, policy, repeats):
    import keras
    import torch

    keras.config.set_dtype_policy(policy)
    try:
        ours, theirs = twins(name)
    finally:
        keras.config.set_dtype_policy("float32")
    images = torch.rand(1, IMAGE, IMAGE, 3) * 255
    channels_first = images.permute(0, 3, 1, 2).contiguous() / 255
    half = policy != "float32"

    def run_ours():
        with torch.no_grad():
            ours(images, training=False)

    def run_theirs():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            theirs(channels_first)

    times = alternate({"ours": run_ours, "timm": run_theirs}, repeats, warmup=3, balanced=True)
    return dict(
        model=name, policy=policy, params=ours.count_params(), timm_params=sum(p.numel() for p in theirs.parameters()),
        ours_ms=1e3 * statistics.median(times["ours"]), timm_ms=1e3 * statistics.median(times["timm"]),
        ratio=median_ratio(times["ours"], times["timm"]),
    )


def format_table(rows):
    lines = [
        "| model graph (width 12, 64 px) | policy | parameters (ours / timm) | ours, ms | timm, ms | ours ÷ timm |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['policy']} | {r['params']:,} / {r['timm_params']:,} | {r['ours_ms']:.2f} "
            f"| {r['timm_ms']:.2f} | **{r['ratio']:.2f}×** |"
        )
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    os.environ["KERAS_BACKEND"] = "torch"
    import keras
    import torch

    if keras.backend.backend() != "torch":
        raise SystemExit(f"torch_overhead.py measures the torch backend; Keras was imported with "
                         f"{keras.backend.backend()!r} before it ran")
    torch.set_num_threads(args.threads)
    rows = [measure(name, policy, args.repeats) for name in args.models for policy in args.policies]
    table = format_table(rows)
    print(table)
    if not args.no_record:
        append_section(
            args.results, "torch: Python's share of a forward pass, against timm", __file__, argv,
            f"Inference at batch 1, {args.repeats} balanced alternating rounds, {args.threads} torch thread(s); "
            "medians; ours ÷ timm = the median of per-round ratios.",
            [table],
        )
    return rows


if __name__ == "__main__":
    main()
