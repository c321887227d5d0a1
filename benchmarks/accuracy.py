"""Accuracy of every family's CIFAR-size configuration on CIFAR-10, for a given budget.

Trains on the CIFAR-10 training JPEGs of ../shared/data (extracted once to a cache
folder), holding out a seeded 10% of each class as the validation split that is
reported, and writes a table (accuracy, parameters, epochs, wall time, the command) in
place of the accuracy section of benchmarks/RESULTS.md (`--results` names another file).
`--per-class` trains on a subset for a CPU budget. The script owns its process and opts
in to keras_vitmix's allocator tuning (`keras_vitmix.config.tune_malloc()`).

`--pipeline numpy` feeds `model.fit` from NumPy instead of tf.data, for machines without
TensorFlow (a JAX or PyTorch GPU box): the JPEGs are decoded once with Pillow (cached),
the split is `keras_vitmix.datasets.list_folder`'s (the same files as the tf.data path),
and a `keras.utils.PyDataset` applies the same "light" augmentation (zero padding by an
eighth of the side, a random crop back, a horizontal flip).

    python benchmarks/accuracy.py --epochs 3 --per-class 500 --backend jax
    python benchmarks/accuracy.py --backend jax --pipeline numpy --mixed-precision --epochs 30
"""

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile

import numpy as np
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


def _decode(job):
    from PIL import Image

    path, size = job
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(image, np.uint8)


def decode_split(folder, split, size, cache, seed=0):
    """A folder split as uint8 arrays (N, H, W, 3) and int32 labels, decoded once with
    Pillow in worker processes and cached as .npz."""
    from keras_vitmix import datasets

    paths, labels, classes, note = datasets.list_folder(folder, split, seed=seed)
    key = hashlib.sha1(f"{folder}|{split}|{seed}|{size}|{len(paths)}|{paths[0]}|{paths[-1]}".encode()).hexdigest()[:16]
    target = pathlib.Path(cache) / f"arrays-{split}-{key}.npz"
    if target.exists():
        with np.load(target) as data:
            return data["images"], data["labels"], classes, note
    # spawn, not fork: the process may already run JAX's or PyTorch's threads
    with concurrent.futures.ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn")) as pool:
        images = np.stack(list(pool.map(_decode, [(p, size) for p in paths], chunksize=256)))
    labels = np.asarray(labels, np.int32)
    tmp = target.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, target)
    return images, labels, classes, note


