"""The fast routes (convolutions, fused Dense): same numbers and gradients as Keras's layers,
on every backend, and each route taken exactly where it is meant to be."""

import keras
import numpy as np
import pytest

from keras_vitmix.layers import BatchNormalization, Conv2D, Dense, DepthwiseConv2D, LayerNormalization, depthwise_conv
from keras_vitmix.layers.depthwise_conv import shifted_depthwise_conv

from tests.backend_utils import input_gradient, trainable_gradients

from . import _layer_checks as lc


def numpy_depthwise(x, kernel, padding):
    """Direct float64 depthwise convolution at stride 1 (cross-correlation, as Keras)."""
    kh, kw, channels, _ = kernel.shape
    if padding == "same":
        top, left = (kh - 1) // 2, (kw - 1) // 2
        x = np.pad(x, [(0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)])
    height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], height, width, channels))
    for i in range(kh):
        for j in range(kw):
            out += x[:, i : i + height, j : j + width, :].astype("float64") * kernel[i, j, :, 0]
    return out


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel_size", [(3, 3), (4, 4), (5, 2)])
def test_shifted_depthwise_matches_direct_convolution(kernel_size, padding):
    x = lc.random_array((2, 7, 6, 5), seed=1)
    kernel = lc.random_array((*kernel_size, 5, 1), seed=2)
    got = lc.to_numpy(shifted_depthwise_conv(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(kernel), padding))
    expected = numpy_depthwise(x, kernel, padding)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _twins(ours_cls, keras_cls, kwargs, input_shape):
    """Our layer and Keras's, in one-layer models with the same (random) weights."""
    models = []
    for cls in (ours_cls, keras_cls):
        inputs = keras.Input(input_shape[1:])
        models.append(keras.Model(inputs, cls(**kwargs, name="conv")(inputs)))
    lc.randomize_weights(models[0], seed=3)
    models[1].set_weights(models[0].get_weights())
    return models


def _check_twins(ours, theirs, input_shape):
    x = lc.random_array(input_shape, seed=4)
    np.testing.assert_allclose(lc.to_numpy(ours(x)), lc.to_numpy(theirs(x)), atol=2e-5, rtol=1e-5)
    y = np.arange(input_shape[0]) % 2
    # Reduce to two "classes" so the cross-entropy helper applies to any output shape.
    heads = []
    for model in (ours, theirs):
        flat = keras.layers.Flatten()(model.output)
        heads.append(keras.Model(model.input, keras.layers.Softmax()(flat[:, :2])))
    for got, expected in zip(*(trainable_gradients(h, x, y) for h in heads)):
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, native",
    [
        (dict(kernel_size=5, padding="same", activation="gelu"), True),
        (dict(kernel_size=4, padding="same"), True),  # even: more padding after
        (dict(kernel_size=3, padding="valid", use_bias=False), True),
        (dict(kernel_size=3, padding="valid", strides=2, depth_multiplier=2), False),
        (dict(kernel_size=(3, 2), padding="same", dilation_rate=2), False),
        (dict(kernel_size=3, padding="same", strides=2), False),  # torch: "same" at stride 1 only
    ],
)
def test_depthwise_matches_keras_values_and_gradients(kwargs, native):
    """`native`: a configuration the JAX shifted route takes; the torch route takes all
    but strided "same" padding, which PyTorch's convolution does not have."""
    shape = (2, 8, 8, 6)
    ours, theirs = _twins(DepthwiseConv2D, keras.layers.DepthwiseConv2D, kwargs, shape)
    layer, backend = ours.get_layer("conv"), keras.backend.backend()
    assert layer._shifted_applies(keras.KerasTensor(shape)) == (backend == "jax" and native)
    strided_same = kwargs["padding"] == "same" and kwargs.get("strides", 1) != 1
    assert layer._torch_applies(keras.ops.zeros(shape)) == (backend == "torch" and not strided_same)
    _check_twins(ours, theirs, shape)


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        (dict(filters=8, kernel_size=4, strides=4), (2, 8, 12, 16)),  # patches
        (dict(filters=8, kernel_size=1, activation="gelu"), (2, 5, 5, 64)),  # pointwise
        (dict(filters=8, kernel_size=(2, 4), strides=(2, 4), use_bias=False), (2, 4, 8, 8)),
        (dict(filters=8, kernel_size=2, strides=2), (2, 8, 8, 3)),
        (dict(filters=8, kernel_size=3, padding="same"), (2, 6, 6, 16)),  # overlapping
        (dict(filters=8, kernel_size=4, strides=4), (2, 10, 8, 16)),  # 10 % 4 != 0
    ],
)
def test_conv2d_matches_keras_values_and_gradients(kwargs, input_shape):
    """Under torch every one of these is one channels-last `conv2d` (stride 1 or "valid"
    padding); elsewhere Keras's convolution."""
    ours, theirs = _twins(Conv2D, keras.layers.Conv2D, kwargs, input_shape)
    layer = ours.get_layer("conv")
    assert layer._torch_applies(keras.ops.zeros(input_shape)) is (keras.backend.backend() == "torch")
    assert not layer._torch_applies(keras.KerasTensor(input_shape))  # shape inference: Keras's
    _check_twins(ours, theirs, input_shape)


