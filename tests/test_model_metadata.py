"""Run metadata and frozen layers are part of a model's config: a `.keras` file keeps
them, for every family (Keras rebuilds our subclassed models from their constructor
arguments, which once dropped both)."""

import warnings

import keras
import numpy as np
import pytest

from keras_vitmix import saving

from tests.small_models import FAMILIES, small


@pytest.mark.parametrize("family", list(FAMILIES))
def test_metadata_and_frozen_layers_survive_a_keras_file(family, tmp_path):
    model = small(family, classes=3)
    model.metadata = {"class_names": ["cat", "dog", "frog"], "dataset": "/data/pets", "splits": {"seed": 0}}
    frozen = [layer.name for layer in model.layers if layer.weights and layer.name != "head"]
    for name in frozen:
        model.get_layer(name).trainable = False
    model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 16, 16, 3)), np.zeros(4), verbose=0)  # builds the optimizer for the head only
    path = str(tmp_path / "model.keras")
    model.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.saving.load_model(path)
    assert not [str(w.message) for w in caught if "variables" in str(w.message)]
    assert saving.model_metadata(loaded) == model.metadata
    assert saving.class_names(loaded) == ["cat", "dog", "frog"]
    assert [layer.name for layer in loaded.layers if not layer.trainable and layer.weights] == frozen
    assert len(loaded.trainable_weights) == len(model.trainable_weights) == 2  # the head's kernel and bias
    assert saving.model_metadata(path) == model.metadata


def test_a_plain_model_has_no_metadata_and_bad_metadata_is_refused():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert saving.model_metadata(plain) == {} and saving.class_names(plain) is None
    model = small("ConvMixer")
    with pytest.raises(TypeError, match="must be a dict. Received: metadata of type list"):
        model.metadata = ["cat"]
    with pytest.raises(TypeError, match="JSON values only"):
        model.metadata = {"shape": np.zeros(2)}
    with pytest.raises(ValueError, match="does not have: \\['block_9'\\]"):
        type(model).from_config({**model.get_config(), "frozen_layers": ["block_9"]})
