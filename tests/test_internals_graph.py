"""keras_vitmix._internals, graphs and augmentation: each private Keras symbol made
missing in turn, and the public fallback giving the same attention maps and histogram
counts."""

import keras
import numpy as np
import pytest

from keras_vitmix import _internals, config, inspection
from keras_vitmix.applications import HybridMixerViT, ViT
from keras_vitmix.layers import PatchEmbedding, TransformerBlock

SMALL = {"patch_size": 4, "hidden_dim": 32, "input_shape": (16, 16, 3), "classes": 3}
GRAPH_SYMBOLS = ["_NODES_BY_DEPTH", "_INBOUND_NODES", "_NODE_ARGUMENTS"]


def images(count=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, 16, 16, 3)).astype("float32")


def scores_of(model, inputs):
    scores = inspection.attention_model(model)(inputs)  # eager: no compilation per model
    return {name: keras.ops.convert_to_numpy(value) for name, value in scores.items()}


def assert_same_scores(ours, public):
    assert list(ours) == list(public)
    for name in ours:
        np.testing.assert_array_equal(ours[name], public[name])


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(3)
    vit = ViT(**SMALL, num_layers=2, num_heads=2)
    hybrid = HybridMixerViT(**SMALL, mixer_depth=1, attention_depth=2, num_heads=4)
    return {"vit": vit, "hybrid": hybrid}


@pytest.mark.parametrize("family", ["vit", "hybrid"])
def test_attention_maps_without_each_graph_symbol(models, family, monkeypatch):
    model, x = models[family], images()
    ours = scores_of(model, x)
    for symbol in GRAPH_SYMBOLS:
        with monkeypatch.context() as patch:
            patch.setattr(_internals, symbol, "_missing_in_this_keras")
            assert _internals._graph_node_calls(model, model.get_layer("block_1")) is None
            assert_same_scores(ours, scores_of(model, x))


def test_attention_maps_of_a_model_without_its_node_map(models, monkeypatch):
    model, x = models["vit"], images()
    ours = scores_of(model, x)
    with monkeypatch.context() as patch:
        patch.delattr(model, "_nodes_by_depth")  # the model's own attribute, gone
        attention = inspection.attention_model(model)
    assert_same_scores(ours, {name: keras.ops.convert_to_numpy(value) for name, value in attention(x).items()})


def test_symbolic_mask_reaches_the_fallback(monkeypatch):
    tokens = keras.Input((8, 8, 3))
    mask = keras.Input((5, 5), dtype="bool")
    x = PatchEmbedding(16, 4, use_class_token=True)(tokens)
    x = TransformerBlock(2, 32, name="masked")(x, attention_mask=mask)
    model = keras.Model([tokens, mask], x)
    masks = np.ones((2, 5, 5), bool)
    masks[:, :, 3] = False
    inputs = [np.ones((2, 8, 8, 3), "float32"), masks]
    ours = scores_of(model, inputs)
    np.testing.assert_allclose(ours["masked"][..., 3], 0.0, atol=1e-7)
    monkeypatch.setattr(_internals, "_NODES_BY_DEPTH", "_missing_in_this_keras")
    assert_same_scores(ours, scores_of(model, inputs))


def test_shared_block_found_in_the_second_model_and_named_by_the_fallback(monkeypatch):
    block = TransformerBlock(2, 32, name="shared")
    first_inputs, second_inputs = keras.Input((5, 16)), keras.Input((5, 16))
    keras.Model(first_inputs, block(first_inputs), name="first")
    second = keras.Model(second_inputs, block(second_inputs), name="second")
    tokens = np.random.default_rng(1).normal(size=(2, 5, 16)).astype("float32")
    args, _ = _internals.first_call_arguments(second, block)
    assert args[0] is second_inputs
    assert scores_of(second, tokens)["shared"].shape == (2, 2, 5, 5)
    monkeypatch.setattr(_internals, "_INBOUND_NODES", "_missing_in_this_keras")
    with pytest.raises(ValueError, match="'shared' is called more than once, first outside model 'second'"):
        inspection.attention_model(second)


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


def test_sequential_without_the_node_map(monkeypatch):
    model = keras.Sequential([keras.Input((8, 8, 3)), PatchEmbedding(16, 4), TransformerBlock(2, 32, name="t")])
    x = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = scores_of(model, x)
    monkeypatch.setattr(_internals, "_NODES_BY_DEPTH", "_missing_in_this_keras")
    assert_same_scores(ours, scores_of(model, x))
