"""The `keras-vitmix` command.

`--backend` must take effect before Keras is imported; see `_use_backend`.
"""

import argparse
import os
import sys


def _parser():
    parser = argparse.ArgumentParser(prog="keras-vitmix", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax", "torch"), help="Keras backend (default: KERAS_BACKEND)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="list the registered model variants")
    models.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'vit_*'")
    models.add_argument("--params", action="store_true", help="build each model and count its parameters")
    train = commands.add_parser("train", help="train a model with the recipe; writes a run folder")
    train.add_argument("--model", default="hybrid_mixer_vit_cifar_patch4_32", help="registered name or .keras path")
    train.add_argument("--dataset", default="digits", help="'digits', a TFDS name, or a train/<class>/ folder")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--image-size", type=int, default=None, help="default: the model's input size")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.05)
    train.add_argument("--warmup-epochs", type=int, default=1)
    train.add_argument("--label-smoothing", type=float, default=0.1)
    train.add_argument("--augment", choices=("none", "light", "strong"), default="light")
    train.add_argument("--mixed-precision", action="store_true", help="train under mixed_bfloat16")
    train.add_argument("--xla", choices=("auto", "on", "off"), default="auto", help="XLA (tensorflow, jax)")
    train.add_argument("--distribute", choices=("none", "data_parallel"), default="none")
    train.add_argument("--output", default="runs/train", help="run folder")
    train.add_argument("--seed", type=int, default=0)
    evaluate = commands.add_parser("evaluate", help="accuracy and a confusion matrix of a saved model")
    evaluate.add_argument("--model", required=True, help="a .keras file, e.g. runs/train/model.keras")
    evaluate.add_argument("--dataset", default="digits")
    evaluate.add_argument("--split", choices=("train", "validation", "test"), default="test")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--output", default=None, help="folder for confusion_matrix.png (default: the model's)")
    return parser


def _train(args):
    from keras_vitmix import training

    training.train(
        model=args.model,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        augment={"none": False, "light": "light", "strong": "strong"}[args.augment],
        mixed_precision=args.mixed_precision,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.xla],
        distribute=None if args.distribute == "none" else args.distribute,
        output_dir=args.output,
        seed=args.seed,
    )
    return 0


def _evaluate(args):
    from keras_vitmix import training

    training.evaluate(args.model, args.dataset, args.split, args.batch_size, args.output)
    return 0


def _models(args):
    from keras_vitmix.applications import create_model, list_models, model_info

    names = list_models(args.pattern)
    if not names:
        print(f"No model matches {args.pattern!r}.", file=sys.stderr)
        return 1
    width = max(len(n) for n in names)
    for name in names:
        info = model_info(name)
        params = ""
        if args.params:
            params = f"{create_model(name).count_params():>13,d}  "
        print(f"{name:<{width}}  {info['family'].__name__:<20}  {params}{info['description']}")
    return 0


def _use_backend(backend, argv):
    """Keras fixes its backend when first imported, and importing this package imports
    Keras: if another backend is already loaded, run this command again in a fresh
    process with KERAS_BACKEND set."""
    os.environ["KERAS_BACKEND"] = backend
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        argv = sys.argv[1:] if argv is None else list(argv)
        os.execv(sys.executable, [sys.executable, "-m", "keras_vitmix.cli", *argv])


def main(argv=None):
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.backend:
        _use_backend(args.backend, argv)
    command = {"models": _models, "train": _train, "evaluate": _evaluate}[args.command]
    try:
        return command(args)
    except ValueError as error:  # bad input: one clear line, no traceback
        print(f"keras-vitmix {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
