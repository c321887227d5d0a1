"""A `.keras` file saved under one backend loads under another with the same outputs."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix.applications import create_model

# One small model of every family, with and without a class token.
MODELS = ["seed_vit", "vit_cifar_patch4_32", "seed_mixer", "seed_convmixer", "seed_mixer_mixer_vit", "seed_convmixer_mixer"]
BACKENDS = ("tensorflow", "jax", "torch")

LOADER = """
import json, sys
import numpy as np
import keras
import keras_vitmix  # registers the serializable classes

folder, names = sys.argv[1], sys.argv[2].split(",")
report = {}
for name in names:
    model = keras.saving.load_model(f"{folder}/{name}.keras")
    data = np.load(f"{folder}/{name}.npz")
    # A direct call, not predict(): the weights are what crosses backends, and JAX would
    # compile a predict step for each model.
    out = keras.ops.convert_to_numpy(model(data["x"], training=False))
    report[name] = float(np.max(np.abs(out - data["y"])))
print("REPORT" + json.dumps({"backend": keras.backend.backend(), "diffs": report}))
"""


@pytest.mark.slow
def test_saved_model_loads_under_the_next_backend(tmp_path):
    here = keras.backend.backend()
    rng = np.random.default_rng(0)
    for name in MODELS:
        model = create_model(name)
        # Every weight moved off its initial value (zero biases, unit scales, BatchNorm's
        # moving statistics), without training: no step to compile per model.
        for weight in model.weights:
            value = keras.ops.convert_to_numpy(weight)
            if not np.issubdtype(value.dtype, np.floating):
                continue  # a dropout layer's seed state
            value = value * rng.uniform(0.5, 1.5, value.shape)
            if "variance" not in weight.path:
                value = value + rng.normal(0.0, 0.05, value.shape)
            weight.assign(value.astype(weight.dtype))
        x = rng.uniform(0, 255, (4, *model.input_shape[1:])).astype("float32")
        model.save(tmp_path / f"{name}.keras")
        np.savez(tmp_path / f"{name}.npz", x=x, y=keras.ops.convert_to_numpy(model(x, training=False)))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # Each backend's run loads under the next backend in BACKENDS (tensorflow -> jax ->
    # torch -> tensorflow): over the three runs of `make test`, every backend saves once
    # and loads once, with half the loading processes of every pair.
    for other in (BACKENDS[(BACKENDS.index(here) + 1) % len(BACKENDS)],):
        env = {**os.environ, "KERAS_BACKEND": other, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": repo}
        run = subprocess.run(
            [sys.executable, "-c", LOADER, str(tmp_path), ",".join(MODELS)],
            env=env, capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, f"loading under {other} failed:\n{run.stderr[-3000:]}"
        line = next(l for l in run.stdout.splitlines() if l.startswith("REPORT"))
        report = json.loads(line[len("REPORT"):])
        assert report["backend"] == other
        assert set(report["diffs"]) == set(MODELS)
        for name, diff in report["diffs"].items():
            assert diff <= 1e-4, f"{name}: saved under {here}, loaded under {other}, max diff {diff}"
