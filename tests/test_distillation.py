"""DeiT distillation (keras_vitmix.distillation) inside the device pipeline's training step."""

import keras
import numpy as np
import pytest

from keras_vitmix import device_pipeline, distillation, training
from keras_vitmix.applications import create_model
from keras_vitmix.metrics import accuracy_metrics

from tests.small_models import small

XLA = keras.backend.backend() != "torch"  # tensorflow and jax compile the step with XLA
JIT = keras.backend.backend() == "jax"  # jax's eager steps are slow; tensorflow's XLA compile is
TEACHER = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5], [1.0, 1.0, 0.9, 0.0]], "float32")
STUDENT = np.array([[0.3, -1.0, 2.0, 0.5], [1.0, 2.0, 3.0, 0.0], [-0.2, 0.4, 0.1, 1.5]], "float32")


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_hard(teacher, student):
    log_p = np.log(softmax(student.astype("float64")))
    return -log_p[np.arange(len(student)), teacher.argmax(axis=-1)].mean()


def numpy_soft(teacher, student, tau):
    p, q = softmax(teacher.astype("float64") / tau), softmax(student.astype("float64") / tau)
    return (p * (np.log(p) - np.log(q))).sum(axis=-1).mean() * tau**2


def value(x):
    return float(keras.ops.convert_to_numpy(x))


def data(n=64, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype("uint8"), rng.integers(0, 10, n).astype("int32")


def class_zero_teacher(size=16, classes=10):
    """A teacher that predicts class 0 for every image."""
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(
        classes, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([8.0] + [0.0] * (classes - 1)),
        name="teacher_head",
    )(pooled)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="predictions")(logits), name="teacher")


def deit(**overrides):
    return small("ViT", use_distillation_token=True, pooling="token", num_layers=1, **overrides)


def trainer_for(net, teacher, images=None, labels=None, steps=4, jit_compile=JIT, **kwargs):
    """A DeviceTrainer compiled as training_data's `trainer` compiles one."""
    trainer = device_pipeline.DeviceTrainer(net, images, labels, augment="light", seed=0, teacher=teacher, **kwargs)
    training.compile_for_training(net, total_steps=steps, learning_rate=1e-3, warmup_steps=1)
    trainer.compile(optimizer=net.optimizer, loss=net.loss, metrics=accuracy_metrics(10), jit_compile=jit_compile)
    return trainer


class Streamed(keras.utils.PyDataset):
    """The streamed feed's batches: dicts {"images": uint8, "labels": int32}."""

    def __init__(self, images, labels, batch_size):
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self):
        return len(self.labels) // self.batch_size

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return {"images": self.images[part], "labels": self.labels[part]}


def test_hard_and_soft_terms_match_numpy_and_teacher_probabilities_act_as_logits():
    hard = distillation.DeiTDistillation("hard")
    assert value(hard.compute_loss(TEACHER, STUDENT)) == pytest.approx(numpy_hard(TEACHER, STUDENT), abs=1e-5)
    for tau in (1.0, 3.0):
        soft = distillation.DeiTDistillation("soft", alpha=0.25, tau=tau)
        expected = numpy_soft(TEACHER, STUDENT, tau)
        assert value(soft.compute_loss(TEACHER, STUDENT)) == pytest.approx(expected, abs=1e-5)
        # A teacher's probabilities give its logits up to a constant: the same term.
        from_probabilities = distillation.logits_of(softmax(TEACHER))
        assert value(soft.compute_loss(from_probabilities, STUDENT)) == pytest.approx(expected, abs=1e-5)
        assert value(soft.total(2.0, TEACHER, STUDENT)) == pytest.approx(0.75 * 2.0 + 0.25 * expected, abs=1e-5)
    assert value(hard.total(1.5, TEACHER, STUDENT)) == pytest.approx(0.75 + 0.5 * numpy_hard(TEACHER, STUDENT), abs=1e-5)


def test_a_deit_student_predicts_the_mean_of_its_heads_and_its_distillation_head_learns_the_teacher():
    images, labels = data()
    net = deit()
    x = images[:8].astype("float32")
    heads = keras.Model(net.input, [net.get_layer("head").output, net.get_layer("head_dist").output])
    head, head_dist = (keras.ops.convert_to_numpy(t) for t in heads(x))
    expected = softmax((head + head_dist) / 2)
    trainer = trainer_for(net, class_zero_teacher(), images, labels, steps=4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(net(x)), expected, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(trainer(x)), expected, atol=1e-5)
    step = trainer(np.arange(16, dtype="int32"), training=True)
    assert sorted(step) == ["class_logits", "distilled", "labels", "probabilities", "targets", "teacher"]
    assert keras.ops.convert_to_numpy(step["teacher"]).argmax(axis=-1).tolist() == [0] * 16

    def class_zero(model):
        return [softmax(keras.ops.convert_to_numpy(t))[:, 0].mean() for t in model(x)]

    before = class_zero(heads)
    batches = device_pipeline.IndexBatches(labels, 16)
    history = trainer.fit(batches, epochs=1, verbose=0, callbacks=[device_pipeline.EpochOrder(batches)])
    assert np.isfinite(history.history["loss"]).all() and "accuracy" in history.history
    after = class_zero(heads)
    assert after[1] - before[1] > after[0] - before[0] + 0.05, (before, after)


