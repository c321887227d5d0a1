"""keras_vitmix._malloc: large freed blocks are kept and reused, not mapped afresh."""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_vitmix import _malloc

# Allocates, touches and frees a 96 MB block a few times
# from a new thread (its own arena, as XLA's worker threads), after importing
# keras_vitmix or not, and prints the page faults per block of the last two rounds.
PROBE = r"""
import ctypes, ctypes.util, json, resource, sys, threading
if sys.argv[1] == "import":
    import keras_vitmix
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 96 * 2**20
def rounds():
    for i in range(4):
        if i == 2:
            out["start"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(ctypes.c_size_t(size))
        ctypes.memset(block, 1, size)
        libc.free(block)
    out["faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - out["start"]) / 2
out = {}
worker = threading.Thread(target=rounds)
worker.start(); worker.join()
print(json.dumps(out))
"""

needs_glibc = pytest.mark.skipif(_malloc.glibc() is None, reason="mallopt is glibc's (Linux)")


def faults_per_block(mode, importing=True):
    env = {**os.environ, _malloc.ENV: mode}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "import" if importing else "no"], env=env, capture_output=True, text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])["faults"]


@needs_glibc
def test_importing_keras_vitmix_makes_a_freed_large_block_reused():
    pages = 96 * 2**20 // 4096
    # glibc's defaults: every round maps the block afresh, one fault per page.
    assert faults_per_block("system") > 0.9 * pages
    assert faults_per_block("reuse", importing=False) > 0.9 * pages
    # Tuned: the block freed in round 2 serves round 3 without faults.
    assert faults_per_block("reuse") < 0.02 * pages


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA:CPU's step buffers (JAX)")
@needs_glibc
def test_jax_training_step_reuses_its_buffer():
    """`seed_mixer`'s training step at batch 64 allocates a 76 MB buffer per call. With
    reuse, an early step may still fault while the heap settles (one step of the first
    five did, 13,000 faults, in one run of 25 steps), so the median step is compared."""
    script = r"""
import json, resource
import numpy as np, keras
import keras_vitmix
from keras_vitmix.applications import create_model
model = create_model("seed_mixer", dropout_rate=0.0)
model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
x = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype("float32"); y = np.arange(64) % 10
faults = []
for _ in range(12):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model.train_on_batch(x, y)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(json.dumps(sorted(faults[6:])[3]))  # the median step after 6 warm-up steps
"""
    faults = {}
    for mode in ("reuse", "system"):
        env = {**os.environ, _malloc.ENV: mode, "KERAS_BACKEND": "jax"}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        faults[mode] = json.loads(out.stdout.splitlines()[-1])
    assert faults["system"] > 10_000  # 76 MB = 18,500 pages mapped again per step
    assert faults["reuse"] < 0.05 * faults["system"]


def test_system_leaves_malloc_alone(monkeypatch):
    monkeypatch.setitem(_malloc._state, "done", False)
    monkeypatch.setattr(_malloc, "glibc", lambda: pytest.fail("must not reach for libc"))
    assert _malloc.tune({_malloc.ENV: "System"}) is False
    assert _malloc.tune({}) is False  # once per process: the first answer stays


def test_other_libc_is_left_alone(monkeypatch):
    monkeypatch.setitem(_malloc._state, "done", False)
    monkeypatch.setattr(_malloc, "glibc", lambda: None)
    assert _malloc.tune({}) is False


def test_each_setting_reaches_mallopt(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 0 if param == _malloc.M_TOP_PAD else 1

    monkeypatch.setitem(_malloc._state, "done", False)
    monkeypatch.setattr(_malloc, "glibc", FakeLibc)
    assert _malloc.tune({}) is None  # glibc refused one setting
    assert calls == [(-8, 1), (-4, 0), (-1, 2**31 - 1), (-2, 2**31 - 1)]
    assert _malloc.tune({}) is None and len(calls) == 4  # once per process, refused or not


def test_unknown_choice_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(_malloc._state, "done", False)
    with pytest.raises(ValueError, match=r"KERAS_VITMIX_MALLOC must be 'reuse'.*Received: KERAS_VITMIX_MALLOC='fast'"):
        _malloc.tune({_malloc.ENV: "fast"})
