"""keras_vitmix.inspection: attention scores checked against a NumPy re-computation,
attention rollout, mean attention distance and Mixer token-mixing weights."""

import itertools

import keras
import numpy as np
import pytest

from keras_vitmix import inspection
from keras_vitmix.applications import ConvMixer, HybridConvMixerMixer, HybridMixerViT, MLPMixer, ViT, create_model
from keras_vitmix.layers import PatchEmbedding, TransformerBlock

SMALL = {"patch_size": 4, "hidden_dim": 32, "input_shape": (16, 16, 3), "classes": 3}


def small_vit(**overrides):
    return ViT(**{**SMALL, "num_layers": 2, "num_heads": 2, **overrides})


def small_hybrid(**overrides):
    return HybridMixerViT(**{**SMALL, "mixer_depth": 1, "attention_depth": 2, "num_heads": 4, **overrides})


@pytest.fixture(scope="module")
def vit():
    keras.utils.set_random_seed(1)
    return small_vit()


@pytest.fixture(scope="module")
def hybrid():
    keras.utils.set_random_seed(2)
    return small_hybrid(use_class_token=True, pooling="token", token_mlp_dim=6)


@pytest.fixture(scope="module")
def mixer():
    keras.utils.set_random_seed(4)
    return MLPMixer(**{**SMALL, "num_layers": 2, "token_mlp_dim": 8})


def images(count=2, size=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def numpy_scores(model, block_name, x):
    """LayerNorm, qkv projection and softmax of one block, by hand in NumPy (float64)."""
    block = model.get_layer(block_name)
    tokens = keras.ops.convert_to_numpy(keras.Model(model.input, block.input)(x)).astype(np.float64)
    gamma, beta = (np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in block.norm1.weights)
    mean = tokens.mean(-1, keepdims=True)
    var = tokens.var(-1, keepdims=True)
    normed = (tokens - mean) / np.sqrt(var + block.norm1.epsilon) * gamma + beta
    kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in block.attention.qkv.weights)
    qkv = normed @ kernel + bias  # (B, N, 3 * H * d)
    batch, n = tokens.shape[:2]
    heads = block.num_heads
    qkv = qkv.reshape(batch, n, 3, heads, -1)
    q, k = qkv[:, :, 0], qkv[:, :, 1]  # (B, N, H, d)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(-1, keepdims=True)


@pytest.mark.parametrize("family", ["vit", "hybrid"])
def test_scores_match_numpy(family, request):
    model = request.getfixturevalue(family)
    blocks, heads = (["block_0", "block_1"], 2) if family == "vit" else (["block_1", "block_2"], 4)
    x = images(3)
    scores = inspection.attention_model(model).predict(x, verbose=0)
    assert list(scores) == blocks
    for name in blocks:
        assert isinstance(scores[name], np.ndarray)
        assert scores[name].shape == (3, heads, 17, 17)  # 16 patches and the class token
        np.testing.assert_allclose(scores[name].sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(scores[name], numpy_scores(model, name, x), atol=1e-5)


def test_predict_in_batches_and_direct_call(vit):
    x = images(5, seed=3)
    submodel = inspection.attention_model(vit)
    batched = submodel.predict(x, batch_size=2, verbose=0)
    assert batched["block_1"].shape == (5, 2, 17, 17)
    direct = submodel(x)
    for name in ("block_0", "block_1"):
        np.testing.assert_allclose(batched[name], keras.ops.convert_to_numpy(direct[name]), atol=1e-6)
    # The sub-model owns no weights: they are the model's own variables.
    model_ids = {id(w) for w in vit.weights}
    assert submodel.weights and all(id(w) in model_ids for w in submodel.weights)


def test_scores_follow_training():
    model = small_vit()
    submodel = inspection.attention_model(model)
    x = images(4, seed=4)
    before = submodel.predict(x, verbose=0)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, np.array([0, 1, 2, 0]), batch_size=4, epochs=1, verbose=0)
    after = submodel.predict(x, verbose=0)
    for name in ("block_0", "block_1"):
        assert np.abs(after[name] - before[name]).max() > 1e-3
        np.testing.assert_allclose(after[name], numpy_scores(model, name, x), atol=1e-5)


def test_layers_argument(vit):
    assert list(inspection.attention_model(vit, layers="block_1").output) == ["block_1"]
    assert list(inspection.attention_model(vit, layers=["block_1", "block_0"]).output) == ["block_0", "block_1"]
    with pytest.raises(ValueError, match=r"\['block_0', 'block_1'\].*layers='block_7'"):
        inspection.attention_model(vit, layers="block_7")
    with pytest.raises(ValueError, match="layers=\\[\\]"):
        inspection.attention_model(vit, layers=[])