@pytest.mark.parametrize("feed", ["held", "streamed"])
def test_the_teacher_stays_frozen_on_both_feeds(feed):
    images, labels = data()
    net, teacher = deit(), small("ConvMixer")  # a teacher of another family, with weights to keep
    teacher_weights = [keras.ops.convert_to_numpy(v).copy() for v in teacher.weights]
    held = (images, labels) if feed == "held" else (None, None)
    trainer = trainer_for(net, teacher, *held, steps=4, jit_compile=XLA,
                          distillation="soft", distillation_tau=2.0)
    assert not teacher.trainable
    assert {id(v) for v in trainer.trainable_weights} == {id(v) for v in net.trainable_weights}
    assert not {id(v) for v in teacher.weights} & {id(v) for v in trainer.trainable_weights}
    before = [keras.ops.convert_to_numpy(v).copy() for v in net.trainable_weights]
    if feed == "held":
        batches = device_pipeline.IndexBatches(labels, 16)
        trainer.fit(batches, epochs=1, verbose=0, callbacks=[device_pipeline.EpochOrder(batches)])
    else:
        trainer.fit(Streamed(images, labels, 16), epochs=1, verbose=0)
    for kept, now in zip(teacher_weights, teacher.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(now), kept)
    assert any(not np.array_equal(b, keras.ops.convert_to_numpy(a)) for b, a in zip(before, net.trainable_weights))
    # AdamW keeps a momentum per variable it trains: the student's, none of the teacher's.
    momenta = [v for v in trainer.optimizer.variables if "momentum" in v.name]
    assert len(momenta) == len(net.trainable_weights)


def test_a_student_without_a_distillation_head_distills_its_logits():
    images, labels = data()
    net = small("MLPMixer")  # LayerNorm: its inference-mode outputs follow its training at once
    view = distillation.student_view(net)
    assert view is not None and sorted(view.output) == ["distilled", "probabilities"]
    x = images[:4].astype("float32")
    out = view(x)
    np.testing.assert_allclose(softmax(keras.ops.convert_to_numpy(out["distilled"])),
                               keras.ops.convert_to_numpy(net(x)), atol=1e-5)
    trainer = trainer_for(net, class_zero_teacher(), images, labels, steps=4, jit_compile=XLA)
    before = softmax(keras.ops.convert_to_numpy(view(x)["distilled"]))[:, 0].mean()
    batches = device_pipeline.IndexBatches(labels, 16)
    trainer.fit(batches, epochs=1, verbose=0, callbacks=[device_pipeline.EpochOrder(batches)])
    assert softmax(keras.ops.convert_to_numpy(view(x)["distilled"]))[:, 0].mean() > before + 0.03
    # A model whose output is not a "predictions" softmax distills the log of its probabilities.
    inputs = keras.Input((16, 16, 3))
    plain = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    assert distillation.student_view(plain) is None
    step = trainer_for(plain, class_zero_teacher(), images, labels)(np.arange(8, dtype="int32"), training=True)
    np.testing.assert_allclose(softmax(keras.ops.convert_to_numpy(step["distilled"])),
                               keras.ops.convert_to_numpy(step["probabilities"]), atol=1e-5)


def test_mixed_bfloat16_trains_with_a_teacher():
    keras.config.set_dtype_policy("mixed_bfloat16")
    images, labels = data(n=16)
    trainer = trainer_for(deit(), class_zero_teacher(), images, labels, steps=1)
    batches = device_pipeline.IndexBatches(labels, 16)
    history = trainer.fit(batches, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("settings, message", [
    (dict(distillation="medium"), "distillation='medium'"),
    (dict(distillation_alpha=1.5), "alpha=1.5"),
    (dict(distillation_alpha=True), "alpha=True"),
    (dict(distillation_tau=0.0), "tau=0.0"),
])
def test_bad_settings_name_the_value(settings, message):
    with pytest.raises(ValueError, match=message):
        device_pipeline.DeviceTrainer(small("ConvMixer"), teacher=class_zero_teacher(), **settings)


def test_bad_teachers_name_the_value(tmp_path):
    net = small("ConvMixer")
    with pytest.raises(ValueError, match="teacher of type str"):
        device_pipeline.DeviceTrainer(net, teacher="vit_cifar_patch4_32")
    with pytest.raises(ValueError, match=r"12 classes.*output shape \(None, 12\)"):
        device_pipeline.DeviceTrainer(net, teacher=class_zero_teacher(classes=12))
    with pytest.raises(ValueError, match=r"32x32 images.*input shape \(None, 32, 32, 3\)"):
        device_pipeline.DeviceTrainer(net, teacher=class_zero_teacher(size=32))
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match=f"teacher='{missing}'"):
        distillation.resolve_teacher(missing)
    with pytest.raises(ValueError, match="teacher='no_such_model'"):
        distillation.resolve_teacher("no_such_model")
    with pytest.raises(ValueError, match="weights=None"):
        distillation.resolve_teacher("vit_cifar_patch4_32")
    with pytest.raises(ValueError, match="teacher of type int"):
        distillation.resolve_teacher(3)
    teacher = class_zero_teacher()
    assert distillation.resolve_teacher(teacher) is teacher
    teacher.save(tmp_path / "teacher.keras")
    loaded = distillation.resolve_teacher(str(tmp_path / "teacher.keras"))
    assert isinstance(loaded, keras.Model) and loaded.output_shape == (None, 10)


def test_a_registered_name_with_weights_resolves_to_that_trained_model(tmp_path):
    shape = dict(num_layers=1, hidden_dim=32, num_heads=2, mlp_dim=32, input_shape=(16, 16, 3))
    trained = create_model("vit_cifar_patch4_32", **shape)
    trained.save_weights(str(tmp_path / "teacher.weights.h5"))
    teacher = distillation.resolve_teacher("vit_cifar_patch4_32", weights=str(tmp_path / "teacher.weights.h5"), **shape)
    for saved, loaded in zip(trained.weights, teacher.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(saved))
    device_pipeline.DeviceTrainer(small("MLPMixer"), teacher=teacher)  # it can teach a 16 px, 10-class student
