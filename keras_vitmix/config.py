"""Public switches of keras_vitmix: the fast routes and the opt-in allocator tuning.

Importing `keras_vitmix` changes nothing outside the package: no allocator setting, no
compiler flag, no global Keras policy. What follows is for programs that choose it.

Fast routes. Some layers compute on one backend with a kernel that beats Keras's generic
op there (for example `torch.nn.functional.linear` under torch, or a flattened matrix
product under JAX). They give the same numbers as the public Keras path (tested within
1e-5 in float32 on every backend) and fall back to it by themselves when a Keras
internal they need is missing. `set_fast_routes(False)` turns every one of them off, for
debugging or to compare; `set_fast_routes(False, routes=[name])` turns off the routes
named (`FAST_ROUTES` lists them). The environment variable `KERAS_VITMIX_FAST_ROUTES=0`,
read when `keras_vitmix` is imported, turns them all off from the outside.
docs/performance.md says why each route exists, with its numbers.

Allocator. `tune_malloc()` makes glibc's malloc keep and reuse large freed blocks (one
arena, no `mmap`, up to 2 GiB kept at the top of the heap). XLA:CPU allocates each
compiled step's temporary buffer afresh; without the tuning the kernel maps and zeroes
every page of it at each step. The price is that freed memory stays with the process, so
only a program that owns its process should ask for it: the `keras-vitmix` command and
the benchmarks do. glibc's own environment variables do the same without code, set
before Python starts: `MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=2147483647`.

XLA:CPU. `tune_xla_cpu()` adds one XLA option to `XLA_FLAGS` for the process (YNNPACK
for reductions only); it pays for ConvMixer's and Mixer's JAX training steps on the CPU
and costs ViT's, so the `keras-vitmix` command opts in under JAX and a library import
does not.
"""

import contextlib
import os

from keras_vitmix import _malloc

FAST_ROUTES_ENV = "KERAS_VITMIX_FAST_ROUTES"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _fast_routes_from_env(environ=None):
    environ = os.environ if environ is None else environ
    value = environ.get(FAST_ROUTES_ENV, "1").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{FAST_ROUTES_ENV} must be 1 or 0 (also true/false, yes/no, on/off). "
        f"Received: {FAST_ROUTES_ENV}={environ.get(FAST_ROUTES_ENV)!r}"
    )


# name: what the route computes, and on which backend (docs/performance.md says why).
_ROUTES = {
    "dense_torch": "Dense as one torch.nn.functional.linear call (bias folded in), torch",
    "dense_jax": "Dense on tokens as one 2-D matrix product, GELU in its erf form, JAX",
    "layer_norm_torch": "LayerNormalization as one torch.nn.functional.layer_norm call, torch",
    "batch_norm_torch": "BatchNormalization at inference as one torch batch_norm call, torch",
    "attention_jax_cpu": "self-attention with heads first, one slice of the batch per CPU, JAX on the CPU",
    "attention_torch": "self-attention as scaled_dot_product_attention on strided views, torch",
    "conv_torch": "Conv2D and DepthwiseConv2D as one channels-last conv2d, torch",
    "depthwise_jax_cpu": "DepthwiseConv2D as shifted multiply-adds with a hand-written gradient, JAX on the CPU",
    "depthwise_tf_xla": "DepthwiseConv2D as shifted multiply-adds inside XLA functions, TensorFlow on the CPU",
    "sublayer_calls_torch": "blocks and models call their built layers' `call` without `Layer.__call__`, torch",
}
FAST_ROUTES = tuple(_ROUTES)

_state = {"fast_routes": frozenset(FAST_ROUTES) if _fast_routes_from_env() else frozenset()}


def _route_names(routes):
    if routes is None:
        return frozenset(FAST_ROUTES)
    if isinstance(routes, str):
        routes = (routes,)
    try:
        names = frozenset(routes)
    except TypeError:
        raise TypeError(f"`routes` must be None or a list of route names. Received: routes={routes!r}") from None
    unknown = sorted(str(name) for name in names - frozenset(FAST_ROUTES))
    if unknown:
        raise ValueError(f"Unknown fast route(s) {unknown}; known: {list(FAST_ROUTES)}. Received: routes={routes!r}")
    return names