def light_augment(images, rng, flip=True):
    """Zero-pad by an eighth of the side, crop back at a random offset, flip half: the
    tf.data pipeline's "light" augmentation, vectorized over a uint8 batch."""
    batch, height, width, _ = images.shape
    pad = max(1, height // 8)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = rng.integers(0, 2 * pad + 1, batch)[:, None] + np.arange(height)
    cols = rng.integers(0, 2 * pad + 1, batch)[:, None] + np.arange(width)
    out = padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        flipped = rng.random(batch) < 0.5
        out[flipped] = out[flipped, :, ::-1]
    return out


def mix(images, labels, num_classes, rng):
    """MixUp (Beta(0.2, 0.2) weights, as `keras.layers.MixUp`) or CutMix (a box of a
    Beta(1, 1) share of the area, as `keras.layers.CutMix`), one of the two per batch,
    each image with a partner from the same batch; labels become mixed one-hot rows."""
    batch, height, width, _ = images.shape
    images = images.astype(np.float32)
    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    partner = rng.permutation(batch)
    if rng.random() < 0.5:
        lam = rng.beta(0.2, 0.2, batch).astype(np.float32)
        images = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[partner]
    else:
        lam = rng.beta(1.0, 1.0, batch)
        box_h = np.round(height * np.sqrt(1 - lam)).astype(int)
        box_w = np.round(width * np.sqrt(1 - lam)).astype(int)
        top = rng.integers(0, height - box_h + 1)
        left = rng.integers(0, width - box_w + 1)
        rows, cols = np.arange(height), np.arange(width)
        inside = (
            ((rows[None, :] >= top[:, None]) & (rows[None, :] < (top + box_h)[:, None]))[:, :, None]
            & ((cols[None, :] >= left[:, None]) & (cols[None, :] < (left + box_w)[:, None]))[:, None, :]
        )
        images = np.where(inside[..., None], images[partner], images)
        lam = (1 - inside.mean(axis=(1, 2))).astype(np.float32)  # the share each image kept
    return images, lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot[partner]


def numpy_batches(images, labels, batch_size, augment, seed, num_classes=None):
    """A `keras.utils.PyDataset` of (float32 images, labels), reshuffled each epoch.
    `augment`: False, "light" (`light_augment`) or "strong" (light, then `mix`)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=4, use_multiprocessing=False)
            self.epoch = 0
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(labels)) if augment else np.arange(len(labels))

        def __len__(self):
            return -(-len(labels) // batch_size)

        def __getitem__(self, index):
            chosen = np.sort(self.order[index * batch_size:(index + 1) * batch_size])
            batch = images[chosen]
            if not augment:
                return batch.astype(np.float32), labels[chosen]
            rng = np.random.default_rng([seed, self.epoch, index])
            batch = light_augment(batch, rng)
            if augment == "strong":
                return mix(batch, labels[chosen], num_classes, rng)
            return batch.astype(np.float32), labels[chosen]

        def on_epoch_end(self):
            self.epoch += 1
            if augment:
                self.order = self.rng.permutation(len(labels))

    return Batches()


def input_size(name, image_size=None):
    """(height, width) that `name` is trained at: `image_size` if given, else its registered input."""
    if image_size:
        return (image_size, image_size)
    from keras_vitmix.applications import model_info

    return tuple(model_info(name)["config"].get("input_shape", (32, 32, 3))[:2])


def train_numpy(name, folder, cache, epochs, batch_size, learning_rate, weight_decay, mixed_precision,
                jit_compile, output_dir, seed=0, warmup_epochs=1, augment="light", overrides=None, image_size=None,
                label_smoothing=0.1):
    """`training.train`'s recipe, callbacks and metrics.json, fed by `numpy_batches`."""
    import time

    import keras

    from keras_vitmix import datasets, training
    from keras_vitmix.training_callbacks import EpochTimer, callbacks

    os.makedirs(output_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    size = input_size(name, image_size)
    # The validation split stays the same whatever `seed` (initialization, order, augmentation).
    train_x, train_y, classes, train_note = decode_split(folder, "train", size, cache)
    val_x, val_y, _, val_note = decode_split(folder, "validation", size, cache)
    info = datasets.DatasetInfo(str(folder), "train", classes, len(classes), len(train_y), (*size, 3), "folder", train_note)
    val_info = datasets.DatasetInfo(str(folder), "validation", classes, len(classes), len(val_y), (*size, 3), "folder", val_note)
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        net = training._build(name, size, len(classes), overrides)
        steps = -(-len(train_y) // batch_size)
        training.compile_for_training(
            net, epochs * steps, learning_rate, weight_decay, warmup_epochs * steps,
            label_smoothing=label_smoothing, jit_compile=jit_compile,
        )
        resuming = os.path.isdir(os.path.join(output_dir, "backup"))
        run_callbacks = callbacks(output_dir)
        start = time.perf_counter()
        net.fit(
            numpy_batches(train_x, train_y, batch_size, augment, seed, len(classes)), epochs=epochs,
            callbacks=run_callbacks,
            validation_data=numpy_batches(val_x, val_y, 500, False, 0), verbose=2,
        )
        wall = time.perf_counter() - start
        best = keras.saving.load_model(os.path.join(output_dir, "model.keras"))
        scores = best.evaluate(numpy_batches(val_x, val_y, 500, False, 0), return_dict=True, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    times = next(c for c in run_callbacks if isinstance(c, EpochTimer)).times
    metrics = training._run_metrics(
        net, info, val_info, scores, times, wall, resuming, size, batch_size, epochs, seen=len(train_y)
    )
    metrics.update(pipeline="numpy", mixed_precision=bool(mixed_precision), learning_rate=learning_rate, augment=augment)
    training.write_json(os.path.join(output_dir, "metrics.json"), metrics)
    print(f"{name}: validation accuracy {metrics['test_accuracy']:.2%}, {metrics['seconds_per_epoch']:.1f} s/epoch")
    return metrics


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated registered names")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=0, help="images per class (0: all 5,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--pipeline", default="tf.data", choices=("tf.data", "numpy"),
                        help="numpy: no TensorFlow needed (see the module docstring)")
    parser.add_argument("--mixed-precision", action="store_true", help="the mixed_bfloat16 policy")
    parser.add_argument("--jit-compile", default="auto", choices=("auto", "true", "false"))
    parser.add_argument("--augment", default="light", choices=("none", "light", "strong"),
                        help="strong: light, then MixUp or CutMix per batch (tf.data's strong also has RandAugment)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side in pixels (default: each model's); pair it with --overrides' patch_size")
    parser.add_argument("--overrides", type=json.loads, default=None,
                        help='JSON constructor arguments for every model, e.g. \'{"dropout_rate": 0}\'')
    parser.add_argument("--prepare", action="store_true",
                        help="only extract the archive and decode the numpy pipeline's arrays (cached)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds initialization, batch order and augmentation (numpy pipeline; the "
                        "validation split stays the same)")
    parser.add_argument("--backend", default=None, choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/keras_vitmix"))
    parser.add_argument("--output", default=str(REPO / "runs" / "accuracy"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)
    if args.seed and args.pipeline != "numpy":
        parser.error(f"--seed {args.seed} needs --pipeline numpy: the tf.data pipeline's seed also re-draws the "
                     "validation split")
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from keras_vitmix import config, training

    config.tune_malloc()  # before any model runs
    cache = pathlib.Path(args.cache)
    folder = subset(extract(pathlib.Path(args.archive), cache), args.per_class, cache)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    augment = False if args.augment == "none" else args.augment
    if args.prepare:
        sizes = {input_size(n, args.image_size) for n in args.models.split(",")}
        for size in sorted(sizes):
            for split in ("train", "validation"):
                images, _, _, _ = decode_split(folder, split, size, cache)
                print(f"{split} at {size}: {images.shape} cached in {cache}")
        return None
    rows = []
    for name in args.models.split(","):
        output_dir = os.path.join(args.output, name)
        if args.pipeline == "numpy":
            metrics = train_numpy(
                name, folder, cache, args.epochs, args.batch_size, args.learning_rate, args.weight_decay,
                args.mixed_precision, jit, output_dir, warmup_epochs=args.warmup_epochs, augment=augment,
                overrides=args.overrides, image_size=args.image_size, label_smoothing=args.label_smoothing,
                seed=args.seed,
            )
        else:
            metrics = training.train(
                name, str(folder), epochs=args.epochs, batch_size=args.batch_size,
                learning_rate=args.learning_rate, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                augment=augment, model_overrides=args.overrides, image_size=args.image_size,
                label_smoothing=args.label_smoothing,
                mixed_precision=args.mixed_precision, jit_compile=jit, output_dir=output_dir, verbose=2,
            )
        rows.append(metrics)
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
    recipe = (
        f"{keras.backend.backend()}, {args.pipeline} pipeline{', mixed_bfloat16' if args.mixed_precision else ''}, "
        f"batch {args.batch_size}, lr {args.learning_rate:g}, weight decay {args.weight_decay:g}, warmup "
        f"{args.warmup_epochs} epochs, {args.augment} augmentation, label smoothing {args.label_smoothing:g}"
        + (f", {args.image_size} px" if args.image_size else "")
        + (f", model arguments {json.dumps(args.overrides)}" if args.overrides else "")
    )
    print("\n".join(table))
    write_section(
        args.results, "Accuracy on CIFAR-10", __file__, argv if argv is not None else sys.argv[1:],
        f"Backend and recipe: {recipe}. Validation = a seeded 10% of each class held out of the CIFAR-10 "
        "training JPEGs (../shared/data); the CIFAR-10 test split is not used.",
        ["\n".join(table)], machine=device_name(),
    )
    print(json.dumps([{k: m[k] for k in ("model", "test_accuracy", "parameters")} for m in rows]))


if __name__ == "__main__":
    main()
