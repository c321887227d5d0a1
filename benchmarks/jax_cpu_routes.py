"""The JAX-on-CPU routes of keras_vitmix's layers, each against the computation it
replaces, in whole models.

Under JAX on the CPU some layers compute differently from Keras's own layers because
XLA:CPU runs the other form slower (keras_vitmix/layers). This script checks the routes
that a model's compiled step takes as a whole:

- `attention_slices`: `MultiHeadSelfAttention` cuts the batch into one slice per CPU
  (XLA:CPU runs each slice's fused attention kernel on one thread) against one kernel
  for the whole batch;
- `gelu_erf`: `Dense(activation="gelu")` computes exact GELU with `erf` against Keras's
  "gelu" under JAX (`jax.nn.gelu`, written with `erfc`);
- `layer_norm_vjp`: `LayerNormalization` in one pass with a hand-written gradient
  against Keras's computation (its scale and shift broadcast to full size, and the
  gradient JAX derives from it).

For each route and model it builds two copies with the same weights, one compiled with
the route and one without (the route is switched off while the second copy's steps are
traced), times them alternately in balanced order for inference (`predict_on_batch`)
and a training step (`train_on_batch`, AdamW), and reports the median of per-round
ratios (route ÷ without, below 1 = the route is faster) and the largest difference
between the two copies' predictions. It prints a table and appends it to
benchmarks/RESULTS.md. JAX only; it runs in its own process with KERAS_BACKEND=jax.

    python benchmarks/jax_cpu_routes.py
    python benchmarks/jax_cpu_routes.py --routes attention_slices --models vit_tiny_patch16_224 --repeats 10
"""

import contextlib
from pathlib import Path

from _twins import emit_twin_rows, route_main, route_parser  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
# name: (create_model overrides, batch size)
MODELS = {
    "vit_tiny_patch16_224": ({}, 32),
    "mixer_s16_224": ({}, 32),
    "hybrid_mixer_vit_cifar_patch4_32": ({}, 128),
}
# route: the models it runs in (the others have no layer that takes it)
ROUTES = {
    "attention_slices": ("vit_tiny_patch16_224", "hybrid_mixer_vit_cifar_patch4_32"),
    "gelu_erf": ("vit_tiny_patch16_224", "mixer_s16_224", "hybrid_mixer_vit_cifar_patch4_32"),
    "layer_norm_vjp": ("vit_tiny_patch16_224", "mixer_s16_224", "hybrid_mixer_vit_cifar_patch4_32"),
}


def parse(argv):
    parser = route_parser(__doc__, ROUTES, REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument("--batch-size", type=int, default=None, help="instead of each model's batch above")
    return parser.parse_args(argv)


@contextlib.contextmanager
def without(route):
    """While open, the layers trace the computation `route` replaces."""
    if route == "attention_slices":
        from keras_vitmix.layers import attention as module

        name, replacement = "_cpu_threads", lambda: 1  # one slice: one kernel for the batch
    elif route == "layer_norm_vjp":
        from keras_vitmix.layers import normalization as module

        name, replacement = "_jax_on_cpu", lambda: False  # Keras's computation
    else:
        import keras

        from keras_vitmix.layers import linear as module

        name, replacement = "gelu", keras.activations.gelu
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def worker(args):
    for route in args.routes:
        sides = {"route": lambda model: contextlib.nullcontext(), "without": lambda model, r=route: without(r)}
        emit_twin_rows(args.models or ROUTES[route], MODELS, args, sides, route=route)


def main(argv=None):
    return route_main(
        argv, parse, worker, __file__, "jax", "JAX-on-CPU routes against the computations they replace",
        "the two copies share their weights and the options of `jax_cpu_compiler_options`.",
    )


if __name__ == "__main__":
    main()
