import numpy as np
import pytest

from keras_vitmix.layers import PatchEmbedding, resample_position_embedding, sincos_position_embedding

from . import _layer_checks as lc

PATCH, SIDE = 4, 16  # 16x16 images in 4x4 patches: a 4x4 grid of lc.TOKENS patches
GRID = SIDE // PATCH
IMAGES = (lc.BATCH, SIDE, SIDE, 3)
TOKENS_SHAPE = (lc.BATCH, lc.TOKENS, lc.DIM)
CLASS_TOKEN = {"hidden_dim": lc.DIM, "patch_size": PATCH, "use_class_token": True}
SINCOS_GRID = {"hidden_dim": lc.DIM, "patch_size": PATCH, "position_embedding": "sincos", "flatten": False}


def built(images=IMAGES, **kwargs):
    layer = PatchEmbedding(**{"hidden_dim": lc.DIM, "patch_size": PATCH, **kwargs})
    layer.build(images)
    return layer


def reference_sincos(grid, dim):
    """MoCo v3 layout, written out: [sin(x w), cos(x w), sin(y w), cos(y w)]."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4) / (dim // 4))
    rows = []
    for y in range(grid[0]):
        for x in range(grid[1]):
            xs, ys = x * omega, y * omega
            rows.append(np.concatenate([np.sin(xs), np.cos(xs), np.sin(ys), np.cos(ys)]))
    return np.stack(rows)


class TestPatchEmbeddingLayer(lc.LayerTestCase):
    def test_run_layer_test_class_token(self):
        self.check_layer(
            PatchEmbedding,
            CLASS_TOKEN,
            input_shape=IMAGES,
            expected_output_shape=(lc.BATCH, 1 + lc.TOKENS, lc.DIM),
            expected_num_trainable_weights=4,  # kernel, bias, class token, positions
            expected_num_non_trainable_weights=0,
        )

    def test_run_layer_test_sincos_grid(self):
        self.check_layer(
            PatchEmbedding,
            SINCOS_GRID,
            input_shape=IMAGES,
            expected_output_shape=(lc.BATCH, GRID, GRID, lc.DIM),
            expected_num_trainable_weights=2,  # the fixed table is no weight
            expected_num_non_trainable_weights=0,
        )


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
@pytest.mark.parametrize("kwargs", [CLASS_TOKEN, SINCOS_GRID], ids=["class_token", "sincos_grid"])
def test_mixed_precision(policy, kwargs):
    lc.check_mixed_precision(PatchEmbedding, kwargs, IMAGES, policy)


def test_saved_model_roundtrip(tmp_path):
    layer = PatchEmbedding(**{**CLASS_TOKEN, "patch_size": (PATCH, PATCH)})
    lc.check_saved_model_roundtrip(layer, IMAGES, tmp_path)


def test_config_matches_signature():
    lc.check_config_matches_signature(PatchEmbedding(**SINCOS_GRID))


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({}, TOKENS_SHAPE),
        ({"use_class_token": True}, (lc.BATCH, 1 + lc.TOKENS, lc.DIM)),
        ({"flatten": False}, (lc.BATCH, GRID, GRID, lc.DIM)),
        ({"position_embedding": None, "use_class_token": True}, (lc.BATCH, 1 + lc.TOKENS, lc.DIM)),
    ],
)
def test_output_shapes(kwargs, shape):
    layer = built(**kwargs)
    assert tuple(layer(lc.random_array(IMAGES)).shape) == shape
    assert tuple(layer.compute_output_shape((lc.BATCH,) + IMAGES[1:])) == shape
    assert layer.grid_size == (GRID, GRID) and layer.num_patches == lc.TOKENS


def test_patch_size_must_divide_image():
    with pytest.raises(ValueError) as info:
        PatchEmbedding(lc.DIM, patch_size=16).build((None, 225, 225, 3))
    assert "16" in str(info.value) and "225" in str(info.value)


def test_wrong_channel_count_at_call_raises():
    layer = built()
    with pytest.raises(ValueError) as info:
        layer(lc.random_array((lc.BATCH, SIDE, SIDE, 1)))
    message = str(info.value)
    assert str((SIDE, SIDE, 3)) in message and str((lc.BATCH, SIDE, SIDE, 1)) in message


def test_projection_matches_numpy_patches():
    layer = built(position_embedding=None)
    lc.randomize_weights(layer, seed=1)
    x = lc.random_array(IMAGES, seed=2)
    patches = x.reshape(lc.BATCH, GRID, PATCH, GRID, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(lc.BATCH, lc.TOKENS, PATCH * PATCH * 3).astype("float64")
    kernel, bias = (lc.to_numpy(w) for w in layer.projection.weights)
    expected = patches @ kernel.reshape(PATCH * PATCH * 3, lc.DIM) + bias
    np.testing.assert_allclose(lc.to_numpy(layer(x)), expected, atol=1e-5)


def test_learned_embedding_is_added_and_trainable():
    for prefix in (0, 1):
        layer = built(use_class_token=bool(prefix))
        lc.randomize_weights(layer, seed=3)
        assert tuple(layer.position_embeddings.shape) == (1, prefix + lc.TOKENS, lc.DIM)
        assert any(w is layer.position_embeddings for w in layer.trainable_weights)
        plain = built(use_class_token=bool(prefix), position_embedding=None)
        for source, target in zip(layer.projection.weights, plain.projection.weights):
            target.assign(source)
        if prefix:
            plain.class_token.assign(layer.class_token)
        x = lc.random_array(IMAGES, seed=4)
        out = lc.to_numpy(layer(x))
        positions = lc.to_numpy(layer.position_embeddings)
        difference = out - lc.to_numpy(plain(x))
        np.testing.assert_allclose(difference, np.broadcast_to(positions, difference.shape), atol=1e-5)
        if prefix:  # row 0 is the class token plus its position
            expected = lc.to_numpy(layer.class_token)[0, 0] + positions[0, 0]
            np.testing.assert_allclose(out[:, 0], np.broadcast_to(expected, (lc.BATCH, lc.DIM)), atol=1e-6)


def test_distillation_token_follows_the_class_token():
    layer = built(use_class_token=True, use_distillation_token=True, position_embedding=None)
    lc.randomize_weights(layer, seed=8)
    assert layer.num_prefix_tokens == 2
    plain = built(position_embedding=None)
    for source, target in zip(layer.projection.weights, plain.projection.weights):
        target.assign(source)
    x = lc.random_array(IMAGES, seed=9)
    out = lc.to_numpy(layer(x))
    assert out.shape == (lc.BATCH, 2 + lc.TOKENS, lc.DIM)
    assert tuple(layer.compute_output_shape(IMAGES)) == out.shape
    for row, token in enumerate((layer.class_token, layer.distillation_token)):
        np.testing.assert_allclose(out[:, row], np.broadcast_to(lc.to_numpy(token)[0], (lc.BATCH, lc.DIM)))
    np.testing.assert_allclose(out[:, 2:], lc.to_numpy(plain(x)), atol=1e-6)
    learned = built(use_class_token=True, use_distillation_token=True)
    assert tuple(learned.position_embeddings.shape) == (1, 2 + lc.TOKENS, lc.DIM)
    config = learned.get_config()
    assert config["use_distillation_token"] is True
    assert PatchEmbedding.from_config(config).num_prefix_tokens == 2


def test_distillation_token_needs_a_class_token():
    with pytest.raises(ValueError, match="requires `use_class_token=True`"):
        PatchEmbedding(lc.DIM, PATCH, use_distillation_token=True)


@pytest.mark.parametrize("use_class_token, flatten", [(True, True), (False, False)])
def test_sincos_is_fixed_table(use_class_token, flatten):
    layer = built(position_embedding="sincos", use_class_token=use_class_token, flatten=flatten)
    none = built(position_embedding=None, use_class_token=use_class_token, flatten=flatten)
    assert len(layer.trainable_weights) == len(none.trainable_weights)
    assert lc.count_params(layer.trainable_weights) == lc.count_params(none.trainable_weights)
    assert layer.non_trainable_weights == []
    for weight in layer.projection.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    table = sincos_position_embedding((GRID, GRID), lc.DIM)
    np.testing.assert_allclose(table, reference_sincos((GRID, GRID), lc.DIM), atol=1e-5)
    out = lc.to_numpy(layer(lc.random_array(IMAGES)))
    if flatten:
        expected = np.concatenate([np.zeros((int(use_class_token), lc.DIM)), table])
    else:
        expected = table.reshape(GRID, GRID, lc.DIM)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-6)


def test_sincos_needs_dim_divisible_by_four():
    with pytest.raises(ValueError, match="30"):
        sincos_position_embedding((2, 2), 30)


def test_resample_to_same_grid_is_exact():
    embedding = lc.random_array((1, 1 + lc.TOKENS, lc.DIM), seed=5)
    same = resample_position_embedding(embedding, (GRID, GRID), num_prefix_tokens=1)
    np.testing.assert_array_equal(same, embedding)


def test_resample_keeps_class_token_and_changes_grid():
    embedding = lc.random_array((1, 1 + lc.TOKENS, lc.DIM), seed=6)
    resampled = resample_position_embedding(embedding, (6, 6), num_prefix_tokens=1)
    assert resampled.shape == (1, 1 + 36, lc.DIM)
    np.testing.assert_array_equal(resampled[:, 0], embedding[:, 0])
    assert np.isfinite(resampled).all()
    back = resample_position_embedding(resampled, (GRID, GRID), num_prefix_tokens=1)
    assert back.shape == embedding.shape  # rectangular grids work with old_grid
    tall = resample_position_embedding(embedding, (8, 2), old_grid=(GRID, GRID), num_prefix_tokens=1)
    assert tall.shape == (1, 17, lc.DIM)


def test_constant_embedding_stays_constant_after_bicubic():
    embedding = np.full((1, lc.TOKENS, lc.DIM), 0.7, "float32")
    resampled = resample_position_embedding(embedding, (7, 5), old_grid=(4, 4))
    assert resampled.shape == (1, 35, lc.DIM)
    np.testing.assert_allclose(resampled, 0.7, atol=1e-5)


def test_resample_bad_grids_raise():
    embedding = lc.random_array((1, 1 + 12, lc.DIM))
    with pytest.raises(ValueError, match="12"):
        resample_position_embedding(embedding, (6, 6), num_prefix_tokens=1)  # 12 is not square
    with pytest.raises(ValueError, match="old_grid"):
        resample_position_embedding(embedding, (6, 6), old_grid=(3, 3), num_prefix_tokens=1)


def test_set_position_embeddings_resamples():
    source = built(use_class_token=True)
    lc.randomize_weights(source, seed=7)
    embedding = lc.to_numpy(source.position_embeddings)
    target = built(images=(lc.BATCH, 24, 24, 3), use_class_token=True)  # a 6x6 grid
    target.set_position_embeddings(embedding)
    expected = resample_position_embedding(embedding, (6, 6), num_prefix_tokens=1)
    np.testing.assert_allclose(lc.to_numpy(target.position_embeddings), expected, atol=1e-6)
    np.testing.assert_array_equal(lc.to_numpy(target.position_embeddings)[:, 0], embedding[:, 0])
    same = built(use_class_token=True)
    same.set_position_embeddings(embedding, source_grid=(GRID, GRID))
    np.testing.assert_array_equal(lc.to_numpy(same.position_embeddings), embedding)


def test_set_position_embeddings_needs_learned():
    with pytest.raises(ValueError, match="sincos"):
        built(position_embedding="sincos").set_position_embeddings(np.zeros((1, lc.TOKENS, lc.DIM)))


def test_invalid_position_embedding_raises():
    with pytest.raises(ValueError, match="rotary"):
        PatchEmbedding(lc.DIM, PATCH, position_embedding="rotary")


def test_class_token_needs_flatten():
    with pytest.raises(ValueError, match="flatten"):
        PatchEmbedding(lc.DIM, PATCH, use_class_token=True, flatten=False)


@pytest.mark.parametrize(
    "name, value", [("hidden_dim", 0), ("hidden_dim", -8), ("patch_size", 0), ("patch_size", (4, 4, 4))]
)
def test_bad_arguments_raise(name, value):
    lc.check_bad_argument(PatchEmbedding, {"hidden_dim": lc.DIM, "patch_size": PATCH}, name, value)


def test_bad_patch_size_pair_quotes_the_pair():
    lc.check_bad_argument(PatchEmbedding, {"hidden_dim": lc.DIM}, "patch_size", (4, 0))


REGISTERS = {"use_class_token": True, "num_register_tokens": 3}


@pytest.mark.parametrize("use_prefix_positions", [True, False])
@pytest.mark.parametrize("use_distillation_token", [False, True])
def test_register_tokens_follow_the_class_and_distillation_tokens(use_prefix_positions, use_distillation_token):
    # timm's order: class, (distillation,) registers, patches (VisionTransformer._pos_embed).
    layer = built(**REGISTERS, use_distillation_token=use_distillation_token, use_prefix_positions=use_prefix_positions)
    lc.randomize_weights(layer, seed=10)
    prefix = 1 + int(use_distillation_token) + 3
    assert layer.num_prefix_tokens == prefix
    assert layer.num_prefix_positions == (prefix if use_prefix_positions else 0)
    assert tuple(layer.register_tokens.shape) == (1, 3, lc.DIM)
    assert tuple(layer.position_embeddings.shape) == (1, layer.num_prefix_positions + lc.TOKENS, lc.DIM)
    plain = built(position_embedding=None)
    for source, target in zip(layer.projection.weights, plain.projection.weights):
        target.assign(source)
    x = lc.random_array(IMAGES, seed=11)
    out = lc.to_numpy(layer(x))
    assert out.shape == tuple(layer.compute_output_shape(IMAGES)) == (lc.BATCH, prefix + lc.TOKENS, lc.DIM)
    tokens = [layer.class_token] + ([layer.distillation_token] if use_distillation_token else [])
    expected_prefix = np.concatenate([lc.to_numpy(t)[0] for t in tokens] + [lc.to_numpy(layer.register_tokens)[0]])
    positions = lc.to_numpy(layer.position_embeddings)[0]
    patches = lc.to_numpy(plain(x))
    if use_prefix_positions:  # concatenate, then add positions to every token
        expected_prefix = expected_prefix + positions[:prefix]
        patches = patches + positions[prefix:]
    else:  # timm's no_embed_class: positions on the patches only, then concatenate
        patches = patches + positions
    np.testing.assert_allclose(out[:, :prefix], np.broadcast_to(expected_prefix, (lc.BATCH, prefix, lc.DIM)), atol=1e-6)
    np.testing.assert_allclose(out[:, prefix:], patches, atol=1e-5)
    clone = PatchEmbedding.from_config(layer.get_config())
    assert (clone.num_register_tokens, clone.use_prefix_positions) == (3, use_prefix_positions)


def test_registers_without_a_class_token_and_sincos_positions():
    layer = built(num_register_tokens=2, use_prefix_positions=False, position_embedding="sincos")
    for weight in layer.projection.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    out = lc.to_numpy(layer(lc.random_array(IMAGES)))
    registers = lc.to_numpy(layer.register_tokens)[0]
    np.testing.assert_allclose(out[:, :2], np.broadcast_to(registers, (lc.BATCH, 2, lc.DIM)), atol=1e-7)
    table = sincos_position_embedding((GRID, GRID), lc.DIM)
    np.testing.assert_allclose(out[:, 2:], np.broadcast_to(table, (lc.BATCH, lc.TOKENS, lc.DIM)), atol=1e-6)


def test_set_position_embeddings_without_prefix_positions():
    source = built(**REGISTERS, use_prefix_positions=False)
    lc.randomize_weights(source, seed=12)
    embedding = lc.to_numpy(source.position_embeddings)  # (1, 16, D): the patches only
    target = built(images=(lc.BATCH, 24, 24, 3), **REGISTERS, use_prefix_positions=False)
    target.set_position_embeddings(embedding)
    expected = resample_position_embedding(embedding, (6, 6), num_prefix_tokens=0)
    np.testing.assert_allclose(lc.to_numpy(target.position_embeddings), expected, atol=1e-6)


def test_register_tokens_bad_arguments():
    with pytest.raises(ValueError, match="num_register_tokens=2, flatten=False"):
        PatchEmbedding(lc.DIM, PATCH, num_register_tokens=2, flatten=False)
    with pytest.raises(ValueError, match="num_register_tokens=-1"):
        PatchEmbedding(lc.DIM, PATCH, num_register_tokens=-1)
    with pytest.raises(TypeError, match="num_register_tokens=2.0"):
        PatchEmbedding(lc.DIM, PATCH, num_register_tokens=2.0)
