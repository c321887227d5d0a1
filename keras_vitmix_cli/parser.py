"""The `keras-vitmix` command's arguments.

The parser imports only the standard library, so `--help` (of the command and of every
subcommand) and bad arguments are answered before Keras or a backend is imported. The
choices that the library defines elsewhere are copied here, since reading them would
import the package (and Keras): `RECIPES` and `AUGMENTATIONS` are `keras_vitmix.recipes`'s,
`PIPELINES` is `keras_vitmix.training.PIPELINES`; tests/test_cli.py keeps the copies equal.
"""

import argparse
import functools

BACKENDS = ("tensorflow", "jax", "torch")
PIPELINES = ("auto", "device", "tf.data")
RECIPES = ("small", "cifar", "deit", "finetune")
AUGMENTATIONS = ("none", "light", "medium", "strong")
DESCRIPTION = "The `keras-vitmix` command: list, train, evaluate, predict with, visualize and export models."
_MODEL_FILE = "a .keras file, e.g. runs/train/model.keras"


def build_parser():
    """The `keras-vitmix` argparse parser (`--backend` before or after the subcommand)."""
    # The subcommands' copy of `--backend` (one Action shared through `parents`) defaults
    # to SUPPRESS, so that it leaves the value given before the subcommand alone when not
    # given after it.
    backend = dict(choices=BACKENDS, help="Keras backend (default: KERAS_BACKEND)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", default=argparse.SUPPRESS, **backend)
    parser = argparse.ArgumentParser(prog="keras-vitmix", description=DESCRIPTION)
    parser.add_argument("--backend", default=None, **backend)
    commands = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(commands.add_parser, parents=[common])
    models = add("models", help="the registered model variants, as a table")
    models.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'vit_*'")
    models.add_argument("--params", action="store_true",
                        help="build each model and count its parameters now (imports Keras) rather than "
                             "reading the catalogue's counts")
    _add_train(add)
    _add_evaluate(add)
    _add_predict(add)
    _add_visualize(add)
    _add_export(add)
    return parser


def _add_train(add):
    recipe = " (default: the recipe's)"
    train = add("train", help="train a model with a recipe; writes a run folder")
    train.add_argument("--model", default="hybrid_mixer_vit_cifar_patch4_32", help="registered name or .keras path")
    train.add_argument("--dataset", default="digits", help="'digits', a TFDS name, or a train/<class>/ folder")
    train.add_argument("--recipe", choices=RECIPES, default=None,
                       help="training recipe, docs/recipes.md (default: chosen from the dataset's size)")
    train.add_argument("--pipeline", choices=PIPELINES, default="auto",
                       help="device: images held on the accelerator; tf.data: streamed (default: auto, "
                            "device when the training images fit)")
    train.add_argument("--validation-fraction", type=float, default=None,
                       help="share of each class held out for model selection (default: train's)")
    train.add_argument("--test-fraction", type=float, default=None,
                       help="share of each class held out and scored once at the end (default: train's)")
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
                       help="data_parallel: each batch split over every device (jax, tensorflow; either pipeline)")
    train.add_argument("--coordinator", default=None,
                       help="host:port of process 0 of a multi-process jax run (data_parallel; default: "
                            "KERAS_DISTRIBUTION_JOB_ADDRESSES or JAX_COORDINATOR_ADDRESS)")
    train.add_argument("--num-processes", type=int, default=None, help="processes of a multi-process run")
    train.add_argument("--process-id", type=int, default=None, help="this process's id, 0 on the coordinator")
    train.add_argument("--output", default="runs/train", help="run folder")
    train.add_argument("--seed", type=int, default=0)
    adapt = train.add_argument_group("adapting a pretrained model (docs/adapting.md)")
    adapt.add_argument("--weights", default=None,
                       help="'timm', 'timm:<timm name>', a timm .safetensors/.pth/.bin, or a .keras/.weights.h5 of "
                            "ours; the head is new where the classes differ (default recipe: finetune)")
    adapt.add_argument("--freeze", choices=("backbone",), default=None,
                       help="backbone: a linear probe, the classifier alone trains")
    adapt.add_argument("--layer-decay", type=float, default=None,
                       help="layer-wise learning-rate decay in (0, 1], 1: off" + recipe)
    adapt.add_argument("--teacher", default=None, metavar="PATH_OR_NAME",
                       help="a .keras classifier or a registered name (timm weights) to distil from")
    adapt.add_argument("--distillation", choices=("hard", "soft"), default=None,
                       help="hard: the teacher's argmax (DeiT's; default with --teacher); soft: KL at --distillation-tau")
    adapt.add_argument("--distillation-alpha", type=float, default=None,
                       help="weight of the distillation term (default 0.5)")
    adapt.add_argument("--distillation-tau", type=float, default=None, help="soft distillation's temperature (default 1)")


def _add_evaluate(add):
    run = " (default: what the model's run used)"
    evaluate = add("evaluate", help="accuracy and a confusion matrix of a saved model")
    evaluate.add_argument("--model", required=True, help=_MODEL_FILE)
    evaluate.add_argument("--dataset", default=None,
                          help="'digits', a TFDS name or a folder (default: the dataset the model's run recorded)")
    evaluate.add_argument("--split", choices=("train", "validation", "test"), default=None,
                          help="default: test")
    evaluate.add_argument("--test-time-flip", action=argparse.BooleanOptionalAction, default=None,
                          help="average each image's prediction with its mirror's" + run)
    evaluate.add_argument("--pipeline", choices=PIPELINES, default=None, help="how the split is read" + run)
    evaluate.add_argument("--batch-size", type=int, default=None, help="default: the run's, else 128")
    evaluate.add_argument("--output", default=None, help="folder for confusion_matrix.png (default: the model's)")


def _add_predict(add):
    predict = add("predict", help="the most probable classes of images, by name")
    predict.add_argument("--model", required=True, help=_MODEL_FILE)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG, BMP or GIF files")
    predict.add_argument("--top", type=int, default=5, metavar="K", help="classes shown per image (default: 5)")


def _add_visualize(add):
    visualize = add("visualize", help="attention maps (or Mixer weights) of a saved model")
    visualize.add_argument("--model", required=True, help=_MODEL_FILE)
    visualize.add_argument("--image", default=None, help="an image file; default: a test image of the run's dataset")
    visualize.add_argument("--layer", default=None, help="block name, e.g. block_0 (default: the last)")
    visualize.add_argument("--head", type=int, default=None, help="head index (default: mean of heads)")
    visualize.add_argument("--query", default=None, help="query patch as ROW,COL or an index (default: centre)")
    visualize.add_argument("--output", default=None, help="folder for the figures (default: <model folder>/attention)")
    visualize.add_argument("--animate", action="store_true", help="also a GIF stepping the query over all patches")


def _add_export(add):
    export = add("export", help="a SavedModel or ONNX file of a saved model, for serving")
    export.add_argument("--model", required=True, help=_MODEL_FILE)
    export.add_argument("--output", required=True, help="a directory (tf_saved_model) or a file (onnx)")
    export.add_argument("--format", choices=("tf_saved_model", "onnx"), default="tf_saved_model")
    export.add_argument("--image-dtype", choices=("uint8", "float32"), default="uint8", help="dtype of served images")
    export.add_argument("--batch-size", type=int, default=None, help="a fixed batch size (default: any)")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default: tf2onnx's)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export")
    export.add_argument("--attention", action="store_true",
                        help="also serve every attention block's scores and the attention rollout map")
