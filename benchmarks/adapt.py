"""Adapting models on CIFAR-10 at a CPU's budget: transfer between halves of the classes,
and DeiT's distillation from a ConvMixer teacher, every run through `train`.

Transfer: a model is trained from scratch on five CIFAR-10 classes (airplane,
automobile, bird, cat, deer), then adapted to the other five (dog, frog, horse, ship,
truck) in three ways, for the same epochs on the same images: fine-tuned from the first
run's model.keras (`weights=`, the "finetune" recipe with layer decay), a linear probe of
it (`freeze="backbone"`), and the same architecture from scratch (the "cifar" recipe).

Distillation: a ConvMixer teacher is trained on all ten classes, then the CIFAR DeiT
student is trained for the same epochs on the same images twice, with the teacher
(`teacher=`, DeiT's hard distillation into its distillation head) and without.

Every split comes from the CIFAR-10 training JPEGs of ../shared/data (the official test
split is not there): a seeded 10% of each class is the validation split (it picks each
run's checkpoint) and another 10% the test split, scored once at the end; the table
reports both, and the test column was never used to select anything.

    python benchmarks/adapt.py --backend jax --per-class 600 --pretrain-epochs 12 --epochs 6
"""

import argparse
import json
import os
import pathlib
import sys

from _timing import write_section  # benchmarks/ is the script's folder
from accuracy import DEFAULT_ARCHIVE, REPO, device_name, extract, subset

