"""Features of every family (issue #35): `features.feature_model` and
`create_model(name, features_only=True)`.

ViT, DeiT and Mixer give timm's `forward_intermediates(..., intermediates_only=True)`
with timm's weights loaded (tiny random timm models, every tensor perturbed: see
tests/timm_utils.py); ConvMixer and the hybrids give their blocks' own outputs as grids.
A feature model reloads after `import keras_vitmix` alone and exports one named output
per feature map, read back as a serving host would.
"""

import functools
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import applications, export, features, inspection
from keras_vitmix.applications._common import NORMALIZATIONS
from keras_vitmix.layers import PatchEmbedding
from tests.small_models import small

IMAGES = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("float32")


@functools.lru_cache(maxsize=None)
def built(family, use_class_token=None):
    """`small(family)`, built once per process: building a model takes seconds under JAX,
    and a feature model leaves the model it reads as it was."""
    return small(family) if use_class_token is None else small(family, use_class_token=use_class_token)


def numpy(outputs):
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


# --- timm's indices and intermediates -------------------------------------------------

def timm_utils():
    """tests/timm_utils.py: it skips the test where timm is missing, and imports timm
    safely after TensorFlow."""
    from tests import timm_utils as tu

    return tu


INDEX_CASES = [
    None, 1, 3, 4, 0, -1, True, 2.0, "1", [], [0], [3], [-1], [-4], [-5], [4], [2, 0], [-1, 0, 0], (1, 3), [1.0],
]


@pytest.mark.parametrize("indices", INDEX_CASES, ids=repr)
def test_indices_are_read_as_timm_reads_them(indices):
    timm_utils()
    from timm.models._features import feature_take_indices

    try:
        expected = sorted(set(feature_take_indices(4, indices)[0]))
    except (AssertionError, TypeError, ValueError):  # out of range, empty, not ints
        expected = None
    if isinstance(indices, bool) or (isinstance(indices, list) and any(isinstance(i, float) for i in indices)):
        expected = None  # timm's loose typing takes True as 1 and [1.0] as [1]: refused here
    if expected is None:
        with pytest.raises((TypeError, ValueError), match=re.escape(f"Received: indices={indices!r}")):
            features.take_indices(4, indices)
    else:
        assert features.take_indices(4, indices) == expected


# Ours and timm's, the same tiny architecture: 32 px, patch 8 (a 4 x 4 grid), 3 blocks.
TIMM_ARCHITECTURES = {
    "vit_tiny_patch16_224": ("VisionTransformer", dict(num_heads=2), dict(num_heads=2)),
    "deit_tiny_distilled_patch16_224": ("VisionTransformerDistilled", dict(num_heads=2), dict(num_heads=2)),
    "mixer_s16_224": ("MlpMixer", dict(num_blocks=3), dict(token_mlp_dim=16, channel_mlp_dim=128)),
    # A class token and 4 registers, the position embedding on the patches only, LayerScale.
    "vit_small_patch14_reg4_dinov2": (
        "VisionTransformer", dict(num_heads=2, reg_tokens=4, no_embed_class=True, init_values=1e-5), dict(num_heads=2)
    ),
}
PREFIX_TOKENS = {"vit_tiny_patch16_224": 1, "deit_tiny_distilled_patch16_224": 2, "mixer_s16_224": 0,
                 "vit_small_patch14_reg4_dinov2": 5}
# (indices, norm, output_format): every kind of `indices`, both formats, with and without norm.
INTERMEDIATE_CASES = [(None, False, "NHWC"), (2, True, "NLC"), ([0, -1], True, "NHWC"), ([-1, 0, 0], False, "NLC")]


def timm_pair(name):
    """A perturbed random timm model and ours with its weights loaded."""
    tu = timm_utils()

    import timm.models.deit
    import timm.models.mlp_mixer
    import timm.models.vision_transformer
    from keras_vitmix.weights import load_timm_weights

    if name not in applications.list_models():
        pytest.skip(f"{name} is not registered")
    class_name, timm_args, our_args = TIMM_ARCHITECTURES[name]
    modules = (timm.models.vision_transformer, timm.models.deit, timm.models.mlp_mixer)
    module = next(m for m in modules if hasattr(m, class_name))
    if class_name != "MlpMixer":
        timm_args = dict(depth=3, **timm_args)
    tu.torch.manual_seed(0)
    reference = getattr(module, class_name)(img_size=32, patch_size=8, embed_dim=32, num_classes=5, **timm_args)
    ours = applications.create_model(
        name, patch_size=8, hidden_dim=32, num_layers=3, input_shape=(32, 32, 3), classes=5, **our_args
    )
    return tu.perturb(reference), load_timm_weights(ours, reference), tu.torch


