"""The `keras-vitmix` command: list, train, evaluate, visualize and export models.

`keras-vitmix` enters through `keras_vitmix_cli`, which prepares the process before this
package (and Keras) is imported: the backend, quiet TensorFlow start-up, the allocator.
`main` here parses and runs one command; called in a process where Keras already runs
another backend than `--backend`, it runs the command again in a fresh process.
"""

import argparse
import functools
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")
PIPELINES = ("auto", "device", "tf.data")


def _parser():
    # `--backend` is accepted before and after the subcommand. The subcommands' copy (one
    # Action shared through `parents`) defaults to SUPPRESS, so that it leaves the value
    # given before the subcommand alone when not given after it.
    backend = dict(choices=BACKENDS, help="Keras backend (default: KERAS_BACKEND)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", default=argparse.SUPPRESS, **backend)
    parser = argparse.ArgumentParser(prog="keras-vitmix", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, **backend)
    commands = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(commands.add_parser, parents=[common])
    models = add("models", help="list the registered model variants")
    models.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'vit_*'")
    models.add_argument("--params", action="store_true", help="build each model and count its parameters")
    _add_train(add)
    evaluate = add("evaluate", help="accuracy and a confusion matrix of a saved model")
    evaluate.add_argument("--model", required=True, help="a .keras file, e.g. runs/train/model.keras")
    evaluate.add_argument("--dataset", default="digits")
    evaluate.add_argument("--split", choices=("train", "validation", "test"), default="test")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--output", default=None, help="folder for confusion_matrix.png (default: the model's)")
    visualize = add("visualize", help="attention maps (or Mixer weights) of a saved model")
    visualize.add_argument("--model", required=True, help="a .keras file, e.g. runs/train/model.keras")
    visualize.add_argument("--image", default=None, help="an image file; default: a test image of the run's dataset")
    visualize.add_argument("--layer", default=None, help="block name, e.g. block_0 (default: the last)")
    visualize.add_argument("--head", type=int, default=None, help="head index (default: mean of heads)")
    visualize.add_argument("--query", default=None, help="query patch as ROW,COL or an index (default: centre)")
    visualize.add_argument("--output", default=None, help="folder for the figures (default: <model folder>/attention)")
    visualize.add_argument("--animate", action="store_true", help="also a GIF stepping the query over all patches")
    export = add("export", help="a SavedModel or ONNX file of a saved model, for serving")
    export.add_argument("--model", required=True, help="a .keras file, e.g. runs/train/model.keras")
    export.add_argument("--output", required=True, help="a directory (tf_saved_model) or a file (onnx)")
    export.add_argument("--format", choices=("tf_saved_model", "onnx"), default="tf_saved_model")
    export.add_argument("--image-dtype", choices=("uint8", "float32"), default="uint8", help="dtype of served images")
    export.add_argument("--batch-size", type=int, default=None, help="a fixed batch size (default: any)")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default: tf2onnx's)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export")
    return parser


def _add_train(add):
    # The choices come from `keras_vitmix.recipes`, which imports only the standard
    # library; PIPELINES is training.PIPELINES, kept here so parsing starts no training
    # code (a test keeps the two equal).
    from keras_vitmix.recipes import AUGMENTATIONS, RECIPES

    recipe = " (default: the recipe's)"
    train = add("train", help="train a model with a recipe; writes a run folder")
    train.add_argument("--model", default="hybrid_mixer_vit_cifar_patch4_32", help="registered name or .keras path")
    train.add_argument("--dataset", default="digits", help="'digits', a TFDS name, or a train/<class>/ folder")
    train.add_argument("--recipe", choices=RECIPES, default=None,
                       help="training recipe, docs/recipes.md (default: chosen from the dataset's size)")
    train.add_argument("--pipeline", choices=PIPELINES, default="auto",
                       help="device: images held on the accelerator; tf.data: streamed (default: auto, "
                            "device when the training images fit)")
    train.add_argument("--epochs", type=int, default=None, help="epochs" + recipe)
    train.add_argument("--batch-size", type=int, default=None, help="batch size" + recipe)
    train.add_argument("--image-size", type=int, default=None, help="default: the model's input size")
    train.add_argument("--learning-rate", type=float, default=None, help="AdamW's peak learning rate" + recipe)
    train.add_argument("--weight-decay", type=float, default=None, help="AdamW's weight decay" + recipe)
    train.add_argument("--warmup-epochs", type=int, default=None, help="linear warmup epochs" + recipe)
    train.add_argument("--label-smoothing", type=float, default=None, help="label smoothing" + recipe)
    train.add_argument("--augment", choices=AUGMENTATIONS, default=None, help="augmentation policy" + recipe)
    train.add_argument("--drop-path-rate", type=float, default=None, help="stochastic depth" + recipe)
    train.add_argument("--test-time-flip", action=argparse.BooleanOptionalAction, default=None,
                       help="average each test image's prediction with its mirror's, where flips keep labels"
                            + recipe)
    train.add_argument("--clipnorm", type=float, default=None,
                       help="clip the global gradient norm to it; 0: off" + recipe)
    train.add_argument("--ema", type=float, default=None, metavar="MOMENTUM",
                       help="validate and keep an exponential moving average of the weights, e.g. 0.999; "
                            "0: off (default: the recipe's)")
    train.add_argument("--mixed-precision", action="store_true", help="train under mixed_bfloat16")
    train.add_argument("--xla", choices=("auto", "on", "off"), default="auto", help="XLA (tensorflow, jax)")
    train.add_argument("--distribute", choices=("none", "data_parallel"), default="none",
                       help="data_parallel: tf.data pipeline only")
    train.add_argument("--output", default="runs/train", help="run folder")
    train.add_argument("--seed", type=int, default=0)


def _train(args):
    from keras_vitmix import training

    training.train(
        model=args.model,
        dataset=args.dataset,
        recipe=args.recipe,
        pipeline=args.pipeline,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        drop_path_rate=args.drop_path_rate,
        test_time_flip=args.test_time_flip,
        clipnorm=args.clipnorm,
        ema_momentum=False if args.ema == 0 else args.ema,
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


def _export(args):
    from keras_vitmix import export

    export.export(
        args.model,
        args.output,
        format=args.format,
        image_dtype=args.image_dtype,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        opset=args.opset,
    )
    return 0


def _sample_image(model_path, size):
    """A test image of the dataset recorded in the run's metrics.json."""
    import json

    from keras_vitmix import datasets

    metrics_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "metrics.json")
    if not os.path.exists(metrics_path):
        raise ValueError(f"No --image given and no {metrics_path} naming the model's dataset: pass --image.")
    with open(metrics_path) as handle:
        dataset = json.load(handle)["dataset"]
    if dataset == "arrays":
        raise ValueError(f"The run of {model_path} trained on in-memory arrays, not a named dataset: pass --image.")
    images, _, _ = datasets.load_arrays(dataset, "test", image_size=size)  # no TensorFlow needed
    return images[0]


def _visualize(args):
    import keras

    from keras_vitmix import datasets, visualize

    if not os.path.isfile(args.model):
        raise ValueError(f"No such model file. Received: --model {args.model}")
    model = keras.saving.load_model(args.model, compile=False)
    image = datasets.read_image(args.image) if args.image else _sample_image(args.model, tuple(model.input_shape[1:3]))
    query = args.query
    if query is not None:
        parts = query.split(",")
        if not all(p.strip().lstrip("-").isdigit() for p in parts) or len(parts) > 2:
            raise ValueError(f"--query must be ROW,COL or an index. Received: --query {query}")
        query = tuple(int(p) for p in parts) if len(parts) == 2 else int(parts[0])
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.model)), "attention")
    paths = visualize.write_attention_figures(
        model, image, output, layer=args.layer, head=args.head, query=query, animate=args.animate
    )
    for path in paths:
        print(path)
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
    process with KERAS_BACKEND set, through the entry point that keeps TensorFlow's
    start-up quiet (`keras_vitmix_cli`, found beside this package)."""
    os.environ["KERAS_BACKEND"] = backend
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        argv = sys.argv[1:] if argv is None else list(argv)
        beside = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        start = f"import sys; sys.path.append({beside!r}); import keras_vitmix_cli; sys.exit(keras_vitmix_cli.main())"
        os.execv(sys.executable, [sys.executable, "-c", start, *argv])


def main(argv=None):
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.backend:
        _use_backend(args.backend, argv)
    commands = {"models": _models, "train": _train, "evaluate": _evaluate, "visualize": _visualize, "export": _export}
    command = commands[args.command]
    try:
        return command(args)
    except ValueError as error:  # bad input: one clear line, no traceback
        print(f"keras-vitmix {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # `python -m keras_vitmix.cli`; `keras-vitmix` is quieter
    sys.exit(main())