def test_conv2d_torch_route_keeps_keras_for_strided_same_padding():
    """TensorFlow's "same" padding at a stride depends on the input size; PyTorch's
    convolution has no such padding, so Keras computes it (on every backend)."""
    kwargs, shape = dict(filters=4, kernel_size=3, strides=2, padding="same"), (2, 7, 7, 3)
    ours, theirs = _twins(Conv2D, keras.layers.Conv2D, kwargs, shape)
    assert not ours.get_layer("conv")._torch_applies(keras.ops.zeros(shape))
    _check_twins(ours, theirs, shape)


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
@pytest.mark.parametrize(
    "cls, kwargs, shape",
    [
        (Conv2D, dict(filters=8, kernel_size=4, strides=4), (2, 8, 8, 16)),
        (DepthwiseConv2D, dict(kernel_size=3, padding="same"), (2, 8, 8, 16)),
    ],
)
def test_mixed_precision(cls, kwargs, shape, policy):
    lc.check_mixed_precision(cls, kwargs, shape, policy)


def test_shifted_route_is_cpu_jax_only(monkeypatch):
    layer = DepthwiseConv2D(3, padding="same")
    shape = keras.KerasTensor((2, 8, 8, 4))
    assert layer._shifted_applies(shape) == (keras.backend.backend() == "jax")
    monkeypatch.setattr(depthwise_conv, "_jax_on_cpu", lambda: True)
    assert layer._shifted_applies(shape)
    assert not DepthwiseConv2D(3, strides=2, padding="same")._shifted_applies(shape)
    assert not DepthwiseConv2D(3, dilation_rate=2, padding="same")._shifted_applies(shape)
    assert not DepthwiseConv2D(3, depth_multiplier=2, padding="same")._shifted_applies(shape)