@pytest.mark.parametrize("name", list(TIMM_ARCHITECTURES))
def test_intermediates_equal_timms(name):
    reference, model, torch = timm_pair(name)
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    mean, std = NORMALIZATIONS[model.get_config()["normalization"]]
    x = torch.from_numpy(((images / 255.0 - np.asarray(mean)) / np.asarray(std)).astype("float32")).permute(0, 3, 1, 2)
    prefix = inspection.patch_grid(model).num_prefix_tokens
    assert prefix == PREFIX_TOKENS[name]
    for indices, norm, output_format in INTERMEDIATE_CASES:
        case = f"{name}, indices={indices}, norm={norm}, {output_format}"
        extra = dict(return_prefix_tokens=True) if prefix else {}
        with torch.no_grad():
            expected = reference.forward_intermediates(
                x, indices=indices, norm=norm, output_fmt="NCHW" if output_format == "NHWC" else output_format,
                intermediates_only=True, **extra,
            )
        if not prefix:
            expected = [(value, None) for value in expected]
        got = numpy(features.feature_model(model, indices, output_format, norm, prefix_tokens=bool(prefix))(images))
        names = [f"block_{i}" for i in features.take_indices(3, indices)]
        assert list(got) == [key for n in names for key in ([n, f"{n}_prefix"] if prefix else [n])], case
        for block, (patches, prefix_tokens) in zip(names, expected):
            patches = patches.numpy()
            if output_format == "NHWC":
                patches = patches.transpose(0, 2, 3, 1)  # timm's grids are NCHW
                assert got[block].shape == (2, 4, 4, 32), case
            np.testing.assert_allclose(got[block], patches, atol=1e-5, rtol=0, err_msg=case)
            if prefix:
                expected_prefix = prefix_tokens.numpy()
                np.testing.assert_allclose(got[f"{block}_prefix"], expected_prefix, atol=1e-5, rtol=0, err_msg=case)


# --- grids of the families timm has no intermediates for ----------------------------

@pytest.mark.parametrize(
    "family, overrides",
    [("ConvMixer", {}), ("HybridMixerViT", dict(use_class_token=True)), ("HybridConvMixerMixer", {})],
)
def test_grids_are_the_blocks_outputs(family, overrides):
    model = built(family, **overrides)
    blocks = features.model_blocks(model)
    own = keras.Model(model.input, [block.output for block in blocks])(IMAGES)  # the get_layer way
    layout = inspection.patch_grid(model)
    (h, w), prefix = layout.grid_shape, layout.num_prefix_tokens
    final_norm = model.get_layer("norm") if family != "ConvMixer" else None
    grids = numpy(features.feature_model(model, norm=final_norm is not None)(IMAGES))
    tokens = numpy(features.feature_model(model, output_format="NLC")(IMAGES))
    assert list(grids) == list(tokens) == [block.name for block in blocks]
    for block, output in zip(blocks, own):
        expected = keras.ops.convert_to_numpy(output)
        expected = expected.reshape(len(IMAGES), -1, expected.shape[-1])[:, prefix:]  # (B, h * w, D)
        np.testing.assert_allclose(tokens[block.name], expected, atol=1e-6, err_msg=block.name)
        normed = expected if final_norm is None else keras.ops.convert_to_numpy(final_norm(expected))
        assert grids[block.name].shape == (len(IMAGES), h, w, expected.shape[-1])
        np.testing.assert_allclose(grids[block.name].reshape(expected.shape), normed, atol=1e-5, err_msg=block.name)


def test_a_loaded_model_gives_the_same_features(tmp_path):
    model = built("ViT")
    path = str(tmp_path / "vit.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected = numpy(features.feature_model(model, [-1], "NLC", norm=True, prefix_tokens=True)(IMAGES))
    got = numpy(features.feature_model(loaded, [-1], "NLC", norm=True, prefix_tokens=True)(IMAGES))
    assert list(got) == ["block_1", "block_1_prefix"]
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6)


def test_registers_without_a_class_token_are_prefix_tokens_and_fc_norm_is_no_token_norm():
    import inspect as python_inspect

    if "use_fc_norm" not in python_inspect.signature(applications.ViT).parameters:
        pytest.skip("ViT has no register tokens yet")
    # vit_base_patch16_reg4_gap_256's layout: 4 registers, no class token, the norm after the pooling.
    model = small("ViT", use_class_token=False, num_register_tokens=4, use_fc_norm=True, pooling="avg")
    got = numpy(features.feature_model(model, [0], prefix_tokens=True)(IMAGES))
    assert {key: value.shape for key, value in got.items()} == {"block_0": (2, 8, 8, 96), "block_0_prefix": (2, 4, 96)}
    with pytest.raises(ValueError, match="'fc_norm' normalizes the pooled features, not the tokens"):
        features.feature_model(model, norm=True)


