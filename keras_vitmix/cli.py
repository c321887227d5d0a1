"""The `keras-vitmix` command: list, train, evaluate, predict with, visualize and export models.

`keras-vitmix` enters through `keras_vitmix_cli`, which holds the argument parser and the
model catalogue (both free of Keras, so `--help` and `models` start fast) and prepares the
process before this package (and Keras) is imported: the backend, quiet TensorFlow
start-up, the allocator. `main` here parses and runs one command; called in a process
where Keras already runs another backend than `--backend`, it runs the command again in a
fresh process.
"""

import os
import sys

from keras_vitmix_cli import listing
from keras_vitmix_cli.parser import BACKENDS, PIPELINES, build_parser  # noqa: F401  (the command's choices)


def _train(args):
    from keras_vitmix import distribution, training

    if args.coordinator is not None or args.num_processes is not None or args.process_id is not None:
        if args.distribute != "data_parallel":
            raise ValueError(
                "--coordinator, --num-processes and --process-id join a data-parallel run. Received: "
                f"--distribute {args.distribute}"
            )
        distribution.initialize_processes(args.coordinator, args.num_processes, args.process_id)

    # Given only when given, so that train's own defaults apply otherwise.
    fractions = {name: getattr(args, name) for name in ("validation_fraction", "test_fraction")
                 if getattr(args, name) is not None}
    training.train(
        model=args.model,
        dataset=args.dataset,
        recipe=args.recipe,
        pipeline=args.pipeline,
        **fractions,
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
        weights=args.weights,
        freeze=args.freeze,
        layer_decay=args.layer_decay,
        teacher=args.teacher,
        distillation=args.distillation,
        distillation_alpha=args.distillation_alpha,
        distillation_tau=args.distillation_tau,
    )
    return 0


def _evaluate(args):
    from keras_vitmix import training

    training.evaluate(
        args.model,
        dataset=args.dataset,
        split=args.split,
        batch_size=args.batch_size,
        output_dir=args.output,
        test_time_flip=args.test_time_flip,
        pipeline=args.pipeline,
    )
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
        attention=args.attention,
    )
    return 0


def _sample_image(model, model_path):
    """An image of the model's run: the first of its test split (of validation where it
    has none), read as the run made its splits."""
    from keras_vitmix import datasets
    from keras_vitmix.evaluation import run_metadata, split_arguments

    run = run_metadata(model, model_path)
    dataset = run.get("dataset")
    if not dataset:
        raise ValueError(f"No --image given, and {model_path} records no dataset (no run metadata, no metrics.json "
                         "beside it): pass --image.")
    if dataset == "arrays":
        raise ValueError(f"The run of {model_path} trained on in-memory arrays, not a named dataset: pass --image.")
    size = tuple(model.input_shape[1:3])
    for split in ("test", "validation"):
        images, _, _ = datasets.load_arrays(dataset, split, image_size=size, **split_arguments(run))  # no TensorFlow
        if len(images):
            return images[0]


def _visualize(args):
    import keras

    from keras_vitmix import datasets, visualize

    if not os.path.isfile(args.model):
        raise ValueError(f"No such model file. Received: --model {args.model}")
    model = keras.saving.load_model(args.model, compile=False)
    image = datasets.read_image(args.image) if args.image else _sample_image(model, args.model)
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


def _note(command, message):
    """A line about a guess the command made (a resize, a softmax), said once."""
    print(f"keras-vitmix {command}: {message}", file=sys.stderr)


def _images_for(model, paths):
    """The image files as one uint8 batch at the model's input size; a resize is said once."""
    import numpy as np

    from keras_vitmix import datasets
    from keras_vitmix.datasets.files import resize_pixels

    size = tuple(model.input_shape[1:3])
    images, resized = [], []
    for path in paths:
        pixels = datasets.read_image(path)
        if None not in size and pixels.shape[:2] != size:
            resized.append(f"{path} ({pixels.shape[0]}x{pixels.shape[1]})")
            pixels = resize_pixels(pixels, size)  # bilinear, as load_arrays resizes training images
        images.append(pixels)
    if resized:
        _note("predict", f"resized {len(resized)} of {len(paths)} images to the model's input, "
                         f"{size[0]}x{size[1]} (height x width), bilinear: {', '.join(resized)}")
    return np.stack(images)


def _class_probabilities(model, images):
    """The model's class probabilities for `images`, (N, classes) float64; outputs that
    are not probabilities (logits) go through a softmax, said once."""
    import numpy as np

    outputs = model.predict(images.astype("float32"), verbose=0)
    if not isinstance(outputs, np.ndarray) or outputs.ndim != 2:
        kind = type(outputs).__name__ if not isinstance(outputs, np.ndarray) else f"shape {outputs.shape}"
        raise ValueError(f"predict needs a model with one output of class scores (batch, classes). "
                         f"Received: an output of {kind}")
    scores = outputs.astype("float64")
    if (scores < 0).any() or not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        _note("predict", "the model's outputs are not probabilities (logits?): shown after a softmax")
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    return scores


def _predict(args):
    from keras_vitmix import saving

    if args.top < 1:
        raise ValueError(f"--top must be at least 1. Received: --top {args.top}")
    model = saving.load_model(args.model, compile=False)
    probabilities = _class_probabilities(model, _images_for(model, args.images))
    classes = probabilities.shape[1]
    names = saving.model_metadata(model).get("class_names")
    if not names or len(names) != classes:
        why = f"{len(names)} class names for {classes} outputs" if names else "no class names"
        _note("predict", f"the model {args.model} has {why}: showing class indices")
        names = [str(index) for index in range(classes)]
    for path, row in zip(args.images, probabilities):
        print(path)
        for index in row.argsort()[::-1][: args.top]:
            print(f"  {row[index]:8.2%}  {names[index]}")
    return 0


def _models(args):
    return listing.print_models(args.pattern, params=args.params)


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
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.backend:
        _use_backend(args.backend, argv)
    commands = {"models": _models, "train": _train, "evaluate": _evaluate, "predict": _predict,
                "visualize": _visualize, "export": _export}
    command = commands[args.command]
    try:
        return command(args)
    except ValueError as error:  # bad input: one clear line, no traceback
        print(f"keras-vitmix {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # `python -m keras_vitmix.cli`; `keras-vitmix` is quieter
    sys.exit(main())