def set_fast_routes(enabled, routes=None):
    """Turns the backend-specific fast routes on (`True`, the default) or off.

    Off, a layer computes through Keras's public ops, as `keras.layers` would.
    Under JAX and TensorFlow a change applies to steps compiled after it: call it before
    `fit`, `predict` or `evaluate` first run (or recompile the model).

    Args:
        enabled: bool.
        routes: None (every route), or names from `FAST_ROUTES` (a list, or one name):
            only these are switched, the others keep their setting.

    Example:

    >>> from keras_vitmix import config
    >>> config.set_fast_routes(False, routes=["dense_torch"])
    >>> config.fast_routes_enabled("dense_torch"), config.fast_routes_enabled("dense_jax")
    (False, True)
    >>> config.set_fast_routes(True)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"`enabled` must be True or False. Received: enabled={enabled!r}")
    names = _route_names(routes)
    _state["fast_routes"] = _state["fast_routes"] | names if enabled else _state["fast_routes"] - names


def fast_routes_enabled(route=None):
    """Whether the fast route `route` (a name from `FAST_ROUTES`) is on; without a name,
    whether any fast route is."""
    if route is None:
        return bool(_state["fast_routes"])
    if route not in _ROUTES:
        raise ValueError(f"Unknown fast route; known: {list(FAST_ROUTES)}. Received: route={route!r}")
    return route in _state["fast_routes"]


@contextlib.contextmanager
def fast_routes(enabled, routes=None):
    """`set_fast_routes(enabled, routes)` while the `with` block runs, then the previous
    settings.

    Example:

    >>> from keras_vitmix import config
    >>> with config.fast_routes(False):
    ...     config.fast_routes_enabled()
    False
    """
    previous = _state["fast_routes"]
    set_fast_routes(enabled, routes)
    try:
        yield
    finally:
        _state["fast_routes"] = previous


def tune_malloc():
    """Makes glibc's malloc keep and reuse large freed blocks, for this whole process.

    Call it early, before a model runs: glibc's arena setting only reaches threads that
    have not allocated yet. It is applied once per process; `KERAS_VITMIX_MALLOC=system`
    in the environment refuses it (for the `keras-vitmix` command, which calls this).
    Elsewhere than Linux with glibc it does nothing.

    Returns:
        True if glibc took every setting; False where the environment refused it or the C
        library is not glibc; None if glibc refused one setting (the others stay).
    """
    return _malloc.tune()


def malloc_tuned():
    """What `tune_malloc()` returned in this process, or None if it was not called."""
    return _malloc._state["tuned"] if _malloc._state["done"] else None


XLA_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE",)
_xla = {"checked": None}


def tune_xla_cpu(environ=None):
    """Adds keras_vitmix's XLA:CPU option (`XLA_CPU_FLAGS`) to `XLA_FLAGS`, for this process.

    XLA:CPU hands matrix products and reductions to its YNNPACK library by default; the
    option keeps YNNPACK for reductions only. Against XLA's defaults on a 2-core AVX-512
    EPYC, JAX training steps took 0.87-0.90x the time for ConvMixer-768/32 and 0.95x for
    Mixer-S/16, but 1.11x for ViT-Ti/16 (docs/performance.md, "XLA:CPU option"). It is
    process-wide, so it is opt-in: the `keras-vitmix` command and `benchmarks/speed.py`
    call it under JAX. XLA reads `XLA_FLAGS` once, when its CPU backend starts, so call
    this before the first JAX computation. A flag already in `XLA_FLAGS` is left as it
    is. XLA aborts the process on a flag it does not know, so the first call checks in
    a child process that this jaxlib takes the option, and adds nothing if not.

    Returns:
        The flags added: an empty tuple when they were there already or this jaxlib
        refuses them.
    """
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    present = {flag.split("=", 1)[0] for flag in current.split()}
    added = tuple(flag for flag in XLA_CPU_FLAGS if flag.split("=", 1)[0] not in present)
    if not added or not _jax_takes(added):
        return ()
    environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def _jax_takes(flags):
    """Whether a jaxlib compiles with `flags` in `XLA_FLAGS` (checked once, in a child)."""
    if _xla["checked"] is None:
        import subprocess
        import sys

        code = "import jax, numpy; jax.jit(lambda x: x + 1)(numpy.zeros(1)).block_until_ready()"
        env = {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
        try:
            result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
            _xla["checked"] = result.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _xla["checked"] = False
    return _xla["checked"]
