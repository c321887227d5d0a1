"""Accuracy of every family's CIFAR-size configuration on CIFAR-10, for a given budget.

Trains each model with `keras_vitmix.training.train` on the CIFAR-10 training JPEGs of
../shared/data (extracted once to a cache folder), holding out a seeded 10% of each
class as the validation split that is reported (it also picks each run's checkpoint:
the script holds out no test split, so the table names it validation, not test; the
CIFAR-10 test split is not in ../shared/data), and writes a table (accuracy,
parameters, recipe, epochs, wall time, the command) in place of the accuracy section of
benchmarks/RESULTS.md (`--results` names another file). The script has no data pipeline
or augmentation of its own: every training argument left unset takes the `--recipe`'s
value for the model's family (keras_vitmix.recipes, docs/recipes.md), and the pipeline is
`train`'s. `--per-class` trains on a subset for a CPU budget. The script owns its
process and opts in to keras_vitmix's allocator tuning (`keras_vitmix.config.tune_malloc()`).

`--pipeline device` (the default) needs no TensorFlow: the JPEGs are decoded once with
Pillow (`keras_vitmix.datasets.load_arrays`, cached under `--cache`), held on the
accelerator, and each batch is sampled and augmented inside the compiled step. The
script splits the arrays itself, with seed 0, so `--seed` re-draws initialization,
batch order and augmentation but never the validation images. `--pipeline tf.data` (or
"auto") gives `train` the folder, whose hold-out is drawn with `--seed`: compare
seeds there only at `--seed 0` or knowing the validation images differ.

    python benchmarks/accuracy.py --epochs 3 --per-class 500 --backend jax
    python benchmarks/accuracy.py --backend jax --mixed-precision
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile

from _timing import this_machine, write_section  # benchmarks/ is the script's folder

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
# The flags that default to the recipe (None), by `train`'s argument names.
TRAINING_FLAGS = (
    "epochs", "batch_size", "learning_rate", "weight_decay", "warmup_epochs", "label_smoothing", "augment",
    "drop_path_rate", "ema_momentum",
)
# The resolved values the second table shows, from each run's metrics.json.
RECIPE_COLUMNS = {
    "batch_size": "batch", "learning_rate": "learning rate", "weight_decay": "weight decay",
    "warmup_epochs": "warmup epochs", "label_smoothing": "label smoothing", "augment": "augment",
    "drop_path_rate": "drop path", "ema_momentum": "EMA", "test_time_flip": "test-time flip", "clipnorm": "clip norm",
}
SPLIT_SEED = 0  # the device pipeline's validation hold-out, whatever --seed
VALIDATION_FRACTION = 0.1


def extract(archive, cache):
    """Extracts the archive once; returns the folder holding train/<class>/.

    The archive is unpacked into a folder of this process's own and renamed into place
    when complete, so that runs started together on one cache never read a file that
    another is still writing, and a killed extraction leaves nothing half-written."""
    root = cache / "cifar10-train-jpeg"
    marker = root / ".complete"
    if not marker.exists():
        print(f"extracting {archive} -> {root}", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f"{root.name}.partial-", dir=cache))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
            (staging / ".complete").touch()
            if root.exists() and not marker.exists():
                shutil.rmtree(root, ignore_errors=True)  # left by an extraction that was killed
            try:
                os.rename(staging, root)
            except OSError:
                if not marker.exists():  # not another run's complete copy: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
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


def input_size(name, image_size=None):
    """(height, width) that `name` is trained at: `image_size` if given, else its registered input."""
    if image_size:
        return (image_size, image_size)
    from keras_vitmix.applications import model_info

    return tuple(model_info(name)["config"].get("input_shape", (32, 32, 3))[:2])


def device_name():
    """This machine (`_timing.this_machine`), and the accelerator the backend computes on."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{this_machine()}, {device.device_kind}"
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"{this_machine()}, {torch.cuda.get_device_name(0)}"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return f"{this_machine()}, {gpus[0].name}"
    return this_machine()