def test_hybrid_mixer_block_is_not_an_attention_layer(hybrid):
    with pytest.raises(ValueError, match=r"one of \['block_1', 'block_2'\].*layers='block_0'"):
        inspection.attention_model(hybrid, layers="block_0")


def conv_mixer():
    return ConvMixer(hidden_dim=16, num_layers=2, patch_size=4, kernel_size=3, input_shape=(16, 16, 3), classes=3)


@pytest.mark.parametrize("family", ["mixer", "convmixer"])
def test_models_without_attention(family, request):
    model = conv_mixer() if family == "convmixer" else request.getfixturevalue(family)
    with pytest.raises(ValueError, match=f"'{model.name}' has no attention.*2 (MixerBlock|ConvMixerBlock)"):
        inspection.attention_model(model)


def test_not_a_functional_model():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional model"):
        inspection.attention_model(Subclassed())
    with pytest.raises(TypeError, match="Received: model of type str"):
        inspection.attention_model("vit")


def test_plain_functional_model_with_mask():
    inputs = keras.Input((8, 8, 3))
    x = PatchEmbedding(16, 4, use_class_token=True, name="embed")(inputs)  # (B, 5, 16)
    mask = np.array([[True, True, True, False, True]] * 5)[None]  # (1, 5, 5): key 3 hidden
    x = TransformerBlock(2, 32, name="encoder_a")(x)
    x = TransformerBlock(2, 32, name="encoder_b")(x, attention_mask=mask)
    model = keras.Model(inputs, x)
    scores = inspection.attention_model(model).predict(np.ones((2, 8, 8, 3)), verbose=0)
    assert list(scores) == ["encoder_a", "encoder_b"]
    assert scores["encoder_a"].shape == (2, 2, 5, 5)
    assert scores["encoder_a"][..., 3].min() > 0
    np.testing.assert_allclose(scores["encoder_b"][..., 3], 0.0, atol=1e-7)
    np.testing.assert_allclose(scores["encoder_b"].sum(-1), 1.0, atol=1e-5)
    assert inspection.patch_grid(model) == ((8, 8), (4, 4), (2, 2), 1)


def test_sequential_and_nested_models():
    inputs = keras.Input((8, 8, 3))
    sequential = keras.Sequential([inputs, PatchEmbedding(16, 4, name="embed"), TransformerBlock(2, 32, name="t")])
    scores = inspection.attention_model(sequential).predict(np.ones((1, 8, 8, 3)), verbose=0)
    assert list(scores) == ["t"] and scores["t"].shape == (1, 2, 4, 4)
    np.testing.assert_allclose(scores["t"].sum(-1), 1.0, atol=1e-5)
    outer_inputs = keras.Input((8, 8, 3))
    outer = keras.Model(outer_inputs, sequential(outer_inputs), name="outer")
    with pytest.raises(ValueError, match="'outer' has no attention.*1 Sequential.*pass the inner model"):
        inspection.attention_model(outer)


def test_symbolic_mask_input_reaches_the_blocks():
    tokens = keras.Input((8, 8, 3))
    mask = keras.Input((5, 5), dtype="bool")
    x = PatchEmbedding(16, 4, use_class_token=True)(tokens)
    x = TransformerBlock(2, 32, name="masked")(x, attention_mask=mask)
    model = keras.Model([tokens, mask], x)
    masks = np.ones((2, 5, 5), bool)
    masks[:, :, 3] = False
    scores = inspection.attention_model(model)([np.ones((2, 8, 8, 3), "float32"), masks])
    scores = keras.ops.convert_to_numpy(scores["masked"])
    np.testing.assert_allclose(scores[..., 3], 0.0, atol=1e-7)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)


def test_shared_block_is_read_at_its_call_in_the_model_inspected():
    block = TransformerBlock(2, 32, name="shared")
    first_inputs, second_inputs = keras.Input((5, 16)), keras.Input((5, 16))
    keras.Model(first_inputs, block(first_inputs), name="first")
    second = keras.Model(second_inputs, block(second_inputs * 2.0), name="second")
    tokens = np.random.default_rng(1).normal(size=(2, 5, 16)).astype("float32")
    scores = keras.ops.convert_to_numpy(inspection.attention_model(second)(tokens)["shared"])
    _, expected = block(tokens * 2.0, return_attention_scores=True)
    np.testing.assert_allclose(scores, keras.ops.convert_to_numpy(expected), atol=1e-6)


def eager(model, x):
    return {name: keras.ops.convert_to_numpy(value) for name, value in model(x).items()}