# --- bad input -------------------------------------------------------------------------

def no_blocks():
    inputs = keras.Input((16, 16, 3))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs), name="plain")


def no_grid():
    """A PatchEmbedding whose 'block' drops two tokens: its tokens are no longer the grid."""
    inputs = keras.Input((16, 16, 3))
    tokens = PatchEmbedding(8, 4, use_class_token=True, name="patch_embedding")(inputs)  # (B, 1 + 16, 8)
    return keras.Model(inputs, keras.layers.Cropping1D((2, 0), name="block_0")(tokens), name="cropped")


@pytest.mark.parametrize(
    "family, kwargs, error, message",
    [
        ("ViT", dict(indices=0), ValueError, r"1 <= n <= 2 .* Received: indices=0"),
        ("ViT", dict(indices=3), ValueError, r"Received: indices=3"),
        ("ViT", dict(indices=[2]), ValueError, r"in \[-2, 1\] .* Received: indices=\[2\]"),
        ("ViT", dict(indices=[-3, 0]), ValueError, r"Received: indices=\[-3, 0\]"),
        ("ViT", dict(indices=[]), ValueError, r"at least one. Received: indices=\[\]"),
        ("ViT", dict(indices=[0.5]), TypeError, r"must hold ints. Received: indices=\[0.5\]"),
        ("ViT", dict(indices="block_1"), TypeError, r"Received: indices='block_1' of type str"),
        ("ViT", dict(output_format="NCHW"), ValueError, r"\('NHWC', 'NLC'\). Received: output_format='NCHW'. .*transpose"),
        ("ViT", dict(output_format="nlc"), ValueError, r"Received: output_format='nlc'"),
        ("ViT", dict(norm="yes"), TypeError, r"Received: norm='yes'"),
        ("ConvMixer", dict(norm=True), ValueError, r"no final norm of its tokens .* BatchNormalization\). Received: norm=True"),
        ("MLPMixer", dict(prefix_tokens=True), ValueError, r"no prefix tokens .* Received: prefix_tokens=True"),
        (no_blocks, {}, ValueError, r"'plain' has no blocks: .* Received: a model with layers \['input_layer.*'head'\]"),
        (no_grid, {}, ValueError, r"'block_0' .* Received: 15 tokens, num_prefix_tokens=1, grid_shape=\(4, 4\)"),
        (no_grid, dict(output_format="NLC"), ValueError, r"Received: 15 tokens, num_prefix_tokens=1"),
    ],
)
def test_bad_input_names_the_value_and_what_is_allowed(family, kwargs, error, message):
    model = built(family) if isinstance(family, str) else family()
    with pytest.raises(error, match=message):
        features.feature_model(model, **kwargs)


def test_a_model_without_a_patch_embedding_or_not_a_model_is_refused():
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 4, 4, name="block_0")(inputs), name="convs")
    with pytest.raises(ValueError, match=r"patch grid of the model's PatchEmbedding. .* Received: model 'convs'"):
        features.feature_model(model)
    with pytest.raises(TypeError, match="Received: model of type str"):
        features.feature_model("vit.keras")
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="block_0")], name="stack")
    with pytest.raises(ValueError, match="functional model .* Received: model 'stack' of type Sequential"):
        features.feature_model(sequential)


# --- create_model(features_only=True) ----------------------------------------------------

def test_create_model_features_only_builds_no_head_and_takes_weights(tmp_path):
    backbone = applications.create_model("seed_convmixer", include_top=False, pooling=None)
    path = str(tmp_path / "backbone.weights.h5")
    backbone.save_weights(path)
    tokens = applications.create_model(
        "seed_convmixer", features_only=True, out_indices=[-1], output_format="NLC", weights=path
    )
    assert tokens.name == "seed_convmixer_features"
    assert not any(layer.name in ("head", "avg_pool", "predictions") for layer in tokens.layers)
    images = IMAGES.repeat(2, axis=1).repeat(2, axis=2)  # 32 px
    got, expected = numpy(tokens(images)), numpy(features.feature_model(backbone, [-1], "NLC")(images))
    assert list(got) == ["block_0"] and got["block_0"].shape == (2, 16 * 16, 16)
    np.testing.assert_allclose(got["block_0"], expected["block_0"], atol=1e-6)


