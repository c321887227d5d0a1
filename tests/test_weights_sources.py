"""Weight sources register themselves with the registry: `create_model(name,
weights="<prefix>[:<id>]")` goes to the registered loader, and the registry imports none."""

import pytest

from keras_vitmix.applications import create_model, list_weights_sources, register_weights_source
from keras_vitmix.applications import registry


@pytest.fixture
def sources(monkeypatch):
    """The registry's sources, restored after the test."""
    monkeypatch.setattr(registry, "_WEIGHTS_SOURCES", dict(registry._WEIGHTS_SOURCES))
    return registry._WEIGHTS_SOURCES


def test_timm_is_registered_by_the_weights_module():
    from keras_vitmix import weights

    assert "timm" in list_weights_sources()
    assert registry._WEIGHTS_SOURCES["timm"] is weights.create_from_timm


def test_a_registered_source_builds_the_model(sources):
    calls = []

    def loader(name, weights, **overrides):
        calls.append((name, weights, overrides))
        return create_model(name, **overrides)

    register_weights_source("hf", loader)
    assert list_weights_sources() == ["hf", "timm"]
    model = create_model("seed_convmixer", weights="hf:org/checkpoint", classes=3)
    assert calls == [("seed_convmixer", "hf:org/checkpoint", {"classes": 3})]
    assert model.output_shape == (None, 3)
    create_model("seed_convmixer", weights="hf")
    assert calls[-1][1] == "hf"
    with pytest.raises(ValueError, match="Unknown model name"):
        create_model("no_such_model", weights="hf:x")  # refused before the source runs
    assert len(calls) == 2
    register_weights_source("hf", loader)  # the same loader again (a re-import): accepted


def test_bad_registrations(sources):
    with pytest.raises(ValueError, match=r"without ':'. Received: prefix='hf:'"):
        register_weights_source("hf:", lambda name, weights: None)
    with pytest.raises(ValueError, match=r"Received: prefix=''"):
        register_weights_source("", lambda name, weights: None)
    with pytest.raises(TypeError, match="Received: loader of type str"):
        register_weights_source("hf", "not callable")

    def other(name, weights, **overrides):
        return None

    with pytest.raises(ValueError, match=r"'timm' is already registered: keras_vitmix\.weights\.create_from_timm"):
        register_weights_source("timm", other)