def test_attention_model_saves_and_reloads(hybrid, tmp_path):
    """Issue #35: a `.keras` file of the attention model (a constant mask included), and
    the attention model of a model loaded from `.keras`."""
    deit = small_vit(use_distillation_token=True, pooling="token")
    inputs = keras.Input((8, 8, 3))
    x = PatchEmbedding(16, 4, use_class_token=True, name="embed")(inputs)
    masked = keras.Model(inputs, TransformerBlock(2, 32, name="t")(x, attention_mask=np.eye(5, dtype=bool)[None]))
    for model, x in ((deit, images(2)), (hybrid, images(2)), (masked, np.ones((2, 8, 8, 3), "float32"))):
        attention = inspection.attention_model(model)
        path = str(tmp_path / f"{model.name}_attention.keras")
        attention.save(path)
        reloaded = keras.saving.load_model(path)
        expected, got = eager(attention, x), eager(reloaded, x)  # eager: no compilation per model
        assert list(got) == list(expected)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], atol=1e-6, err_msg=f"{model.name} {name}")
            np.testing.assert_allclose(got[name].sum(-1), 1.0, atol=1e-5)
    assert expected["t"].reshape(-1, 5, 5).argmax(-1).tolist() == [list(range(5))] * 4  # the identity mask, kept
    deit.save(tmp_path / "deit.keras")
    loaded = keras.saving.load_model(tmp_path / "deit.keras")
    scores = eager(inspection.attention_model(loaded), images(2))
    assert scores["block_0"].shape == (2, 2, 18, 18)  # class and distillation tokens
    for name in ("block_0", "block_1"):
        np.testing.assert_allclose(scores[name], numpy_scores(deit, name, images(2)), atol=1e-5)


@pytest.mark.slow
def test_seed_vit():
    model = create_model("seed_vit")
    grid = inspection.patch_grid(model)
    assert grid == ((72, 72), (6, 6), (12, 12), 0)
    x = images(2, size=72, seed=5)
    scores = inspection.attention_model(model).predict(x, verbose=0)
    assert scores["block_0"].shape == (2, 4, 144, 144)
    np.testing.assert_allclose(scores["block_0"], numpy_scores(model, "block_0", x), atol=1e-5)
    distances = inspection.mean_attention_distance(scores, grid.grid_shape, grid.patch_size)
    assert distances.shape == (1, 4)
    # Between a head that only looks at itself (0 px) and the farthest corner pair.
    assert np.all(distances > 0) and np.all(distances < np.hypot(66, 66))
    rollout = inspection.attention_rollout(scores)
    assert rollout.shape == (2, 144, 144)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-6)


def random_attention(rng, shape):
    a = rng.uniform(size=shape)
    return a / a.sum(-1, keepdims=True)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_of_identity_attention_is_identity(fusion):
    identity = np.broadcast_to(np.eye(5), (2, 3, 5, 5))
    rollout = inspection.attention_rollout([identity], head_fusion=fusion)
    np.testing.assert_allclose(rollout, np.broadcast_to(np.eye(5), (2, 5, 5)))


def test_rollout_two_layers_by_hand():
    rng = np.random.default_rng(0)
    a1, a2 = random_attention(rng, (2, 3, 4, 4)), random_attention(rng, (2, 3, 4, 4))
    step1 = (a1.mean(1) + np.eye(4)) / 2  # rows of A + I sum to 2
    step2 = (a2.mean(1) + np.eye(4)) / 2
    expected = np.einsum("bij,bjk->bik", step2, step1)
    np.testing.assert_allclose(inspection.attention_rollout([a1, a2]), expected, atol=1e-12)
    # A dict is ordered by block index, not by insertion or string order.
    as_dict = {"block_10": a2, "block_2": a1}
    np.testing.assert_allclose(inspection.attention_rollout(as_dict), expected, atol=1e-12)
    np.testing.assert_allclose(inspection.attention_rollout(expected[:, None]).sum(-1), 1.0)


def test_rollout_head_fusion_and_discard():
    heads = np.array([[[0.1, 0.9], [0.6, 0.4]], [[0.3, 0.7], [0.2, 0.8]]])[None]  # (1, 2, 2, 2)
    fused_max = np.array([[0.3, 0.9], [0.6, 0.8]]) + np.eye(2)
    np.testing.assert_allclose(
        inspection.attention_rollout(heads, head_fusion="max")[0], fused_max / fused_max.sum(-1, keepdims=True)
    )
    # The two lowest of [[0.1, 0.9], [0.6, 0.4]] are 0.1 (entry (0, 0), kept) and 0.4.
    result = inspection.attention_rollout(heads[:, :1], discard_ratio=0.5)[0]
    np.testing.assert_allclose(result, [[0.55, 0.45], [0.375, 0.625]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"head_fusion": "median"}, "head_fusion='median'"),
        ({"discard_ratio": 1.0}, "discard_ratio=1.0"),
        ({"scores": [np.ones((2, 3, 4))]}, r"Received: shapes \[\(2, 3, 4\)\]"),
        ({"scores": [np.ones((1, 2, 4, 4)), np.ones((1, 2, 5, 5))]}, r"\(1, 2, 5, 5\)"),
        ({"scores": []}, "scores=\\[\\]"),
    ],
)
def test_rollout_bad_input(kwargs, match):
    kwargs = {"scores": [np.full((1, 2, 4, 4), 0.25)], **kwargs}
    with pytest.raises(ValueError, match=match):
        inspection.attention_rollout(**kwargs)


