"""XLA compiler options for the steps Keras compiles under JAX on the CPU.

Under JAX, `fit`, `evaluate` and `predict` run steps that Keras compiles with `jax.jit`.
On the CPU, XLA hands matrix products and reductions to its YNNPACK library by default.
On the project's machine (x86-64, AVX2, 2 cores) YNNPACK's matrix products ran slower
than XLA's own (Eigen) for these models, while its reductions ran faster (leaving them
out made ViT-Ti's training step 1.2-1.5x slower). Keeping YNNPACK for reductions only
made ViT-Ti's predict step 0.90x and its training step 0.84x of the defaults' time
(benchmarks/xla_options.py; benchmarks/RESULTS.md, "XLA:CPU: matrix products outside
YNNPACK"); the other registered families moved by 0.91-1.05x, within run-to-run noise
or faster. On an AVX-512 machine (AMD EPYC, 2026-11-24) YNNPACK's products caught up:
there the options took 0.88-1.01x of the defaults' inference time and 0.95-1.11x of
their training step, by model (ViT-Ti's step 1.03-1.06x, ConvMixer's 0.95-0.96x), over
three runs. Neither choice wins on both machines for every model, and the AVX2 machine's
gain is the larger, so the options stay the same on every CPU.

`Application` compiles its steps with `JAX_CPU_COMPILER_OPTIONS` unless its
`jax_cpu_compiler_options` attribute says otherwise; `{}` restores XLA's defaults. The
steps are built at the first `fit` / `evaluate` / `predict` after `compile()`, so a
change takes effect from then.
Other backends, accelerators and Keras with Flax NNX are left alone.
"""

import contextlib
import functools
import types
import warnings

import keras

from keras_vitmix.layers._platform import jax_on_cpu

# Read-only: every model shares it until one is given options of its own.
JAX_CPU_COMPILER_OPTIONS = types.MappingProxyType({"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"})

_accepted = {}


def options_accepted(options):
    """Whether this jaxlib's XLA accepts `options`; compiles a one-element program once.

    A jaxlib that renamed or dropped an option would otherwise fail the first `fit` or
    `predict` call. Here it warns once and the steps compile with XLA's defaults.
    """
    key = tuple(sorted(options.items()))
    if key not in _accepted:
        import jax
        import numpy as np

        try:
            jax.jit(lambda x: x + 1, compiler_options=dict(options))(np.zeros(1, "float32")).block_until_ready()
            _accepted[key] = True
        except Exception as error:  # XLA raises its own runtime error types
            warnings.warn(
                f"keras_vitmix: XLA rejected the compiler options {dict(options)} "
                f"({type(error).__name__}: {str(error)[:200]}); the JAX steps compile with "
                "XLA's defaults. Set `jax_cpu_compiler_options = {}` on the model to silence this.",
                stacklevel=3,
            )
            _accepted[key] = False
    return _accepted[key]


@contextlib.contextmanager
def jax_cpu_compiler_options(options):
    """While open, Keras's JAX trainer compiles its steps with `options` (JAX on the CPU only).

    Keras builds `fit`'s, `evaluate`'s and `predict`'s steps with the `jit` of
    `keras.src.backend.jax.trainer`; there is no public argument for compiler options,
    so this binds them into that `jit` while a `make_*_function` runs and restores it after.
    """
    from_module = None
    if options and jax_on_cpu() and not keras.config.is_nnx_enabled() and options_accepted(options):
        from keras.src.backend.jax import trainer as from_module

        if not callable(getattr(from_module, "jit", None)):
            from_module = None
    if from_module is None:
        yield
        return
    original = from_module.jit
    from_module.jit = functools.partial(original, compiler_options=dict(options))
    try:
        yield
    finally:
        from_module.jit = original
