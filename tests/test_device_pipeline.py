"""The device pipeline: data held on the device, sampled and augmented in the step."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import augmentation, datasets, device_pipeline, training
from keras_vitmix.metrics import accuracy_metrics

from tests.small_models import small

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch(n=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype("uint8"), rng.integers(0, 10, n).astype("int32")


@pytest.mark.parametrize("policy", augmentation.AUGMENTATIONS)
def test_same_seed_same_augmented_batches(policy):
    images, labels = batch()

    def two_batches(seed):
        layer = augmentation.BatchAugmentation(policy, (16, 16, 3), 10, flip=True, seed=seed)
        return [[keras.ops.convert_to_numpy(t) for t in layer(images, labels)] for _ in range(2)]

    first, again, other = two_batches(1), two_batches(1), two_batches(2)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    for x, y in first:
        assert x.shape == (8, 16, 16, 3) and x.dtype == np.float32 and y.shape == (8, 10)
        assert x.min() >= 0 and x.max() <= 255 + 1e-3  # MixUp rounds in float32
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)  # one-hot, or mixed shares
    if policy != "none":  # a second batch from the same layer differs, and so does another seed
        assert not np.array_equal(first[0][0], first[1][0])
        assert not np.array_equal(first[0][0], other[0][0])
    else:
        np.testing.assert_array_equal(first[0][0], images.astype("float32"))


def test_padded_crop_is_a_window_of_the_zero_padded_image_per_image():
    images, _ = batch(n=32)
    out = keras.ops.convert_to_numpy(augmentation.RandomPaddedCrop(2, 2, seed=3)(images.astype("float32")))
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))).astype("float32")
    offsets = []
    for image, source in zip(out, padded):
        found = [(i, j) for i in range(5) for j in range(5) if np.array_equal(image, source[i:i + 16, j:j + 16])]
        assert found, "not a window of the padded image"
        offsets.append(found[0])
    assert len(set(offsets)) > 5  # drawn per image, not once per batch as keras.layers.RandomCrop
    unchanged = augmentation.RandomPaddedCrop(2, seed=3)(images.astype("float32"), training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(unchanged), images)


def test_index_batches_are_a_seeded_permutation_per_epoch_without_the_remainder():
    batches = device_pipeline.IndexBatches(100, 32, seed=5)
    assert len(batches) == 3  # 4 images left out
    epoch0 = np.concatenate([batches[i] for i in range(3)])
    assert len(set(epoch0)) == 96 and epoch0.dtype == np.int32  # indices only: labels are held on the device
    batches.set_epoch(1)
    epoch1 = np.concatenate([batches[i] for i in range(3)])
    assert not np.array_equal(epoch0, epoch1)
    again = device_pipeline.IndexBatches(np.arange(100), 32, seed=5)  # labels: their count is taken
    again.set_epoch(1)  # a resumed run: the same batches for the same epoch
    np.testing.assert_array_equal(np.concatenate([again[i] for i in range(3)]), epoch1)
    # Two processes: each yields its half of every global batch, together the global one.
    halves = [device_pipeline.IndexBatches(100, 32, seed=5, process_index=i, process_count=2) for i in (0, 1)]
    for half in halves:
        half.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate([halves[0][2], halves[1][2]]), again[2])
    with pytest.raises(ValueError, match="batch_size=33"):
        device_pipeline.IndexBatches(100, 33, process_count=2)


def test_the_step_trains_the_wrapped_model_and_checkpoints_hold_no_data(tmp_path):
    images, labels = batch(n=80)  # 80: no weight of the network is 80 long
    net = small("ConvMixer")
    trainer = device_pipeline.DeviceTrainer(net, images, labels, augment="strong", seed=0)
    training.compile_for_training(net, total_steps=8)
    trainer.compile(optimizer=net.optimizer, loss=net.loss, metrics=accuracy_metrics(10))
    assert trainer.trainable_variables and {id(v) for v in trainer.trainable_variables} == {
        id(v) for v in net.trainable_variables
    }
    # A training call returns the mixed targets the loss reads, as an output (no variable
    # is written inside `call`), and the images' own labels that accuracy reads.
    step = trainer(np.arange(16, dtype="int32"), training=True)
    targets = keras.ops.convert_to_numpy(step["targets"])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(step["labels"]), labels[:16])
    assert step["probabilities"].shape == (16, 10)
    before = [keras.ops.convert_to_numpy(v).copy() for v in net.trainable_variables]
    batches = device_pipeline.IndexBatches(labels, 16)
    trainer.fit(batches, epochs=1, verbose=0, callbacks=[device_pipeline.EpochOrder(batches)])
    after = [keras.ops.convert_to_numpy(v) for v in net.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert not [v for v in trainer.non_trainable_variables if tuple(v.shape) == (16, 10)]  # no targets variable
    trainer.save_weights(str(tmp_path / "backup.weights.h5"))  # what BackupAndRestore writes
    import h5py

    shapes = []
    with h5py.File(tmp_path / "backup.weights.h5") as saved:
        saved.visititems(lambda name, item: shapes.append(item.shape) if isinstance(item, h5py.Dataset) else None)
    network_shapes = [tuple(v.shape) for v in net.weights]
    assert images.shape not in shapes and (len(labels),) not in shapes  # no held data
    assert all(shape in shapes for shape in network_shapes)  # the network's weights are there
    with pytest.raises(NotImplementedError, match="save its `network`"):
        trainer.get_config()


def test_too_big_for_the_device_suggests_tf_data(monkeypatch, tmp_path):
    monkeypatch.setattr(device_pipeline, "device_memory_bytes", lambda: 1_000_000)
    with pytest.raises(ValueError, match=r"take 3\.7 MiB.*pipeline='tf.data'") as error:
        training.train(small("ConvMixer", input_shape=(32, 32, 3)), "digits", pipeline="device", epochs=1,
                       output_dir=str(tmp_path))
    assert "digits" in str(error.value)
    # "auto" streams instead.
    metrics = training.train(small("ConvMixer", input_shape=(32, 32, 3)), "digits", epochs=1, verbose=0,
                             output_dir=str(tmp_path / "auto"))
    assert metrics["pipeline"] == "tf.data"


@pytest.mark.parametrize(
    "dataset, kwargs, match",
    [
        ((np.zeros((20, 16, 16, 3), "float32"), np.zeros(20, "int32")), {}, "float32"),
        ((np.full((20, 16, 16, 3), 300.0), np.zeros(20, "int32")), {}, "300"),
        ((np.zeros((20, 16, 16, 3), "uint8"), np.zeros(19, "int32")), {}, "19"),
        ((np.zeros((20, 16, 16, 3), "uint8"), np.full(20, 12, "int32")), {}, "12"),
        ((np.zeros((20, 16, 16, 3), "uint8"), np.zeros(20, "int32")), dict(recipe="cifr"), "cifr"),
        ((np.zeros((20, 16, 16, 3), "uint8"), np.zeros(20, "int32")), dict(augment="heavy"), "heavy"),
        ((np.zeros((20, 16, 16, 3), "uint8"), np.zeros(20, "int32")), dict(pipeline="gpu"), "gpu"),
        ((np.zeros((20, 16, 16, 3), "uint8"), np.zeros(20, "int32")), dict(pipeline="tf.data"), "tf.data"),
        ((np.zeros((20, 20, 20, 3), "uint8"), np.zeros(20, "int32")), {}, "20x20"),
        ({"validation": (np.zeros((2, 16, 16, 3), "uint8"), np.zeros(2))}, {}, "'train'"),
    ],
)
def test_bad_arrays_and_names_are_value_errors_naming_them(dataset, kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        training.train(small("ConvMixer"), dataset, epochs=1, output_dir=str(tmp_path), **kwargs)
    assert not (tmp_path / "history.csv").exists()


def test_arrays_train_and_resume_with_the_device_pipeline(tmp_path):
    images, labels, _ = datasets.load_arrays("digits", "train", image_size=16)
    test = datasets.load_arrays("digits", "test", image_size=16)[:2]

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    arguments = dict(
        dataset={"train": (images, labels), "test": test}, epochs=4, augment="none", output_dir=str(tmp_path), verbose=0
    )
    with pytest.raises(KeyboardInterrupt):
        training.train(small("ConvMixer"), extra_callbacks=[Kill()], **arguments)
    assert (tmp_path / "backup").is_dir()
    metrics = training.train(small("ConvMixer"), **arguments)
    assert metrics["resumed"] and metrics["epochs_run_now"] == 2 and metrics["pipeline"] == "device"
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    assert metrics["test_examples"] == 360 and metrics["test_accuracy"] > 0.5  # chance: 0.1; 0.62 measured (jax)
    saved = keras.saving.load_model(str(tmp_path / "model.keras"))
    assert not isinstance(saved, device_pipeline.DeviceTrainer) and saved.output_shape == (None, 10)


# TensorFlow as if not installed: every finder is asked through a wrapper that knows no
# "tensorflow", so `import tensorflow` raises ModuleNotFoundError and
# `importlib.util.find_spec("tensorflow")` is None, as PyTorch and Keras probe it.
# (`sys.modules["tensorflow"] = None` is not the same: Keras then believes it is loaded.)
BLOCK_TENSORFLOW = """
class NoTensorFlow:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, name):
        return getattr(self.finder, name)
