"""Makes glibc's malloc keep and reuse large freed blocks, so that XLA:CPU's per-step
buffers stop costing a page fault per 4 KiB page on every step.

Under JAX on the CPU, each call of a compiled step allocates the step's temporary buffer
(all of its intermediate values, packed by XLA: 76 MB for `seed_mixer`'s training step at
batch 64, about 2.1 GB for ViT-Ti/16's at batch 32) with `posix_memalign` from one of
XLA's worker threads, and frees it when the step ends. glibc serves a block that large
with a fresh `mmap` and gives it back with `munmap` on `free`: blocks over 32 MiB always
(its largest `mmap` threshold), and in a worker thread's arena any block over 64 MiB. So
the kernel maps and zeroes every page of the buffer again at each step: 540,000 page
faults per ViT-Ti training step, a quarter of its time on the project's 2-core machine.

`tune()` sets, with `mallopt`:
- `M_ARENA_MAX` 1: threads allocate from the main arena, the only one that can grow
  past 64 MiB without `mmap` (it grows the heap with `brk`);
- `M_MMAP_MAX` 0: no block is served by `mmap` while the heap can grow (glibc still falls
  back to `mmap` if it cannot);
- `M_TRIM_THRESHOLD` and `M_TOP_PAD` at their largest (2 GiB): up to 2 GiB of freed memory
  at the top of the heap is kept for the next step instead of being returned to the kernel.
Measured on a 2-core AVX2 EPYC (docs/performance.md, "malloc"): ViT-Ti/16's training
step under JAX went from 542,893 to 16,422 page faults per step and took 0.74x the time;
under torch, its inference took 0.86x.

The cost: memory a step freed stays with the process (up to 2 GiB more at the top of the
heap), as PyTorch's and TensorFlow's own caching allocators keep theirs. So importing
`keras_vitmix` does not call `tune()`: a program that owns its process opts in through
`keras_vitmix.config.tune_malloc()` (the `keras-vitmix` command and the benchmarks do),
early, because `M_ARENA_MAX` only acts on threads that have not allocated yet.

Set the environment variable `KERAS_VITMIX_MALLOC=system` to leave glibc's defaults.
Elsewhere than Linux with glibc (macOS, musl, Windows) `tune()` does nothing.
"""

import ctypes
import ctypes.util
import os

ENV = "KERAS_VITMIX_MALLOC"
# mallopt's parameter numbers (glibc's <malloc.h>).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
LARGEST = 2**31 - 1  # mallopt takes an int
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, LARGEST), (M_TOP_PAD, LARGEST))

_state = {"done": False, "tuned": None}


def glibc():
    """glibc's C library, or None where the process runs on another libc."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune(environ=None):
    """Applies `SETTINGS` once per process, unless `KERAS_VITMIX_MALLOC=system`.

    Returns:
        True if glibc accepted every setting, False if the environment variable opted
        out or this is not glibc, and None for a setting glibc refused (the others stay).
    """
    environ = os.environ if environ is None else environ
    if _state["done"]:
        return _state["tuned"]
    choice = environ.get(ENV, "reuse").strip().lower()
    if choice not in ("reuse", "system"):
        raise ValueError(f"{ENV} must be 'reuse' (the default) or 'system'. Received: {ENV}={choice!r}")
    libc = None if choice == "system" else glibc()
    if libc is None:
        _state["tuned"] = False
    else:
        accepted = [libc.mallopt(param, value) == 1 for param, value in SETTINGS]
        _state["tuned"] = all(accepted) or None
    _state["done"] = True
    return _state["tuned"]
