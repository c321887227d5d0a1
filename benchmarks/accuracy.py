"""Accuracy of every family's CIFAR-size configuration on CIFAR-10, for a given budget.

Trains on the CIFAR-10 training JPEGs of ../shared/data (extracted once to a cache
folder), holding out a seeded 10% of each class as the validation split that is
reported, and appends a table (accuracy, parameters, epochs, wall time, the command) to
benchmarks/RESULTS.md. `--per-class` trains on a subset for a CPU budget.

    python benchmarks/accuracy.py --epochs 3 --per-class 500 --backend jax
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import tarfile

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
MODELS = [
    "vit_cifar_patch4_32",
    "mixer_cifar_patch4_32",
    "convmixer_256_8",
    "hybrid_mixer_vit_cifar_patch4_32",
    "hybrid_convmixer_mixer_cifar_patch2_32",
]
# Reached by the original course notebooks on CIFAR-10 (their own test split).
SEED_RESULTS = {
    "seed_vit": 0.6935,
    "seed_mixer": 0.6892,
    "seed_mixer_mixer_vit": 0.6503,
    "seed_convmixer": 0.4936,
    "seed_convmixer_mixer": 0.5191,
}


def extract(archive, cache):
    """Extracts the archive once; returns the folder holding train/<class>/."""
    root = cache / "cifar10-train-jpeg"
    marker = root / ".complete"
    if not marker.exists():
        print(f"extracting {archive} -> {root}", flush=True)
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        marker.touch()
    found = [p.parent for p in root.rglob("train") if (p / "airplane").is_dir()] or [root]
    return found[0] if (found[0] / "train").is_dir() else found[0].parent


def subset(folder, per_class, cache):
    """A folder of symlinks to the first `per_class` images of each class."""
    if not per_class:
        return folder
    target = cache / f"cifar10-subset-{per_class}"
    for class_dir in sorted((folder / "train").iterdir()):
        out = target / "train" / class_dir.name
        out.mkdir(parents=True, exist_ok=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            link = out / image.name
            if not link.exists():
                link.symlink_to(image)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated registered names")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=0, help="images per class (0: all 5,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--backend", default=None, choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/keras_vitmix"))
    parser.add_argument("--output", default=str(REPO / "runs" / "accuracy"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from keras_vitmix import training

    cache = pathlib.Path(args.cache)
    folder = subset(extract(pathlib.Path(args.archive), cache), args.per_class, cache)
    rows = []
    for name in args.models.split(","):
        metrics = training.train(
            name, str(folder), epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.learning_rate, augment="light", output_dir=os.path.join(args.output, name),
            verbose=2,
        )
        rows.append(metrics)
    command = "python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = [
        "| model | family | parameters | epochs | train images | validation accuracy | s/epoch | wall |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    train_images = (args.per_class or 5000) * 10 * 9 // 10
    for m in rows:
        reference = SEED_RESULTS.get(m["model"])
        note = f" (seed notebook: {reference:.2%})" if reference else ""
        table.append(
            f"| {m['model']} | {m['family']} | {m['parameters']:,} | {m['epochs']} | {train_images:,} | "
            f"{m['test_accuracy']:.2%}{note} | {m['seconds_per_epoch']:.0f} | {m['wall_seconds'] / 60:.1f} min |"
        )
    section = "\n".join([
        f"\n## Accuracy on CIFAR-10 — {datetime.date.today()}, {keras.backend.backend()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n",
        f"`{command}`\n",
        "Validation = a seeded 10% of each class held out of the CIFAR-10 training JPEGs "
        "(../shared/data); the CIFAR-10 test split is not used.\n",
        *table,
        "",
    ])
    print(section)
    with open(args.results, "a") as handle:
        handle.write(section)
    print(json.dumps([{k: m[k] for k in ("model", "test_accuracy", "parameters")} for m in rows]))


if __name__ == "__main__":
    main()