def split_arrays(folder, size, cache):
    """{"train", "validation"}: (uint8 images, int32 labels) of the folder at `size`,
    decoded once and cached (`keras_vitmix.datasets.load_arrays`), held out with
    `SPLIT_SEED`."""
    from keras_vitmix import datasets

    load = dict(image_size=size, seed=SPLIT_SEED, validation_fraction=VALIDATION_FRACTION, test_fraction=0, cache_dir=cache)
    return {split: datasets.load_arrays(str(folder), split, **load)[:2] for split in ("train", "validation")}


def parse_arguments(argv=None):
    """The flags, after `--backend` has been applied (the choices import keras_vitmix)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--backend", default=None, choices=("tensorflow", "jax", "torch"))
    backend = first.parse_known_args(argv)[0].backend
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_vitmix.augmentation import AUGMENTATIONS
    from keras_vitmix.recipes import RECIPES
    from keras_vitmix.training import PIPELINES

    recipe = " (default: the recipe's, per family)"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[first])
    parser.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated registered names")
    parser.add_argument("--per-class", type=int, default=0, help="images per class (0: all 5,000)")
    parser.add_argument("--recipe", default="cifar", choices=RECIPES, help="keras_vitmix.recipes' table")
    parser.add_argument("--epochs", type=int, help="epochs" + recipe)
    parser.add_argument("--batch-size", type=int, help="batch size" + recipe)
    parser.add_argument("--learning-rate", type=float, help="AdamW's peak learning rate" + recipe)
    parser.add_argument("--weight-decay", type=float, help="AdamW's weight decay" + recipe)
    parser.add_argument("--warmup-epochs", type=int, help="linear warmup" + recipe)
    parser.add_argument("--label-smoothing", type=float, help="label smoothing" + recipe)
    parser.add_argument("--augment", choices=AUGMENTATIONS, help="augmentation policy" + recipe)
    parser.add_argument("--drop-path-rate", type=float, help="stochastic depth" + recipe)
    parser.add_argument("--ema", dest="ema_momentum", type=float,
                        help="momentum of an exponential moving average of the weights, 0: off" + recipe)
    parser.add_argument("--pipeline", default="device", choices=PIPELINES,
                        help="device: no TensorFlow needed, validation split fixed (see the module docstring)")
    parser.add_argument("--mixed-precision", action="store_true", help="the mixed_bfloat16 policy")
    parser.add_argument("--jit-compile", default="auto", choices=("auto", "true", "false"))
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side in pixels (default: each model's); pair it with --overrides' patch_size")
    parser.add_argument("--overrides", type=json.loads, default=None,
                        help='JSON constructor arguments for every model, e.g. \'{"dropout_rate": 0}\'')
    parser.add_argument("--prepare", action="store_true",
                        help="only extract the archive and decode the arrays of each model's size (cached)")
    parser.add_argument("--seed", type=int, default=0, help="seeds initialization, batch order and augmentation")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/keras_vitmix"))
    parser.add_argument("--output", default=str(REPO / "runs" / "accuracy"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    return parser.parse_args(argv)


def training_arguments(args):
    """The training flags given on the command line, as `train` takes them; `train`
    fills the others from the recipe."""
    given = {flag: getattr(args, flag) for flag in TRAINING_FLAGS if getattr(args, flag) is not None}
    if given.get("ema_momentum") == 0:
        given["ema_momentum"] = False  # off, whatever the recipe
    return given


def planned(args, name):
    """The recipe row of `name`'s family with the given flags over it: what `train` runs."""
    from keras_vitmix import recipes
    from keras_vitmix.applications import model_info

    return {**recipes.get_recipe(args.recipe, model_info(name)["family"]).as_dict(), **training_arguments(args)}


