"""Data parallelism on two virtual CPU devices, in a subprocess (device counts are fixed at
import): one step on two replicas gives the loss and the weights of one device, and
`train` on either feed gives a one-device run's losses with each batch split over both."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
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


TRAIN_SCRIPT = r"""
import json, os, sys
import numpy as np
backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_vitmix import training
from tests.small_models import small

shardings = []


@keras.saving.register_keras_serializable(package="test_distribution")
class Probe(keras.layers.Layer):
    # Records how the training batch reaching the network is laid out over the devices.
    def call(self, x, training=None):
        if backend == "jax" and training:
            import jax
            jax.debug.inspect_array_sharding(x, callback=lambda s: shardings.append(str(s)))
        return x


class Losses(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.values = []
    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs["loss"]))


def run(distribute, pipeline, out):
    keras.utils.set_random_seed(0)
    network = small("ConvMixer")
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, network(Probe()(inputs)))
    losses = Losses()
    metrics = training.train(
        model, "digits", image_size=16, epochs=int(sys.argv[2]), batch_size=32, augment=sys.argv[3],
        learning_rate=3e-3, distribute=distribute, pipeline=pipeline, output_dir=os.path.join(sys.argv[1], out),
        verbose=0, extra_callbacks=[losses], test_fraction=0.1,
    )
    return {"losses": losses.values[:5], "accuracy": metrics["test_accuracy"],
            "validation": metrics["validation_accuracy"], "distribution": metrics["distribution"],
            "pipeline": metrics["pipeline"], "reason": metrics["pipeline_reason"]}


report = {"single": run(None, sys.argv[4], "one")}
shardings.clear()
report["parallel"] = run("data_parallel", sys.argv[4], "two")
report["shardings"] = sorted(set(shardings))
print("REPORT" + json.dumps(report))
"""


def _train_twice(tmp_path, epochs, augment, pipeline):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path), str(epochs), augment, pipeline],
                         env=env, capture_output=True, text=True, timeout=900, cwd=repo)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(next(l for l in run.stdout.splitlines() if l.startswith("REPORT"))[6:])


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution.DataParallel is JAX's")
def test_the_device_pipeline_splits_each_batch_over_two_devices_as_one_device_would(tmp_path):
    report = _train_twice(tmp_path, 3, "light", "device")
    single, parallel = report["single"], report["parallel"]
    assert parallel["pipeline"] == "device" and parallel["distribution"]["devices"] == 2, parallel
    assert parallel["distribution"]["hosts"] == 1 and parallel["distribution"]["strategy"].endswith("DataParallel")
    assert single["distribution"] == {**parallel["distribution"], "strategy": None, "devices": 1}
    # The augmented batch reaching the network is split over both devices by its batch axis.
    assert len(report["shardings"]) == 1 and "spec=P('batch',)" in report["shardings"][0], report
    assert "Mesh('batch': 2" in report["shardings"][0], report
    # The same global batches, the same augmentation draws: the same losses, step by step.
    np.testing.assert_allclose(parallel["losses"], single["losses"], atol=1e-4)
    assert single["accuracy"] > 0.6 and abs(parallel["accuracy"] - single["accuracy"]) < 0.03, report


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() == "torch", reason="torch refuses data_parallel")
@pytest.mark.parametrize("pipeline", ["tf.data", "device"])
def test_both_feeds_train_data_parallel(tmp_path, pipeline):
    if keras.backend.backend() == "jax" and pipeline == "device":
        pytest.skip("the JAX device feed: test_the_device_pipeline_splits_each_batch_over_two_devices...")
    # No augmentation: under TensorFlow each MirroredStrategy replica draws its own.
    report = _train_twice(tmp_path, 1, "none", pipeline)
    single, parallel = report["single"], report["parallel"]
    assert parallel["pipeline"] == pipeline and parallel["distribution"]["devices"] == 2, parallel
    if keras.backend.backend() == "jax":  # the same global batches give the same losses
        np.testing.assert_allclose(parallel["losses"], single["losses"], atol=1e-4)
    else:
        # TensorFlow's fit under MirroredStrategy starts 3-9e-3 away from one device's
        # first loss (train_on_batch matches to 1e-6: test_one_step_on_two_replicas_...)
        # and clips no gradients (see compile_for_training): the same run, not the same steps.
        assert abs(parallel["losses"][0] - single["losses"][0]) < 0.02, report
    assert parallel["distribution"]["strategy"] is not None and single["distribution"]["strategy"] is None


def test_torch_refuses_data_parallel_naming_what_works(tmp_path):
    if keras.backend.backend() != "torch":
        pytest.skip("torch's refusal")
    from keras_vitmix import training

    with pytest.raises(ValueError, match=r"jax \(keras.distribution.DataParallel\).*torch backend has no"):
        training.train("convmixer_256_8", "digits", distribute="data_parallel", output_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_processes_join_from_arguments_then_keras_then_jax_environment(monkeypatch):
    if keras.backend.backend() != "jax":
        from keras_vitmix import distribution

        assert distribution.initialize_processes(environ={}) == 1
        with pytest.raises(ValueError, match="coordinator='localhost:1'"):
            distribution.initialize_processes("localhost:1")
        return
    import jax

    from keras_vitmix import distribution

    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(keras.distribution, "initialize", lambda *args: calls.append(args))
    assert distribution.initialize_processes(environ={}) == 1 and not calls  # one process: nothing to join
    jax_env = {"JAX_COORDINATOR_ADDRESS": "h0:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    distribution.initialize_processes(environ=jax_env)
    keras_env = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "k0:2", "KERAS_DISTRIBUTION_NUM_PROCESSES": "4",
                 "KERAS_DISTRIBUTION_PROCESS_ID": "3"}
    distribution.initialize_processes(environ={**jax_env, **keras_env})
    distribution.initialize_processes("a0:3", 2, 0, environ={**jax_env, **keras_env})
    assert calls == [("h0:1", 2, 1), ("k0:2", 4, 3), ("a0:3", 2, 0)]
    with pytest.raises(ValueError, match="num_processes=None"):
        distribution.initialize_processes(environ={"JAX_COORDINATOR_ADDRESS": "h0:1"})


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="several processes join through JAX's distributed runtime")
def test_two_processes_train_the_one_process_model(tmp_path):
    """Two `keras-vitmix train` processes joined by `keras.distribution.initialize` on
    localhost, one CPU device each, train the model one process trains at the same
    global batch: the same first loss and the same accuracies (benchmarks/multiprocess.py
    is this test, longer, with a RESULTS.md table)."""
    from tests.benchmark_utils import benchmark_script

    with benchmark_script("multiprocess") as multiprocess:
        multiprocess.main(["--epochs", "1", "--output", str(tmp_path), "--results", str(tmp_path / "RESULTS.md")])
    runs = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two_0", "two_1")}
    assert runs["one"]["distribution"]["hosts"] == 1
    for name in ("two_0", "two_1"):
        assert runs[name]["distribution"] == {
            "device_kind": "cpu", "devices": 2, "hosts": 2, "strategy": "keras.distribution.DataParallel",
        }
        for key in ("validation_accuracy", "test_accuracy", "validation_loss"):
            assert runs[name][key] == pytest.approx(runs["one"][key], abs=1e-4), (name, key)
        first = [float(next(csv.DictReader(open(tmp_path / run / "history.csv")))["loss"]) for run in ("one", name)]
        assert first[1] == pytest.approx(first[0], abs=1e-4)
    assert "| two processes: process 1 | 2 | 2 | 64 | 1 |" in (tmp_path / "RESULTS.md").read_text()