def test_create_model_features_only_asks_a_weights_source_for_a_headless_model(monkeypatch):
    from keras_vitmix.applications import registry

    asked = []

    def source(name, weights, **overrides):  # stands in for timm's checkpoints (no network)
        asked.append((weights, overrides))
        return applications.create_model(name, **overrides)

    monkeypatch.setitem(registry._WEIGHTS_SOURCES, "timm", source)
    grids = applications.create_model("seed_convmixer", features_only=True, weights="timm", out_indices=1)
    assert asked == [("timm", dict(include_top=False, pooling=None))]
    assert grids.output_shape == (None, 16, 16, 16)  # one output: Keras gives its shape alone


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(out_indices=1), TypeError, r"out_indices apply to features_only=True. Received: features_only=False"),
        (dict(features_only=True, include_top=True), ValueError, r"`include_top` must be False. Received: include_top=True"),
        (dict(features_only=True, pooling="avg"), ValueError, r"`pooling` must be None. Received: pooling='avg'"),
        (dict(features_only="yes"), TypeError, r"Received: features_only='yes'"),
        (dict(features_only=True, out_indices=[1]), ValueError, r"in \[-1, 0\] .* Received: indices=\[1\]"),
    ],
)
def test_create_model_refuses_feature_options_that_do_not_apply(kwargs, error, message):
    with pytest.raises(error, match=message):
        applications.create_model("seed_convmixer", **kwargs)


# --- saving and export ---------------------------------------------------------------------

RELOAD = """
import sys
import numpy as np
import keras
import keras_vitmix  # registers the package's layers; nothing of keras_vitmix.features
assert "keras_vitmix.features" not in sys.modules
model = keras.saving.load_model(sys.argv[1])
outputs = model(np.load(sys.argv[2]))
np.savez(sys.argv[3], **{key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()})
print(list(outputs))
"""


@pytest.mark.slow
def test_a_feature_model_reloads_after_importing_keras_vitmix_alone(tmp_path):
    model = features.feature_model(built("HybridMixerViT", use_class_token=True), norm=True, prefix_tokens=True)
    path, images, result = tmp_path / "features.keras", tmp_path / "images.npy", tmp_path / "outputs.npz"
    model.save(path)
    np.save(images, IMAGES)
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(
        [sys.executable, "-c", RELOAD, str(path), str(images), str(result)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = numpy(model(IMAGES))
    keys = ["block_0", "block_0_prefix", "block_1", "block_1_prefix"]
    assert list(expected) == keys and run.stdout.strip().splitlines()[-1] == repr(keys)
    reloaded = np.load(result)
    for key in keys:
        np.testing.assert_allclose(reloaded[key], expected[key], atol=1e-6, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("format", export.FORMATS)
def test_an_export_serves_one_named_output_per_feature_map(format, tmp_path):
    from tests.test_export import run_check
    from tests.test_export_outputs import ONNX_READ, SAVED_MODEL_READ

    model = features.feature_model(built("ViT"), output_format="NHWC", prefix_tokens=True)
    images = IMAGES.astype("uint8")
    path = str(tmp_path / ("features.onnx" if format == "onnx" else "features"))
    export.export(model, path, format=format, verbose=False)
    reader = SAVED_MODEL_READ if format == "tf_saved_model" else ONNX_READ
    report = run_check(reader, {"features": (path, images.tolist())})["features"]
    expected = numpy(model(IMAGES))
    assert sorted(report["outputs"]) == ["block_0", "block_0_prefix", "block_1", "block_1_prefix"]
    for key, value in expected.items():
        assert np.shape(report["outputs"][key]) == value.shape, key
        np.testing.assert_allclose(report["outputs"][key], value, atol=1e-5, err_msg=key)
        if report["signature"] is not None:
            np.testing.assert_allclose(report["signature"][key], value, atol=1e-5, err_msg=key)


def test_readme_probe_runs(monkeypatch):
    from keras_vitmix import datasets
    from tests.test_readme import python_block, run

    load_arrays = datasets.load_arrays

    def first_images(*args, **kwargs):  # the README's probe, on 40 images
        images, labels, info = load_arrays(*args, **kwargs)
        return images[:40], labels[:40], info

    monkeypatch.setattr(datasets, "load_arrays", first_images)
    namespace = run(python_block("features.feature_model("))
    assert namespace["pooled"].shape == (40, 256)
    assert namespace["probe"](namespace["pooled"]).shape == (40, 10)
