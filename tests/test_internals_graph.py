"""keras_vitmix._internals, augmentation: each private Keras symbol made missing in turn,
and the public fallback giving the same histogram counts. (Attention maps use no private
symbol: tests/test_inspection.py.)"""

import keras
import numpy as np

from keras_vitmix import _internals, config


def test_bincount_histogram_counts_as_keras_does():
    layer = keras.layers.Equalization(value_range=(0, 255))
    values = np.random.default_rng(0).uniform(0, 255, (4, 16, 16)).astype("float32")
    values[0, 0, :3] = [0.0, 255.0, 254.999]  # both ends of the range
    keras_counts = keras.ops.convert_to_numpy(
        layer._custom_histogram_fixed_width(keras.ops.convert_to_tensor(values), (0, 255), 256)
    )
    ours = _internals._bincount_histogram(values, (0, 255), 256).numpy()
    expected = np.bincount(values.astype(int).ravel(), minlength=256)  # (0, 255) in 256 bins: the integer part
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(keras_counts, expected)


def test_segment_sum_histogram_counts_as_keras_does():
    values = np.random.default_rng(1).uniform(0, 255, (4, 16, 16)).astype("float32")
    values[0, 0, :3] = [0.0, 255.0, 254.999]  # both ends of the range
    ours = keras.ops.convert_to_numpy(_internals._segment_sum_histogram(keras.ops.convert_to_tensor(values), (0, 255), 256))
    np.testing.assert_array_equal(ours, np.bincount(values.astype(int).ravel(), minlength=256))


def test_equalization_in_the_step_with_and_without_the_private_histogram(monkeypatch):
    values = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = keras.layers.Equalization(value_range=(0, 255))
    assert _internals.use_segment_sum_histograms(ours)
    monkeypatch.setattr(_internals, "_EQUALIZATION_HISTOGRAM", "_missing_in_this_keras")
    kept = keras.layers.Equalization(value_range=(0, 255))
    assert not _internals.use_segment_sum_histograms(kept)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(values)), keras.ops.convert_to_numpy(kept(values)))


def equalized_in_tf_data(layer, values):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(values).batch(2).map(lambda x: layer(x))
    return np.concatenate([batch.numpy() for batch in dataset])


def test_equalization_with_and_without_the_private_histogram(monkeypatch):
    values = np.random.default_rng(2).uniform(0, 255, (2, 6, 6, 1)).astype("float32")  # one channel: quick
    ours = keras.layers.Equalization(value_range=(0, 255))
    assert _internals.use_bincount_histograms(ours)
    assert _internals._EQUALIZATION_HISTOGRAM in vars(ours)
    monkeypatch.setattr(_internals, "_EQUALIZATION_HISTOGRAM", "_missing_in_this_keras")
    kept = keras.layers.Equalization(value_range=(0, 255))
    assert not _internals.use_bincount_histograms(kept)
    assert not any(name.startswith("_missing") for name in vars(kept))
    np.testing.assert_array_equal(equalized_in_tf_data(ours, values), equalized_in_tf_data(kept, values))


def test_bincount_histograms_follow_the_fast_route_switch_and_find_rand_augment():
    rand_augment = keras.layers.RandAugment(value_range=(0, 255), seed=0)
    with config.fast_routes(False):
        assert not _internals.use_bincount_histograms(rand_augment)
    assert not _internals.use_bincount_histograms(keras.layers.Dense(2))
    assert _internals.use_bincount_histograms(rand_augment)
    assert _internals._EQUALIZATION_HISTOGRAM in vars(rand_augment.equalization)