def test_samples_per_chunk_is_the_largest_fitting_divisor(monkeypatch):
    monkeypatch.setattr(depthwise_conv, "_CHUNK_BYTES", 100)
    chunk = depthwise_conv._samples_per_chunk
    assert [chunk(32, 30), chunk(32, 25), chunk(31, 10), chunk(12, 40), chunk(5, 500), chunk(8, 1)] == [2, 4, 1, 2, 1, 8]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the chunked kernel gradient is JAX's route")
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_jax_kernel_gradient_in_chunks_matches_keras(monkeypatch, padding):
    """With a cache budget of one sample, the kernel gradient adds up three chunks of one
    sample each; it must equal Keras's (and the input gradient stay the same)."""
    shape, kwargs = (3, 7, 6, 5), dict(kernel_size=(3, 4), padding=padding, activation="gelu")
    ours, theirs = _twins(DepthwiseConv2D, keras.layers.DepthwiseConv2D, kwargs, shape)
    per_sample = 4 * 5 * ((7 + 2) * (6 + 3) + 7 * 6 if padding == "same" else 7 * 6 + 5 * 3)
    monkeypatch.setattr(depthwise_conv, "_CHUNK_BYTES", per_sample)
    assert depthwise_conv._samples_per_chunk(3, per_sample) == 1
    _check_twins(ours, theirs, shape)
    x = lc.random_array(shape, seed=4)
    squared = [lambda v, m=m: keras.ops.sum(m(v) ** 2) for m in (ours, theirs)]
    np.testing.assert_allclose(input_gradient(squared[0], x), input_gradient(squared[1], x), atol=2e-5, rtol=1e-4)


def _depthwise_twins_and_input(kwargs, shape):
    """Our DepthwiseConv2D and Keras's, built with the same random weights, and an input (TensorFlow)."""
    import tensorflow as tf

    ours, theirs = DepthwiseConv2D(**kwargs), keras.layers.DepthwiseConv2D(**kwargs)
    for layer in (ours, theirs):
        layer.build(shape)
    ours.set_weights([lc.random_array(w.shape, seed=i) for i, w in enumerate(ours.get_weights())])
    theirs.set_weights(ours.get_weights())
    return ours, theirs, tf.constant(lc.random_array(shape, seed=4))


@pytest.mark.parametrize(
    "kwargs",
    [dict(kernel_size=5, padding="same", activation="gelu"), dict(kernel_size=4, padding="same"),
     dict(kernel_size=3, padding="valid", use_bias=False)],
)
def test_tensorflow_takes_the_shifted_route_under_xla_only(kwargs):
    """Under TensorFlow, inside `tf.function(jit_compile=True)` on the CPU: the shifted
    route, with Keras's values and gradients (input, kernel, bias); outside XLA, not."""
    if keras.backend.backend() != "tensorflow":
        assert not depthwise_conv._tf_xla_on_cpu()
        return
    import tensorflow as tf

    shape = (2, 8, 8, 6)
    ours, theirs, x = _depthwise_twins_and_input(kwargs, shape)
    routes = []

    def values_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(y))
        routes.append(ours._shifted_applies(x))
        return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

    got = tf.function(values_and_gradients, jit_compile=True)(ours)
    expected = values_and_gradients(theirs)  # eager: Keras's own kernel
    assert routes == [True, False]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("padding, batch, training", [("same", None, True), ("valid", 3, True), ("same", 3, False)])
