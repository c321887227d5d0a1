"""The torch routes of keras_vitmix's layers, each against what it replaces, in whole
models.

Under torch, Keras runs every call eagerly, in Python, so work that JAX and TensorFlow
trace once is paid at every step. This script times the route that avoids some of it:

- `direct_sublayer_calls`: a block calls its built sublayers' `call` directly instead
  of through Keras's `Layer.__call__` (`keras_vitmix.layers._platform.call_sublayer`).

For each route, model and batch size it builds two copies with the same weights, one
run with the route and one without (the route is switched off around each of the second
copy's calls), times them alternately in balanced order for inference
(`predict_on_batch`) and a training step (`train_on_batch`, AdamW), and reports the
median of per-round ratios (route ÷ without, below 1 = the route is faster) and the
largest difference between the two copies' predictions. It prints a table and appends
it to benchmarks/RESULTS.md. It runs in its own process with KERAS_BACKEND=torch.

    python benchmarks/torch_routes.py
    python benchmarks/torch_routes.py --models vit_tiny_patch16_224 --batch-sizes 1 --repeats 10
"""

import contextlib
from pathlib import Path

from _twins import emit_twin_rows, route_main, route_parser  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
MODELS = ["vit_tiny_patch16_224", "mixer_s16_224", "hybrid_mixer_vit_cifar_patch4_32"]
ROUTES = {"direct_sublayer_calls": MODELS}


def parse(argv):
    parser = route_parser(__doc__, ROUTES, REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    return parser.parse_args(argv)


@contextlib.contextmanager
def without(route):
    """While open, the layers run what `route` replaces."""
    from keras_vitmix.layers import _platform

    assert route == "direct_sublayer_calls", route
    original = _platform.DIRECT_SUBLAYER_CALLS
    _platform.DIRECT_SUBLAYER_CALLS = False  # every sublayer through Keras's __call__
    try:
        yield
    finally:
        _platform.DIRECT_SUBLAYER_CALLS = original


def worker(args):
    for route in args.routes:
        sides = {"route": lambda model: contextlib.nullcontext(), "without": lambda model, r=route: without(r)}
        for batch in args.batch_sizes:
            args.batch_size = batch
            emit_twin_rows(args.models or ROUTES[route], {}, args, sides, every_call=True, route=route)


def main(argv=None):
    return route_main(
        argv, parse, worker, __file__, "torch", "torch routes against what they replace",
        "the two copies share their weights.",
    )


if __name__ == "__main__":
    main()
