"""One suite over every registered model: a new variant is covered without a new test."""

import inspect

import keras
import numpy as np
import pytest

from keras_vitmix.applications import create_model, list_models, model_info
from tests.backend_utils import trainable_gradients

# timm's parameter counts for the models of the same names.
TIMM_PARAMS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "mixer_s16_224": 18_528_264,
    "mixer_b16_224": 59_880_472,
    "convmixer_768_32": 21_110_248,
    "convmixer_1536_20": 51_625_960,
    "deit_tiny_distilled_patch16_224": 5_910_800,
    # at their registered 518 and 256 px (tests/test_weights_registers.py asks timm)
    "vit_small_patch14_dinov2": 22_056_192,
    "vit_small_patch14_reg4_dinov2": 22_057_344,
    "vit_base_patch14_reg4_dinov2": 86_582_016,
    "vit_base_patch16_reg4_gap_256": 86_615_272,
}
LARGE = {name for name, count in TIMM_PARAMS.items() if count > 20_000_000}
BATCH = 2


def skip_large(name):
    """The large variants (over 20M parameters) differ from a smaller registered variant of
    their family only in width, depth, kernel or activation, so the costly checks
    (gradients, save/load, feature extraction, overrides: a third of each backend's
    suite) run on the smaller ones, as timm's tests leave out its large models. A large
    variant still builds, runs forward, round-trips its config and matches timm's
    parameter count, and test_weights compares logits with timm's where it matters."""
    if name in LARGE:
        pytest.skip(f"{name}: the costly checks run on a smaller variant of its family (see skip_large)")


def small_input_shape(name):
    """The registered size, or a small one where the variant is ImageNet-size (224 px
    and up: DINOv2's 518 too)."""
    config = model_info(name)["config"]
    if "input_shape" in config and config["input_shape"][0] < 224:
        return tuple(config["input_shape"])
    patch = config.get("patch_size", 16)
    return (2 * patch, 2 * patch, 3) if patch >= 14 else (4 * patch, 4 * patch, 3)


def images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (BATCH, *shape)).astype("float32")


def params(name):
    marks = [pytest.mark.slow] if name in LARGE else []
    return pytest.param(name, marks=marks, id=name)


def architecture(name):
    """Family and config without `normalization`: variants that differ only in the
    preprocessing's mean and std (deit_small_patch16_224 and vit_small_patch16_224)
    build the same graph, so the suite runs once per architecture."""
    info = model_info(name)
    config = {k: v for k, v in info["config"].items() if k != "normalization"}
    return info["family"].__name__, repr(sorted(config.items()))


def distinct_architectures(names):
    """One name per architecture, preferring the one with the family's normalization."""
    seen = {}
    for name in sorted(names, key=lambda n: ("normalization" in model_info(n)["config"], n)):
        seen.setdefault(architecture(name), name)
    return sorted(seen.values())


ALL = [params(n) for n in distinct_architectures(list_models())]


@pytest.fixture(scope="module", params=ALL)
def built(request):
    """(name, model at a small input size with 7 classes, input batch); backbone
    variants (DINOv2, registered without a head) get one."""
    name = request.param
    shape = small_input_shape(name)
    model = create_model(name, input_shape=shape, classes=7, include_top=True)
    yield name, model, images(shape)
    keras.backend.clear_session()


def test_registry_is_complete():
    names = set(list_models())
    assert set(TIMM_PARAMS) <= names
    assert "convmixer_256_8" in names
    families = {model_info(n)["family"].__name__ for n in names}
    assert families == {"ViT", "MLPMixer", "ConvMixer", "HybridMixerViT", "HybridConvMixerMixer"}
    for family in families:  # a CIFAR-size and a seed config of every family
        own = [n for n in names if model_info(n)["family"].__name__ == family]
        assert any(model_info(n)["config"].get("input_shape") == (32, 32, 3) for n in own), family
        assert sum(n.startswith("seed_") for n in own) == 1, family


@pytest.mark.parametrize("name", [params(n) for n in TIMM_PARAMS])
def test_parameter_count_matches_timm(name):
    model = create_model(name)
    size = model_info(name)["config"].get("input_shape", (224, 224, 3))
    assert model.input_shape == (None, *size)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == TIMM_PARAMS[name]
    keras.backend.clear_session()