def test_tensorflow_xla_gradients_in_sample_chunks_and_column_blocks(monkeypatch, padding, batch, training):
    """Under TF+XLA the kernel gradient is Gram products over blocks of columns and chunks
    of samples: with 4-column blocks (10 columns: three blocks, one partial) and one
    sample per chunk (from a one-sample cache budget, or a batch size unknown while
    tracing), the values and gradients must equal Keras's, in training (the forward sum
    in its one-trip loop) and out of it."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TF+XLA route exists under TensorFlow only")
    import tensorflow as tf

    shape, kwargs = (3, 7, 10, 5), dict(kernel_size=(3, 4), padding=padding, activation="relu")
    monkeypatch.setattr(depthwise_conv, "_GRAM_COLUMNS", 4)
    monkeypatch.setattr(depthwise_conv, "_CHUNK_BYTES", 1)
    ours, theirs, x = _depthwise_twins_and_input(kwargs, shape)

    def values_and_gradients(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.sin(y) * y)
        return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

    signature = [tf.TensorSpec((batch, *shape[1:]))]
    got = tf.function(lambda x: values_and_gradients(ours, x), jit_compile=True, input_signature=signature)(x)
    expected = values_and_gradients(theirs, x)  # eager: Keras's own kernel
    assert depthwise_conv._samples_per_chunk(3, 4 * 5 * 9 * 13) == 1
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=3e-5, rtol=1e-4)


def test_tensorflow_xla_kernel_gradient_keeps_a_nan():
    """The TF+XLA backward pass computes the kernel gradient in a one-trip loop whose
    count is read from the kernel: a NaN in the kernel must not change the count (no
    trip would leave a zero gradient). Without an activation, the kernel gradient does
    not depend on the kernel, so it equals Keras's, NaN or not."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TF+XLA route exists under TensorFlow only")
    import tensorflow as tf

    layer = DepthwiseConv2D(3, use_bias=False)
    layer.build((1, 5, 5, 2))
    kernel = np.ones((3, 3, 2, 1), "float32")
    kernel[0, 0, 0, 0] = np.nan
    layer.set_weights([kernel])
    x = tf.constant(lc.random_array((1, 5, 5, 2), seed=0))

    @tf.function(jit_compile=True)
    def kernel_gradient():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.kernel)

    theirs = keras.layers.DepthwiseConv2D(3, use_bias=False)
    theirs.build((1, 5, 5, 2))
    theirs.set_weights([kernel])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(theirs(x))
    expected = tape.gradient(loss, theirs.kernel).numpy()
    assert np.all(np.isfinite(expected)) and np.all(expected != 0)
    np.testing.assert_allclose(kernel_gradient().numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (Conv2D, dict(filters=4, kernel_size=2, strides=2)),
        (DepthwiseConv2D, dict(kernel_size=3)),
        (BatchNormalization, dict(epsilon=1e-5, momentum=0.9)),
        (LayerNormalization, dict(epsilon=1e-6, axis=[1, 2], center=False)),
    ],
)
def test_config_round_trips_to_same_class(cls, kwargs):
    layer = cls(**kwargs)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is cls and clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        (dict(units=8, activation="gelu"), (2, 5, 16)),
        (dict(units=8, use_bias=False), (3, 16)),
        (dict(units=4), (2, 3, 4, 16)),
    ],
)
def test_dense_matches_keras_values_and_gradients(kwargs, input_shape):
    models = []
    for cls in (Dense, keras.layers.Dense):
        inputs = keras.Input(input_shape[1:])
        flat = keras.layers.Flatten()(cls(**kwargs, name="dense")(inputs)) if len(input_shape) > 2 else cls(**kwargs, name="dense")(inputs)
        models.append(keras.Model(inputs, keras.layers.Softmax()(flat[:, :2])))
    lc.randomize_weights(models[0], seed=5)
    models[1].set_weights(models[0].get_weights())
    x = lc.random_array(input_shape, seed=6)
    np.testing.assert_allclose(lc.to_numpy(models[0](x)), lc.to_numpy(models[1](x)), atol=1e-6)
    y = np.arange(input_shape[0]) % 2
    for got, expected in zip(*(trainable_gradients(m, x, y) for m in models)):
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)


def test_dense_under_jax_multiplies_one_matrix():
    """Under JAX, tokens (B, N, D) go through one (B*N, D) product: the form whose kernel
    gradient XLA:CPU computes without a transposed copy (keras_vitmix/layers/linear.py)."""
    if keras.backend.backend() != "jax":
        pytest.skip("the flattened route is JAX's")
    import jax

    layer = Dense(8)
    layer.build((None, 16))
    x = lc.random_array((2, 5, 16), seed=9)
    jaxpr = jax.make_jaxpr(lambda t: layer(t))(x)
    products = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert [tuple(e.invars[0].aval.shape) for e in products] == [(10, 16)]


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_dense_mixed_precision(policy):
    lc.check_mixed_precision(Dense, dict(units=8), (2, 5, 16), policy)
    lc.check_mixed_precision(Dense, dict(units=8, activation="gelu"), (2, 5, 16), policy)