sys.meta_path[:] = [NoTensorFlow(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
"""

TRAIN_DIGITS = """
import json, sys
{block}
from keras_vitmix import training
metrics = training.train(dataset="digits", output_dir=sys.argv[1], verbose=0)
evaluated = training.evaluate(sys.argv[1] + "/model.keras", "digits")
print(json.dumps({{"accuracy": metrics["test_accuracy"], "pipeline": metrics["pipeline"], "recipe": metrics["recipe"],
                  "evaluated": evaluated["accuracy"],
                  "epochs": metrics["epochs"], "tensorflow": any(m.split(".")[0] == "tensorflow" for m in sys.modules)}}))
"""


@pytest.mark.slow
def test_digits_with_the_defaults_and_tensorflow_blocked_reach_95_percent(tmp_path):
    backend = keras.backend.backend()
    # Under the tensorflow backend TensorFlow cannot be blocked: the run shows the defaults.
    block = "" if backend == "tensorflow" else BLOCK_TENSORFLOW
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_DIGITS.format(block=block), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["pipeline"] == "device" and result["recipe"] == "small" and result["epochs"] == 15
    assert result["tensorflow"] == (backend == "tensorflow")
    assert result["accuracy"] >= 0.95, result
    assert result["evaluated"] == pytest.approx(result["accuracy"], abs=1e-6)  # evaluate reads it back
