"""Data parallelism on two virtual CPU devices, in a subprocess (device counts are fixed at
import): one step on two replicas gives the loss and the weights of one device."""

import json
import os
import subprocess
import sys

import keras
import pytest

SCRIPT = r"""
import json, os
import numpy as np
backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_vitmix import applications, training

rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (16, 16, 16, 3)).astype("float32")
y = (np.arange(16) % 10).astype("int32")

def build(clipnorm=None):
    model = applications.MLPMixer(patch_size=4, hidden_dim=32, num_layers=1, input_shape=(16, 16, 3), classes=10)
    training.compile_for_training(
        model, total_steps=10, learning_rate=1e-2, warmup_steps=0, clipnorm=clipnorm, jit_compile=False
    )
    return model

single = build()
weights = single.get_weights()
loss_single = float(single.train_on_batch(x, y, return_dict=True)["loss"])
with training.distribution_scope("data_parallel"):
    parallel = build()
    clipnorm = build(clipnorm=1.0).optimizer.global_clipnorm  # the recipe's default
parallel.set_weights(weights)
loss_parallel = float(parallel.train_on_batch(x, y, return_dict=True)["loss"])
if backend == "jax":
    kernel = parallel.trainable_variables[0].value
    replicas = len(keras.distribution.distribution().device_mesh.devices.flatten())
    placed = len(kernel.sharding.device_set)
else:
    replicas = parallel.distribute_strategy.num_replicas_in_sync
    placed = len(parallel.trainable_variables[0].value.values)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), parallel.get_weights()))
print("REPORT" + json.dumps(dict(loss_single=loss_single, loss_parallel=loss_parallel, replicas=replicas, placed=placed, weight_diff=diff, clipnorm=clipnorm)))
"""


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() == "torch", reason="torch refuses data_parallel (tested in test_training)")
def test_one_step_on_two_replicas_matches_one_device():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(next(l for l in run.stdout.splitlines() if l.startswith("REPORT"))[6:])
    assert report["replicas"] == 2 and report["placed"] == 2, report
    assert abs(report["loss_single"] - report["loss_parallel"]) < 1e-4, report
    assert report["weight_diff"] < 1e-4, report
    # Keras clips per replica under tf.distribute, so the recipe turns clipping off there.
    assert report["clipnorm"] == (None if keras.backend.backend() == "tensorflow" else 1.0), report