def test_gelu_erf_form_matches_exact_gelu_and_its_derivative():
    """`linear.gelu` (Dense's "gelu" under JAX) against x * Phi(x) and its derivative
    Phi(x) + x * phi(x) in float64, far into both tails."""
    from math import erf, pi, sqrt

    from keras_vitmix.layers import linear

    x = np.concatenate([np.linspace(-12, 12, 481), [-30.0, -5.5, 0.0, 5.5, 30.0]]).astype("float32")
    phi = np.array([0.5 * (1 + erf(v / sqrt(2))) for v in x.astype("float64")])
    density = np.exp(-np.square(x.astype("float64")) / 2) / sqrt(2 * pi)
    np.testing.assert_allclose(lc.to_numpy(linear.gelu(x)), x * phi, atol=2e-6, rtol=1e-6)
    grads = input_gradient(lambda t: keras.ops.sum(linear.gelu(t)), x)
    np.testing.assert_allclose(grads, phi + x * density, atol=2e-6, rtol=1e-5)


def test_dense_gelu_under_jax_uses_erf():
    """Under JAX, Dense's "gelu" is the erf form (XLA:CPU expands JAX's erfc form into two
    polynomial branches per element)."""
    if keras.backend.backend() != "jax":
        pytest.skip("the erf form is JAX's route")
    import jax

    layer = Dense(8, activation="gelu")
    layer.build((None, 16))
    jaxpr = str(jax.make_jaxpr(lambda t: layer(t))(lc.random_array((2, 5, 16), seed=9)))
    assert "erf " in jaxpr or "erf[" in jaxpr
    assert "erfc" not in jaxpr


def test_dense_with_lora_takes_keras_route():
    layer = Dense(6)
    layer.build((None, 4))
    x = lc.random_array((3, 4), seed=7)
    layer.enable_lora(2)
    layer.lora_kernel_b.assign(lc.random_array((2, 6), seed=8))
    kernel = lc.to_numpy(layer.kernel)  # includes the LoRA update
    np.testing.assert_allclose(lc.to_numpy(layer(x)), x @ kernel + lc.to_numpy(layer.bias), atol=1e-5)
    assert np.abs(kernel - lc.to_numpy(layer._kernel)).max() > 1e-3


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        (dict(epsilon=1e-5), (2, 5, 4, 8)),  # ConvMixer's grid, channels last
        (dict(axis=1, center=False), (2, 8, 3, 3)),
        (dict(scale=False), (3, 6, 8)),
        (dict(), (4, 8)),
    ],
)
def test_batch_norm_matches_keras_at_inference_and_in_training(kwargs, input_shape):
    ours, theirs = (cls(**kwargs) for cls in (BatchNormalization, keras.layers.BatchNormalization))
    for layer in (ours, theirs):
        layer.build(input_shape)
    lc.randomize_weights(ours, seed=9)
    theirs.set_weights(ours.get_weights())
    x = lc.random_array(input_shape, seed=10)
    assert ours._fused_applies(x, False, None) == (keras.backend.backend() == "torch")
    assert not ours._fused_applies(x, True, None)  # training: Keras's moments and moving averages
    mean = lc.to_numpy(ours.moving_mean)
    variance = lc.to_numpy(ours.moving_variance)
    axis = kwargs.get("axis", -1) % len(input_shape)
    shape = [1] * len(input_shape)
    shape[axis] = -1
    expected = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + ours.epsilon)
    if ours.scale:
        expected = expected * lc.to_numpy(ours.gamma).reshape(shape)
    if ours.center:
        expected = expected + lc.to_numpy(ours.beta).reshape(shape)
    np.testing.assert_allclose(lc.to_numpy(ours(x, training=False)), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(lc.to_numpy(ours(x, training=False)), lc.to_numpy(theirs(x, training=False)), atol=1e-6)
    np.testing.assert_allclose(lc.to_numpy(ours(x, training=True)), lc.to_numpy(theirs(x, training=True)), atol=1e-6)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):  # the same moving-average update
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_batch_norm_mixed_precision(policy):
    (out,) = lc.check_mixed_precision(BatchNormalization, dict(), (2, 4, 4, 8), policy, dict(training=False))
    layer = keras.layers.BatchNormalization(dtype=policy)
    np.testing.assert_allclose(out, lc.to_numpy(layer(lc.random_array((2, 4, 4, 8)), training=False)).astype("float32"), atol=1e-2)