def test_output_is_finite_probabilities(built):
    name, model, x = built
    y = keras.ops.convert_to_numpy(model(x))
    assert y.shape == (BATCH, 7)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)
    # predict() agrees with the eager call.
    np.testing.assert_allclose(model.predict(x, verbose=0), y, atol=1e-5)


def test_every_weight_gets_a_gradient(built):
    name, model, x = built
    skip_large(name)
    grads = trainable_gradients(model, x, np.arange(BATCH) % 7)
    assert len(grads) == len(model.trainable_weights)
    for weight, grad in zip(model.trainable_weights, grads):
        assert grad is not None, weight.path
        assert np.all(np.isfinite(grad)), weight.path
        assert np.any(grad != 0), f"{weight.path} gets a zero gradient"


def test_config_round_trip(built):
    name, model, x = built
    config = model.get_config()
    family = type(model)
    signature = set(inspect.signature(family.__init__).parameters) - {"self", "kwargs", "weights", "input_tensor"}
    assert set(config) == signature | {"trainable"}
    clone = family.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


def test_keras_save_and_load(built, tmp_path):
    name, model, x = built
    skip_large(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def _feature_shapes(name, shape):
    """Expected (pooled, unpooled) output shapes of include_top=False."""
    config = model_info(name)["config"]
    family = model_info(name)["family"].__name__
    dim = config["hidden_dim"]
    patch = config.get("patch_size", 16)
    grid = (shape[0] // patch, shape[1] // patch)
    if family == "ConvMixer":
        return (BATCH, dim), (BATCH, *grid, dim)
    prefix = int(config.get("use_class_token", family == "ViT"))
    prefix += int(config.get("use_distillation_token", False))  # DeiT's second token
    prefix += config.get("num_register_tokens", 0)
    tokens = grid[0] * grid[1] + prefix
    return (BATCH, dim), (BATCH, tokens, dim)


def test_include_top_false_with_each_pooling(built):
    name, model, x = built
    skip_large(name)
    shape = x.shape[1:]
    pooled, unpooled = _feature_shapes(name, shape)
    base = {**model.get_config(), "include_top": False}
    allowed = ["avg", "max", None] + (["token"] if base.get("use_class_token") else [])
    if base.get("use_distillation_token"):  # DeiT's two heads read the two tokens
        allowed = ["token", None]
    for pooling in allowed:
        features = type(model).from_config({**base, "pooling": pooling})
        features.set_weights(_shared_weights(features, model))
        out = keras.ops.convert_to_numpy(features(x))
        assert out.shape == (unpooled if pooling is None else pooled), pooling
        assert np.all(np.isfinite(out))
    # Pooled features feed the head: the full model equals head(features).
    head = model.get_layer("head")
    if base.get("use_distillation_token"):  # mean of head(class token), head_dist(distillation token)
        tokens = type(model).from_config({**base, "pooling": None})
        tokens.set_weights(_shared_weights(tokens, model))
        t = tokens(x)
        logits = (head(t[:, 0]) + model.get_layer("head_dist")(t[:, 1])) / 2
    else:
        features = type(model).from_config({**base, "pooling": base.get("pooling")})
        features.set_weights(_shared_weights(features, model))
        logits = head(features(x))
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    np.testing.assert_allclose(probs, keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def _shared_weights(features, model):
    """The full model's weights minus the head's, in the feature model's order."""
    by_path = {w.path: w for w in model.weights}
    return [keras.ops.convert_to_numpy(by_path[w.path]) for w in features.weights]


def test_input_shape_and_classes_overrides(built):
    name, model, x = built
    skip_large(name)
    shape = x.shape[1:]
    bigger = (2 * shape[0], 2 * shape[1], 3)
    other = create_model(name, input_shape=bigger, classes=3, classifier_activation=None, include_top=True)
    assert other.input_shape == (None, *bigger)
    assert other.output_shape == (None, 3)
    out = keras.ops.convert_to_numpy(other(images(bigger)))
    assert out.shape == (BATCH, 3) and np.all(np.isfinite(out))
    assert other.name == name