def brute_force_mean_distance(grid_shape, patch_size):
    """Mean distance over all (query, key) pairs of patch centers, in pixels."""
    centers = [((r + 0.5) * patch_size[0], (c + 0.5) * patch_size[1])
               for r in range(grid_shape[0]) for c in range(grid_shape[1])]
    pairs = list(itertools.product(centers, centers))
    return sum(np.hypot(a[0] - b[0], a[1] - b[1]) for a, b in pairs) / len(pairs)


@pytest.mark.parametrize(
    "grid_shape, patch_size, prefix", [((3, 4), (5, 5), 1), ((2, 2), (16, 16), 0), ((4, 3), (4, 8), 2)]
)
def test_uniform_attention_distance(grid_shape, patch_size, prefix):
    n = prefix + grid_shape[0] * grid_shape[1]
    uniform = np.full((2, 3, n, n), 1.0 / n)  # prefix keys get weight too: renormalized away
    result = inspection.mean_attention_distance(uniform, grid_shape, patch_size, num_prefix_tokens=prefix)
    assert result.shape == (3,)
    np.testing.assert_allclose(result, brute_force_mean_distance(grid_shape, patch_size), rtol=1e-10)


def test_attention_distance_of_local_and_fixed_attention():
    grid, patch = (3, 3), (4, 8)  # 9 patches, 4 px tall, 8 px wide
    local = np.broadcast_to(np.eye(9), (1, 1, 9, 9))
    to_first = np.zeros((1, 1, 9, 9))
    to_first[..., 0] = 1.0  # every query looks at patch (0, 0)
    distances = inspection.mean_attention_distance({"block_0": local, "block_1": to_first}, grid, patch)
    assert distances.shape == (2, 1)
    expected = np.mean([np.hypot(4 * r, 8 * c) for r in range(3) for c in range(3)])
    np.testing.assert_allclose(distances[:, 0], [0.0, expected])


def test_attention_distance_bad_grid():
    with pytest.raises(ValueError, match=r"N=17, grid_shape=\(4, 4\), num_prefix_tokens=0"):
        inspection.mean_attention_distance(np.full((1, 2, 17, 17), 1 / 17), (4, 4), 4)


def test_token_mixing_weights_mixer(mixer):
    model = mixer
    kernel = keras.ops.convert_to_numpy(model.get_layer("block_1").token_mixing.fc1.kernel)  # (16, 8)
    weights = inspection.token_mixing_weights(model, "block_1")
    assert weights.shape == (8, 4, 4)
    for unit, row, col in itertools.product(range(8), range(4), range(4)):
        assert weights[unit, row, col] == kernel[row * 4 + col, unit]
    np.testing.assert_array_equal(inspection.token_mixing_weights(model, -1), weights)
    first = keras.ops.convert_to_numpy(model.get_layer("block_0").token_mixing.fc1.kernel)
    np.testing.assert_array_equal(inspection.token_mixing_weights(model), first.T.reshape(8, 4, 4))


def test_token_mixing_weights_hybrids(hybrid):
    model = hybrid
    kernel = keras.ops.convert_to_numpy(model.get_layer("block_0").token_mixing.fc1.kernel)  # (17, 6)
    np.testing.assert_array_equal(inspection.token_mixing_weights(model, 0), kernel[1:].T.reshape(6, 4, 4))
    conv = HybridConvMixerMixer(conv_depth=1, mixer_depth=1, patch_size=2, hidden_dim=8, kernel_size=3,
                                token_mlp_dim=5, input_shape=(8, 12, 3), classes=2)
    kernel = keras.ops.convert_to_numpy(conv.get_layer("block_1").token_mixing.fc1.kernel)  # (24, 5)
    np.testing.assert_array_equal(inspection.token_mixing_weights(conv, "block_1"), kernel.T.reshape(5, 4, 6))


def test_token_mixing_weights_bad_input(vit, hybrid):
    with pytest.raises(ValueError, match="'vit' has no MixerBlock.*2 TransformerBlock"):
        inspection.token_mixing_weights(vit)
    with pytest.raises(ValueError, match=r"\['block_0'\].*\[-1, 0\]. Received: block='block_1'"):
        inspection.token_mixing_weights(hybrid, "block_1")
    with pytest.raises(ValueError, match="Received: block=3"):
        inspection.token_mixing_weights(hybrid, 3)