def _layer_norm_reference(x, gamma, beta, eps, dy):
    """Layer normalization over the last axis in float64 and its gradients for the
    upstream gradient `dy`, derived with the chain rule one step at a time (not the
    closed form the JAX route implements)."""
    x, gamma, beta, dy = (np.asarray(a, "float64") for a in (x, gamma, beta, dy))
    n = x.shape[-1]
    mean = x.mean(-1, keepdims=True)
    centered = x - mean
    var = (centered**2).mean(-1, keepdims=True)
    inv = 1 / np.sqrt(var + eps)
    xhat = centered * inv
    y = xhat * gamma + beta
    dxhat = dy * gamma
    dinv = (dxhat * centered).sum(-1, keepdims=True)
    dvar = dinv * -0.5 * (var + eps) ** -1.5
    dcentered = dxhat * inv + dvar * 2 * centered / n
    dx = dcentered - dcentered.mean(-1, keepdims=True)
    rows = tuple(range(x.ndim - 1))
    return y, dx, (dy * xhat).sum(rows), dy.sum(rows)


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        (dict(epsilon=1e-6), (2, 5, 16)),  # tokens (B, N, D)
        (dict(epsilon=1e-3), (3, 16)),
        (dict(epsilon=1e-5), (2, 3, 4, 8)),
    ],
)
def test_layer_norm_matches_reference_values_and_gradients(kwargs, input_shape):
    """Values and the gradients of x, gamma and beta against a float64 reference and
    against Keras's layer (under torch: the direct `layer_norm` route)."""
    ours, theirs = LayerNormalization(**kwargs), keras.layers.LayerNormalization(**kwargs)
    for layer in (ours, theirs):
        layer.build(input_shape)
    lc.randomize_weights(ours, seed=11)
    theirs.set_weights(ours.get_weights())
    x = lc.random_array(input_shape, seed=12, scale=3.0) + 2.0  # a mean far from 0
    dy = lc.random_array(input_shape, seed=13)
    gamma, beta = (lc.to_numpy(w) for w in (ours.gamma, ours.beta))
    y, dx, dgamma, dbeta = _layer_norm_reference(x, gamma, beta, kwargs["epsilon"], dy)
    np.testing.assert_allclose(lc.to_numpy(ours(x)), y, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(lc.to_numpy(ours(x)), lc.to_numpy(theirs(x)), atol=1e-5)
    dy_tensor = keras.ops.convert_to_tensor(dy)
    got = input_gradient(lambda t: keras.ops.sum(ours(t) * dy_tensor), x)
    np.testing.assert_allclose(got, dx, atol=2e-5, rtol=1e-4)
    # Sums along the normalized axis vanish: the gradient has no component along it.
    np.testing.assert_allclose(got.sum(-1), 0.0, atol=1e-4)
    model = keras.Sequential([keras.Input(input_shape[1:]), ours])
    weights = trainable_gradients_of_sum(model, x, dy)
    np.testing.assert_allclose(weights[0], dgamma, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(weights[1], dbeta, atol=1e-4, rtol=1e-5)


def trainable_gradients_of_sum(model, x, dy):
    """Gradients of sum(model(x, training=True) * dy) w.r.t. the model's trainable
    weights (NumPy)."""
    backend = keras.backend.backend()
    dy_tensor = keras.ops.convert_to_tensor(dy)
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(values):
            outputs, _ = model.stateless_call(values, non_trainable, x, training=True)
            return keras.ops.sum(outputs * dy_tensor)

        return [np.asarray(g) for g in jax.grad(loss)(trainable)]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) * dy_tensor)
        return [np.asarray(g) for g in tape.gradient(loss, model.trainable_weights)]
    model.zero_grad()
    keras.ops.sum(model(x, training=True) * dy_tensor).backward()
    return [v.value.grad.detach().cpu().numpy() for v in model.trainable_weights]


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        (dict(axis=[1, 2]), (2, 3, 4)),  # several axes
        (dict(axis=1), (2, 6, 3)),  # not the last axis
        (dict(axis=[1, 2]), (2, 3, 4, 5)),  # not the trailing axes
        (dict(center=False), (2, 6)),
        (dict(scale=False), (2, 6)),
    ],
)
def test_layer_norm_other_forms_take_keras_route(kwargs, input_shape):
    """Against NumPy. Keras's own layer fails under torch on a non-trailing axis
    (`axis=1` of a rank-3 input goes to `torch.nn.functional.layer_norm`); ours does not."""
    layer = LayerNormalization(epsilon=1e-3, **kwargs)
    layer.build(input_shape)
    lc.randomize_weights(layer, seed=14)
    x = lc.random_array(input_shape, seed=15)
    axes = tuple(a % len(input_shape) for a in np.atleast_1d(kwargs.get("axis", -1)))
    shape = [input_shape[i] if i in axes else 1 for i in range(len(input_shape))]
    expected = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + 1e-3)
    if layer.scale:
        expected = expected * lc.to_numpy(layer.gamma).reshape(shape)
    if layer.center:
        expected = expected + lc.to_numpy(layer.beta).reshape(shape)
    np.testing.assert_allclose(lc.to_numpy(layer(x)), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
def test_layer_norm_mixed_precision(policy):
    """Statistics in float32 as Keras's layer; the output in the policy's compute dtype."""
    (out,) = lc.check_mixed_precision(LayerNormalization, dict(epsilon=1e-6), (2, 5, 16), policy)
    layer = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy)
    np.testing.assert_allclose(out, lc.to_numpy(layer(lc.random_array((2, 5, 16)))).astype("float32"), atol=2e-2)


