"""The `keras-vitmix` command.

`--backend` is applied before Keras is imported, so it must be handled here first.
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
    return parser


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


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return {"models": _models}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