FIRST_CLASSES = 5  # classes 0-4 pretrain, 5-9 are the transfer target
SPLIT_SEED = 0


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    parser.add_argument("--per-class", type=int, default=600, help="images per class before the hold-outs (0: all)")
    parser.add_argument("--model", default="vit_cifar_patch4_32", help="the transfer experiment's model")
    parser.add_argument("--student", default="deit_tiny_distilled_patch4_32", help="the distillation student")
    parser.add_argument("--teacher", default="convmixer_256_8", help="the distillation teacher (trained here)")
    parser.add_argument("--teacher-overrides", type=json.loads, default=None,
                        help="JSON constructor arguments for the teacher, e.g. '{\"num_layers\": 4}'")
    parser.add_argument("--pretrain-epochs", type=int, default=12, help="epochs of the source and teacher runs")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every compared run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--distillation", choices=("hard", "soft"), default="hard")
    parser.add_argument("--skip", choices=("transfer", "distillation"), default=None)
    parser.add_argument("--reuse", action="store_true",
                        help="read a run whose folder has metrics.json instead of training it again")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/keras_vitmix"))
    parser.add_argument("--output", default=str(REPO / "runs" / "adapt"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return args


def splits(folder, cache):
    """{"train", "validation", "test"}: (uint8 images, int32 labels) at 32 px, seeded,
    and "class_names"."""
    from keras_vitmix import datasets

    load = dict(image_size=32, seed=SPLIT_SEED, validation_fraction=0.1, test_fraction=0.1, cache_dir=cache)
    data = {split: datasets.load_arrays(str(folder), split, **load) for split in ("train", "validation", "test")}
    return {**{split: loaded[:2] for split, loaded in data.items()}, "class_names": list(data["train"][2].class_names)}


def classes(data, low, high):
    """The splits restricted to labels in [low, high), relabelled from 0, with their
    names: `train` gives a model trained on other classes a new head by the names."""
    out = {"class_names": data["class_names"][low:high]}
    for split in ("train", "validation", "test"):
        images, labels = data[split]
        keep = (labels >= low) & (labels < high)
        out[split] = (images[keep], labels[keep] - low)
    return out


def run(name, data, folder, args, **kwargs):
    from keras_vitmix import training

    print(f"=== {folder}: {name} {kwargs}", flush=True)
    finished = os.path.join(args.output, folder, "metrics.json")
    if args.reuse and os.path.exists(finished):
        with open(finished) as handle:
            return {"run": folder, **json.load(handle)}
    metrics = training.train(
        name, data, batch_size=args.batch_size, seed=0, verbose=2,
        output_dir=os.path.join(args.output, folder), **kwargs,
    )
    return {"run": folder, **metrics}


def transfer(data, args):
    """Pretrain on the first five classes; fine-tune, probe and train from scratch on the rest."""
    budget = dict(warmup_epochs=1, augment="light")
    source = run(args.model, classes(data, 0, FIRST_CLASSES), "source", args, recipe="cifar",
                 epochs=args.pretrain_epochs, **budget)
    pretrained = os.path.join(args.output, "source", "model.keras")
    target = classes(data, FIRST_CLASSES, 10)
    return [
        source,
        run(args.model, target, "fine-tuned", args, weights=pretrained, epochs=args.epochs),
        # The from-scratch rate: is a gap to "from scratch" the weights' or the rate's?
        run(args.model, target, "fine-tuned, scratch's rate", args, weights=pretrained, epochs=args.epochs,
            learning_rate=scratch_rate(args.model)),
        run(args.model, target, "linear probe", args, weights=pretrained, freeze="backbone", epochs=args.epochs),
        run(args.model, target, "from scratch", args, recipe="cifar", epochs=args.epochs, **budget),
    ]


def scratch_rate(name):
    """The peak learning rate of the "cifar" recipe for `name`'s family."""
    from keras_vitmix import recipes
    from keras_vitmix.applications import model_info

    return recipes.get_recipe("cifar", model_info(name)["family"]).learning_rate


def distillation(data, args):
    """A ConvMixer teacher on all classes; the DeiT student with and without it."""
    budget = dict(recipe="cifar", warmup_epochs=1, augment="light")
    teacher = run(args.teacher, data, "teacher", args, epochs=args.pretrain_epochs,
                  model_overrides=args.teacher_overrides, **budget)
    path = os.path.join(args.output, "teacher", "model.keras")
    return [
        teacher,
        run(args.student, data, "student, no teacher", args, epochs=args.epochs, **budget),
        run(args.student, data, f"student, {args.distillation} distillation", args, epochs=args.epochs,
            teacher=path, distillation=args.distillation, **budget),
    ]


def table(rows, caption):
    lines = [
        f"| {caption} | network | classes | train images | epochs | recipe | layer decay | test accuracy | "
        "validation accuracy | s/epoch |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for m in rows:
        lines.append(
            f"| {m['run']} | {m['model']} | {len(m['metadata']['class_names'])} | "
            f"{m['metadata']['splits']['train']['examples']:,} | {m['epochs']} | {m['recipe']} | "
            f"{m.get('layer_decay', 1.0):g} | {m['test_accuracy']:.2%} | {m['validation_accuracy']:.2%} | "
            f"{m['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_arguments(argv)
    import keras

    from keras_vitmix import config

    config.tune_malloc()
    cache = pathlib.Path(args.cache)
    folder = subset(extract(pathlib.Path(args.archive), cache), args.per_class, cache)
    data = splits(folder, cache)
    tables = []
    if args.skip != "transfer":
        tables.append(table(transfer(data, args), "transfer"))
    if args.skip != "distillation":
        tables.append(table(distillation(data, args), "distillation"))
    print(*tables, sep="\n\n")
    write_section(
        args.results, "Adapting: transfer and distillation", __file__, argv if argv is not None else sys.argv[1:],
        f"Backend: {keras.backend.backend()}, device pipeline, seed 0, batch {args.batch_size}. Splits: CIFAR-10's "
        f"training JPEGs (../shared/data), {args.per_class or 5000} images a class, of which a seeded 10% is the "
        "validation split (it picks each run's checkpoint) and another 10% the test split (scored once, never "
        "used to select). Transfer: the source run trains on classes 0-4, the three others on classes 5-9 "
        "(same images, same epochs). Distillation: every run on all ten classes, the two students for the "
        f"same epochs on the same images; the teacher is {args.teacher}"
        + (f" built with {json.dumps(args.teacher_overrides)}" if args.teacher_overrides else "") + ".",
        tables, machine=device_name(),
    )


if __name__ == "__main__":
    main()