@pytest.mark.parametrize(
    "policy, input_dtype",
    [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16"), ("float32", "bfloat16"),
     ("float32", "float16"), ("mixed_bfloat16", "float32"), ("float32", "float32")],
)
def test_layer_norm_call_matches_keras_bit_for_bit_in_every_dtype(policy, input_dtype, monkeypatch):
    """`call` as a model's graph runs it (no `__call__` input cast in front): the same
    dtype and the same bits as Keras's layer, whatever the input's and the policy's
    float types. Under torch the result comes from the direct `layer_norm` route, not
    from Keras's op."""
    ours = LayerNormalization(epsilon=1e-6, dtype=policy)
    theirs = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy)
    for layer in (ours, theirs):
        layer.build((2, 5, 16))
    lc.randomize_weights(ours, seed=21)
    theirs.set_weights(ours.get_weights())
    x = keras.ops.cast(lc.random_array((2, 5, 16), seed=22, scale=3.0) + 2.0, input_dtype)
    expected = theirs.call(x)
    if keras.backend.backend() == "torch":
        from keras.src import ops as keras_ops

        def keras_route(*args, **kwargs):
            raise AssertionError("Keras's layer_normalization op ran")

        monkeypatch.setattr(keras_ops, "layer_normalization", keras_route)
    got = ours.call(x)
    assert keras.backend.standardize_dtype(got.dtype) == keras.backend.standardize_dtype(expected.dtype)
    assert keras.backend.standardize_dtype(got.dtype) == ours.compute_dtype
    np.testing.assert_array_equal(lc.to_numpy(keras.ops.cast(got, "float32")),
                                  lc.to_numpy(keras.ops.cast(expected, "float32")))