def train_model(name, folder, args):
    """`keras_vitmix.training.train` on the folder (arrays split by `split_arrays` for the
    device pipeline); returns its metrics."""
    from keras_vitmix import training

    plan = planned(args, name)
    print(f"{name}: recipe {args.recipe!r}, " + ", ".join(f"{k} {v}" for k, v in plan.items()), flush=True)
    dataset = str(folder)
    if args.pipeline == "device":
        dataset = split_arrays(folder, input_size(name, args.image_size), args.cache)
    return training.train(
        name, dataset, pipeline=args.pipeline, recipe=args.recipe, seed=args.seed,
        mixed_precision=args.mixed_precision,
        jit_compile={"auto": "auto", "true": True, "false": False}[args.jit_compile],
        model_overrides=args.overrides, image_size=args.image_size, validation_fraction=VALIDATION_FRACTION,
        test_fraction=0,
        output_dir=os.path.join(args.output, name), verbose=2, **training_arguments(args),
    )


def _cell(value):
    """A resolved value as docs/recipes.md's tables write it."""
    if value is None:
        return "off"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def tables(rows, train_images):
    """The accuracy table, and the table of the values each run resolved."""
    accuracy = [
        "| model | family | parameters | recipe | epochs | train images | validation accuracy | s/epoch | wall |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    resolved = [
        "| model | " + " | ".join(RECIPE_COLUMNS.values()) + " |",
        "|---" + "|---:" * len(RECIPE_COLUMNS) + "|",
    ]
    for m in rows:
        reference = SEED_RESULTS.get(m["model"])
        note = f" (seed notebook: {reference:.2%})" if reference else ""
        accuracy.append(
            f"| {m['model']} | {m['family']} | {m['parameters']:,} | {m['recipe']} | {m['epochs']} | "
            f"{train_images:,} | "
            f"{m['validation_accuracy']:.2%}{note} | {m['seconds_per_epoch']:.1f} | {m['wall_seconds'] / 60:.1f} min |"
        )
        resolved.append(f"| {m['model']} | " + " | ".join(_cell(m[k]) for k in RECIPE_COLUMNS) + " |")
    return "\n".join(accuracy), "\n".join(resolved)


def main(argv=None):
    args = parse_arguments(argv)
    import keras

    from keras_vitmix import config, datasets

    config.tune_malloc()  # before any model runs
    cache = pathlib.Path(args.cache)
    folder = subset(extract(pathlib.Path(args.archive), cache), args.per_class, cache)
    names = args.models.split(",")
    if args.prepare:
        for size in sorted({input_size(n, args.image_size) for n in names}):
            for split, (images, labels) in split_arrays(folder, size, cache).items():
                print(f"{split} at {size}: images {images.shape}, labels {labels.shape}, cached in {cache}")
        return None
    rows = [train_model(name, folder, args) for name in names]
    split_seed = SPLIT_SEED if args.pipeline == "device" else args.seed
    train_images = len(datasets.list_folder(folder, "train", split_seed, VALIDATION_FRACTION, test_fraction=0)[0])
    accuracy, resolved = tables(rows, train_images)
    print(accuracy, resolved, sep="\n\n")
    setup = (
        f"{keras.backend.backend()}, {', '.join(sorted({m['pipeline'] for m in rows}))} pipeline"
        f"{', mixed_bfloat16' if args.mixed_precision else ''}, recipe {args.recipe!r}, seed {args.seed}"
        + (f", {args.image_size} px" if args.image_size else "")
        + (f", model arguments {json.dumps(args.overrides)}" if args.overrides else "")
    )
    write_section(
        args.results, "Accuracy on CIFAR-10", __file__, argv if argv is not None else sys.argv[1:],
        f"Backend and setup: {setup}. Validation = a seeded 10% of each class held out of the CIFAR-10 training JPEGs "
        f"(../shared/data) with seed {split_seed}; the CIFAR-10 test split is not used. Each model trains with "
        "its family's row of the recipe (keras_vitmix.recipes) under the flags given; the second table shows "
        "the values each run used.",
        [accuracy, resolved], machine=device_name(),
    )
    print(json.dumps([{k: m[k] for k in ("model", "validation_accuracy", "parameters")} for m in rows]))


if __name__ == "__main__":
    main()
