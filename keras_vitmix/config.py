"""Public switches of keras_vitmix: the fast routes and the opt-in allocator tuning.

Importing `keras_vitmix` changes nothing outside the package: no allocator setting, no
compiler flag, no global Keras policy. What follows is for programs that choose it.

Fast routes. Some layers compute on one backend with a kernel that beats Keras's generic
op there (for example `torch.nn.functional.linear` under torch, or a flattened matrix
product under JAX). They give the same numbers as the public Keras path (tested within
1e-5 in float32 on every backend) and fall back to it by themselves when a Keras
internal they need is missing. `set_fast_routes(False)` turns every one of them off, for
debugging or to compare; the environment variable `KERAS_VITMIX_FAST_ROUTES=0`, read
when `keras_vitmix` is imported, does the same from the outside. docs/performance.md
says why each route exists, with its numbers.

Allocator. `tune_malloc()` makes glibc's malloc keep and reuse large freed blocks (one
arena, no `mmap`, up to 2 GiB kept at the top of the heap). XLA:CPU allocates each
compiled step's temporary buffer afresh; without the tuning the kernel maps and zeroes
every page of it at each step. The price is that freed memory stays with the process, so
only a program that owns its process should ask for it: the `keras-vitmix` command and
the benchmarks do. glibc's own environment variables do the same without code, set
before Python starts: `MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=2147483647`.
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


_state = {"fast_routes": _fast_routes_from_env()}


def set_fast_routes(enabled):
    """Turns the backend-specific fast routes on (`True`, the default) or off.

    Off, every layer computes through Keras's public ops, as `keras.layers` would.
    Under JAX and TensorFlow a change applies to steps compiled after it: call it before
    `fit`, `predict` or `evaluate` first run (or recompile the model).

    Args:
        enabled: bool.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"`enabled` must be True or False. Received: enabled={enabled!r}")
    _state["fast_routes"] = enabled


def fast_routes_enabled():
    """Whether the layers may take their backend-specific fast routes."""
    return _state["fast_routes"]


@contextlib.contextmanager
def fast_routes(enabled):
    """`set_fast_routes(enabled)` while the `with` block runs, then the previous setting.

    Example:

    >>> from keras_vitmix import config
    >>> with config.fast_routes(False):
    ...     config.fast_routes_enabled()
    False
    """
    previous = fast_routes_enabled()
    set_fast_routes(enabled)
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
