"""Allocator tuning is opt-in: `import keras_vitmix` leaves glibc's malloc as it is, and
`keras_vitmix.config.tune_malloc()` makes it keep and reuse large freed blocks."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import pytest

from keras_vitmix import _malloc, config

needs_glibc = pytest.mark.skipif(_malloc.glibc() is None, reason="mallopt is glibc's (Linux)")

# The first line of every probe: nothing, `import keras_vitmix`, or the opt-in as well.
SETUP = {
    "none": "",
    "import": "import keras_vitmix",
    "tune": "import keras_vitmix\nassert keras_vitmix.config.tune_malloc() is True",
}

# Frees a 512 MiB NumPy array and prints how much of it the process still holds.
FREED_ARRAY = r"""
import json, os
import numpy as np
def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = resident_mib()
block = np.ones(512 * 2**20, dtype=np.uint8)  # every page written
held = resident_mib() - before
del block
print(json.dumps({"held": held, "kept": resident_mib() - before}))
"""

# Allocates, touches and frees a 96 MB block a few times from a new thread (its own
# arena, as XLA's worker threads), and prints the page faults per block of the last two.
THREAD_BLOCKS = r"""
import ctypes, ctypes.util, json, resource, threading
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


def probe(setup, script, **env):
    """Runs `script` after `SETUP[setup]` in a fresh process; returns its JSON line."""
    environ = {**os.environ, **env}
    environ.pop(_malloc.ENV, None)
    out = subprocess.run([sys.executable, "-c", SETUP[setup] + "\n" + script], env=environ, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@needs_glibc
def test_import_returns_a_freed_block_to_the_system_and_tune_malloc_keeps_it():
    imported, tuned = probe("import", FREED_ARRAY), probe("tune", FREED_ARRAY)
    assert imported["held"] > 500 and tuned["held"] > 500  # the array was resident
    assert imported["kept"] < 32, imported  # glibc's defaults: unmapped on free
    assert tuned["kept"] > 480, tuned  # tuned: kept at the top of the heap for the next step


@needs_glibc
def test_only_tune_malloc_makes_a_worker_threads_freed_block_reused():
    pages = 96 * 2**20 // 4096
    # glibc's defaults, with or without the import: every round maps the block afresh.
    assert probe("none", THREAD_BLOCKS)["faults"] > 0.9 * pages
    assert probe("import", THREAD_BLOCKS)["faults"] > 0.9 * pages
    # Tuned: the block freed in round 2 serves round 3 without faults.
    assert probe("tune", THREAD_BLOCKS)["faults"] < 0.02 * pages


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA:CPU's step buffers (JAX)")
@needs_glibc
def test_tuned_jax_training_step_reuses_its_buffer():
    """`seed_mixer`'s training step at batch 64 allocates a 76 MB buffer per call. Tuned,
    an early step may still fault while the heap settles (one step of the first five
    did, 13,000 faults, in one run of 25 steps), so the median step is compared."""
    script = r"""
import json, resource
import numpy as np
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
    faults = {setup: probe(setup, script, KERAS_BACKEND="jax") for setup in ("import", "tune")}
    assert faults["import"] > 10_000  # 76 MB = 18,500 pages mapped again per step
    assert faults["tune"] < 0.05 * faults["import"]


@pytest.fixture
def fresh_state(monkeypatch):
    """`_malloc`'s once-per-process state, as in a process that has not tuned yet."""
    monkeypatch.setitem(_malloc._state, "done", False)
    monkeypatch.setitem(_malloc._state, "tuned", None)


def test_tune_malloc_reports_what_glibc_took(fresh_state, monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(_malloc, "glibc", FakeLibc)
    monkeypatch.delenv(_malloc.ENV, raising=False)
    assert config.malloc_tuned() is None  # not asked for yet
    assert config.tune_malloc() is True and config.malloc_tuned() is True
    assert calls == [(-8, 1), (-4, 0), (-1, 2**31 - 1), (-2, 2**31 - 1)]
    assert config.tune_malloc() is True and len(calls) == 4  # once per process


def test_system_leaves_malloc_alone(fresh_state, monkeypatch):
    monkeypatch.setattr(_malloc, "glibc", lambda: pytest.fail("must not reach for libc"))
    assert _malloc.tune({_malloc.ENV: "System"}) is False
    assert _malloc.tune({}) is False  # once per process: the first answer stays


def test_other_libc_is_left_alone(fresh_state, monkeypatch):
    monkeypatch.setattr(_malloc, "glibc", lambda: None)
    assert _malloc.tune({}) is False


def test_a_refused_setting_is_reported_and_the_others_stay(fresh_state, monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 0 if param == _malloc.M_TOP_PAD else 1

    monkeypatch.setattr(_malloc, "glibc", FakeLibc)
    assert _malloc.tune({}) is None  # glibc refused one setting
    assert len(calls) == 4
    assert _malloc.tune({}) is None and len(calls) == 4  # once per process, refused or not


def test_unknown_choice_is_a_clear_error(fresh_state):
    with pytest.raises(ValueError, match=r"KERAS_VITMIX_MALLOC must be 'reuse'.*Received: KERAS_VITMIX_MALLOC='fast'"):
        _malloc.tune({_malloc.ENV: "fast"})


def test_tune_xla_cpu_adds_its_flag_once_and_keeps_the_users(monkeypatch):
    from keras_vitmix import config

    monkeypatch.setattr(config, "_jax_takes", lambda flags: True)
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert config.tune_xla_cpu(environ) == config.XLA_CPU_FLAGS
    assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", *config.XLA_CPU_FLAGS]
    assert config.tune_xla_cpu(environ) == ()  # already there: unchanged
    assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", *config.XLA_CPU_FLAGS]
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DEFAULT"}
    assert config.tune_xla_cpu(mine) == ()  # the user's own value of the flag wins
    assert mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DEFAULT"


def test_tune_xla_cpu_adds_nothing_where_jaxlib_refuses_the_flag(monkeypatch):
    from keras_vitmix import config

    monkeypatch.setattr(config, "_jax_takes", lambda flags: False)
    environ = {}
    assert config.tune_xla_cpu(environ) == () and "XLA_FLAGS" not in environ


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_this_jaxlib_takes_the_flag_and_refuses_an_unknown_one(monkeypatch):
    from keras_vitmix import config

    monkeypatch.setitem(config._xla, "checked", None)
    assert config._jax_takes(config.XLA_CPU_FLAGS) is True
    monkeypatch.setitem(config._xla, "checked", None)
    assert config._jax_takes(("--xla_cpu_no_such_flag=1",)) is False  # XLA aborts on it: the child says so
