import re

import keras
import numpy as np
import pytest

from keras_vitmix.layers import MultiHeadSelfAttention

from . import _layer_checks as lc

HEADS = 4
SHAPE = (lc.BATCH, lc.TOKENS, lc.DIM)
SCORES_SHAPE = (lc.BATCH, HEADS, lc.TOKENS, lc.TOKENS)


def padding_mask(valid=(12, 9)):
    """(B, N) booleans, True on the first `valid[b]` tokens of sample b."""
    return np.arange(lc.TOKENS)[None, :] < np.asarray(valid)[:, None]


def built_layer(seed=0, **kwargs):
    layer = MultiHeadSelfAttention(HEADS, **kwargs)
    layer.build(SHAPE)
    lc.randomize_weights(layer, seed=seed)
    return layer


def call(layer, x, **kwargs):
    outputs = layer(x, **kwargs)
    if isinstance(outputs, tuple):
        return tuple(lc.to_numpy(o) for o in outputs)
    return lc.to_numpy(outputs)


def reference_attention(layer, x, mask=None):
    """NumPy re-computation from the layer's weights: qkv laid out (3, heads, head_dim)."""
    wqkv, bqkv = (lc.to_numpy(w).astype("float64") for w in layer.qkv.weights)
    wproj, bproj = (lc.to_numpy(w).astype("float64") for w in layer.proj.weights)
    batch, tokens, _ = x.shape
    head_dim = wqkv.shape[1] // (3 * HEADS)
    qkv = (x.astype("float64") @ wqkv + bqkv).reshape(batch, tokens, 3, HEADS, head_dim)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, N, d)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    out = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, HEADS * head_dim)
    return out @ wproj + bproj, scores


class TestMultiHeadSelfAttentionLayer(lc.LayerTestCase):
    def test_run_layer_test(self):
        self.check_layer(
            MultiHeadSelfAttention,
            {"num_heads": HEADS, "dropout": 0.1},
            input_shape=SHAPE,
            expected_output_shape=SHAPE,
            expected_num_trainable_weights=4,
            expected_num_non_trainable_weights=0,
        )

    def test_run_layer_test_with_scores_key_dim_no_bias(self):
        self.check_layer(
            MultiHeadSelfAttention,
            {"num_heads": HEADS, "key_dim": 6, "use_bias": False},
            input_shape=SHAPE,
            call_kwargs={"return_attention_scores": True},
            expected_output_shape=(SHAPE, SCORES_SHAPE),
            expected_output_dtype=("float32", "float32"),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=0,
            # Keras's fit step calls the layer without `call_kwargs`, so it would compare
            # a single output against the (outputs, scores) pair; the fit step runs in
            # the test above.
            run_training_check=False,
        )


@pytest.mark.parametrize("policy", lc.MIXED_POLICIES)
@pytest.mark.parametrize(
    "call_kwargs",
    [{}, {"use_causal_mask": True}, {"attention_mask": padding_mask(), "return_attention_scores": True}],
    ids=["fused", "fused_causal", "explicit_padding"],
)
def test_mixed_precision(policy, call_kwargs):
    outputs = lc.check_mixed_precision(MultiHeadSelfAttention, {"num_heads": HEADS}, SHAPE, policy, call_kwargs)
    if call_kwargs.get("return_attention_scores"):
        scores = outputs[1]
        assert scores.shape == SCORES_SHAPE
        np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
        assert np.abs(scores * ~padding_mask()[:, None, None, :]).max() < 1e-9


def test_saved_model_roundtrip(tmp_path):
    lc.check_saved_model_roundtrip(MultiHeadSelfAttention(HEADS, key_dim=6, dropout=0.1), SHAPE, tmp_path)


def test_config_matches_signature():
    lc.check_config_matches_signature(MultiHeadSelfAttention(HEADS, key_dim=6, dropout=0.1, use_bias=False))


@pytest.mark.parametrize("key_dim, use_bias", [(None, True), (6, True), (None, False)])
def test_parameter_count(key_dim, use_bias):
    layer = MultiHeadSelfAttention(HEADS, key_dim=key_dim, use_bias=use_bias)
    layer.build(SHAPE)
    head_dim = key_dim or lc.DIM // HEADS
    expected = lc.attention_param_count(lc.DIM, HEADS, head_dim, use_bias)
    assert lc.count_params(layer.trainable_weights) == expected


def test_key_dim_sets_head_size():
    layer = MultiHeadSelfAttention(HEADS, key_dim=6)
    out, scores = call(layer, lc.random_array(SHAPE), return_attention_scores=True)
    assert tuple(layer.qkv.kernel.shape) == (lc.DIM, 3 * HEADS * 6)
    assert tuple(layer.proj.kernel.shape) == (HEADS * 6, lc.DIM)
    assert out.shape == SHAPE and scores.shape == SCORES_SHAPE
    # key_dim lifts the divisibility requirement (dim 30, 4 heads).
    odd = MultiHeadSelfAttention(HEADS, key_dim=6)
    odd.build((lc.BATCH, lc.TOKENS, 30))
    assert tuple(odd.proj.kernel.shape) == (HEADS * 6, 30)


@pytest.mark.parametrize(
    "mask_kind, causal",
    [(None, False), (None, True), ("padding", False), ("padding", True), ("pairs", False)],
)
def test_fused_and_explicit_paths_agree_with_numpy(mask_kind, causal):
    layer = built_layer(seed=1)
    x = lc.random_array(SHAPE, seed=2)
    mask = {None: None, "padding": padding_mask(), "pairs": None}[mask_kind]
    if mask_kind == "pairs":
        mask = np.random.default_rng(3).random((lc.BATCH, lc.TOKENS, lc.TOKENS)) < 0.6
        mask |= np.eye(lc.TOKENS, dtype=bool)  # no fully masked query row
    kwargs = {"attention_mask": mask, "use_causal_mask": causal}
    fused = call(layer, x, **kwargs)
    explicit, scores = call(layer, x, return_attention_scores=True, **kwargs)
    np.testing.assert_allclose(fused, explicit, atol=1e-5)

    full = np.ones((lc.BATCH, 1, lc.TOKENS, lc.TOKENS), bool)
    if mask is not None:
        full = full & (mask[:, None, None, :] if mask.ndim == 2 else mask[:, None])
    if causal:
        full = full & np.tril(np.ones((lc.TOKENS, lc.TOKENS), bool))
    ref_out, ref_scores = reference_attention(layer, x, full)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(explicit, ref_out, atol=1e-5)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)


def test_heads_first_route_matches_numpy():
    """JAX's CPU route (heads before tokens in the batched products) computes the same
    attention; tested on every backend, since its code is backend-neutral."""
    layer = built_layer(seed=4)
    x = lc.random_array(SHAPE, seed=5)
    scale = 1.0 / np.sqrt(layer._head_dim)
    expected, _ = reference_attention(layer, x)
    np.testing.assert_allclose(lc.to_numpy(layer._heads_first_attention(x, scale)), expected, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3, 64])
def test_heads_first_route_cut_into_batch_slices_matches_numpy(monkeypatch, threads):
    """The route computes one slice of the batch per CPU (5 samples: even and uneven
    slices, and more CPUs than samples); every cut gives the reference's values."""
    from keras_vitmix.layers import attention

    monkeypatch.setattr(attention, "_cpu_threads", lambda: threads)
    layer = built_layer(seed=4)
    x = lc.random_array((5,) + SHAPE[1:], seed=6)
    expected, _ = reference_attention(layer, x)
    np.testing.assert_allclose(lc.to_numpy(layer._heads_first_attention(x, 1.0 / np.sqrt(layer._head_dim))), expected, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="counts the products in a JAX program")
@pytest.mark.parametrize("threads, products", [(1, 2), (2, 4), (3, 6), (64, 10)])
def test_heads_first_route_runs_one_pair_of_products_per_slice(monkeypatch, threads, products):
    """Under JAX each slice is its own pair of batched products (Q K^T, then P V), which
    XLA can run side by side; at most one slice per sample."""
    import jax

    from keras_vitmix.layers import attention

    monkeypatch.setattr(attention, "_cpu_threads", lambda: threads)
    layer = built_layer(seed=4)
    x = lc.random_array((5,) + SHAPE[1:], seed=6)
    jaxpr = jax.make_jaxpr(lambda x: layer._heads_first_attention(x, 0.5))(x)
    batched = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general" and e.params["dimension_numbers"][1][0]]
    assert len(batched) == products


def test_plain_calls_take_the_heads_first_route_under_jax_on_cpu(monkeypatch):
    from keras_vitmix.layers import attention

    taken = []
    real = MultiHeadSelfAttention._heads_first_attention
    monkeypatch.setattr(
        MultiHeadSelfAttention, "_heads_first_attention", lambda self, *a: taken.append(1) or real(self, *a)
    )
    layer = built_layer(seed=4)
    x = lc.random_array(SHAPE, seed=5)
    layer(x)
    layer(x, attention_mask=padding_mask())  # masks take the fused path
    layer(x, return_attention_scores=True)  # scores take the explicit path
    on_cpu = False
    if keras.backend.backend() == "jax":
        import jax

        on_cpu = jax.default_backend() == "cpu"
    assert attention._jax_on_cpu() == on_cpu
    assert taken == ([1] if on_cpu else [])  # the plain call only


def test_scores_shape_dtype_and_rows():
    out, scores = MultiHeadSelfAttention(HEADS)(lc.random_array(SHAPE), return_attention_scores=True)
    assert tuple(out.shape) == SHAPE
    assert tuple(scores.shape) == SCORES_SHAPE
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"
    scores = lc.to_numpy(scores)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    assert (scores >= 0).all()


def test_causal_mask_zeroes_future():
    x = lc.random_array(SHAPE)
    _, scores = call(built_layer(), x, use_causal_mask=True, return_attention_scores=True)
    above = np.triu(np.ones((lc.TOKENS, lc.TOKENS), bool), k=1)
    assert np.abs(scores[..., above]).max() < 1e-9
    np.testing.assert_allclose(scores[..., 0, 0], 1.0, atol=1e-6)  # first token sees itself only


def test_padding_mask_ignores_masked_tokens():
    layer = built_layer(seed=4)
    mask = padding_mask()
    x = lc.random_array(SHAPE, seed=5)
    out, scores = call(layer, x, attention_mask=mask, return_attention_scores=True)
    assert np.abs(scores * ~mask[:, None, None, :]).max() < 1e-9

    changed = np.where(mask[..., None], x, lc.random_array(SHAPE, seed=6, scale=10.0))
    for kwargs in ({}, {"return_attention_scores": True}):  # fused and explicit paths
        new = call(layer, changed, attention_mask=mask, **kwargs)
        new = new[0] if kwargs else new
        np.testing.assert_allclose(new[mask], out[mask], atol=1e-5)
    assert not np.allclose(new[~mask], out[~mask], atol=1e-3)  # the masked ones did change


def test_permutation_equivariance():
    layer = built_layer(seed=7)
    x = lc.random_array(SHAPE, seed=8)
    perm = np.random.default_rng(9).permutation(lc.TOKENS)
    np.testing.assert_allclose(call(layer, x[:, perm]), call(layer, x)[:, perm], atol=1e-5)


def test_dropout_only_in_training():
    layer = MultiHeadSelfAttention(HEADS, dropout=0.5)
    x = lc.random_array(SHAPE, seed=10)
    inference = call(layer, x)
    np.testing.assert_allclose(call(layer, x, training=False), inference, atol=1e-6)
    np.testing.assert_allclose(call(layer, x, return_attention_scores=True)[0], inference, atol=1e-5)
    assert not np.allclose(call(layer, x, training=True), inference, atol=1e-3)


def test_dim_not_divisible_by_heads_raises():
    with pytest.raises(ValueError) as info:
        MultiHeadSelfAttention(num_heads=5)(lc.random_array(SHAPE))
    assert re.search(r"\b32\b", str(info.value)) and re.search(r"\b5\b", str(info.value)), info.value


def test_bad_attention_mask_rank_raises():
    with pytest.raises(ValueError, match="attention_mask"):
        MultiHeadSelfAttention(HEADS)(lc.random_array(SHAPE), attention_mask=np.ones((lc.TOKENS,), bool))


@pytest.mark.parametrize(
    "name, value", [("num_heads", 0), ("num_heads", -2), ("key_dim", 0), ("dropout", -0.1), ("dropout", 1.0)]
)
def test_bad_arguments_raise(name, value):
    lc.check_bad_argument(MultiHeadSelfAttention, {"num_heads": HEADS}, name, value)


def _on_accelerator():
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.is_available()
    return False


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the route calls torch directly")
def test_torch_route_matches_numpy_and_the_keras_op_with_gradients(monkeypatch):
    """torch's route (strided views straight into scaled_dot_product_attention)
    gives the reference's values, and the Keras op's outputs and input gradients."""
    from keras_vitmix.layers import attention

    from tests.backend_utils import input_gradient

    layer = built_layer(seed=4)
    x = lc.random_array(SHAPE, seed=5)
    expected, _ = reference_attention(layer, x)
    got = layer._torch_attention(keras.ops.convert_to_tensor(x), 1.0 / np.sqrt(layer._head_dim))
    np.testing.assert_allclose(lc.to_numpy(got), expected, atol=1e-5)
    dy = keras.ops.convert_to_tensor(lc.random_array(SHAPE, seed=6))
    results = []
    for route in (True, False):
        if not route:
            monkeypatch.setattr(attention, "_torch_tensor", lambda tensor: False)
        results.append((lc.to_numpy(layer(x)), input_gradient(lambda t: keras.ops.sum(layer(t) * dy), x)))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-5)


def test_plain_calls_take_the_torch_route_under_torch(monkeypatch):
    """Only a plain call (no mask, scores or active dropout) of a torch tensor with data
    (not the "meta" tensors of Keras's shape inference) under torch."""
    from keras_vitmix.layers import attention

    taken = []
    real = MultiHeadSelfAttention._torch_attention
    monkeypatch.setattr(MultiHeadSelfAttention, "_torch_attention", lambda self, *a: taken.append(1) or real(self, *a))
    layer = built_layer(seed=4)
    x = keras.ops.convert_to_tensor(lc.random_array(SHAPE, seed=5))
    layer(x)
    layer(x, attention_mask=padding_mask())
    layer(x, return_attention_scores=True)
    under_torch = keras.backend.backend() == "torch"
    assert attention._torch_tensor(x) == under_torch
    assert not attention._torch_tensor(lc.random_array(SHAPE))  # a NumPy array is not a torch tensor
    if under_torch:
        import torch

        assert not attention._torch_tensor(torch.empty(SHAPE, device="meta"))
    assert taken == ([1] if under_torch else [])


@pytest.mark.parametrize("flash", [None, False])
def test_flash_attention_setting_reaches_the_fused_op(monkeypatch, flash):
    """None follows Keras's global switch (None: where possible; False after
    `keras.config.disable_flash_attention()`), False always passes False; outputs equal."""
    from keras_vitmix.layers import attention

    seen = []
    real = attention.ops.dot_product_attention
    monkeypatch.setattr(
        attention.ops, "dot_product_attention",
        lambda *a, **k: seen.append(k["flash_attention"]) or real(*a, **k),
    )
    layer = built_layer(seed=6, flash_attention=flash)
    x = lc.random_array(SHAPE, seed=7)
    mask = padding_mask()  # masked calls take the fused op on every backend
    expected, _ = reference_attention(layer, x, mask[:, None, None, :])
    np.testing.assert_allclose(call(layer, x, attention_mask=mask), expected, atol=1e-5)
    keras.config.disable_flash_attention()
    try:
        call(layer, x, attention_mask=mask)
    finally:
        keras.config.enable_flash_attention()
    assert seen == ([None, False] if flash is None else [False, False])


def test_flash_attention_true_without_a_kernel_raises_a_clear_error():
    """On a CPU (and under TensorFlow anywhere) there is no flash kernel: True says so."""
    if _on_accelerator():
        pytest.skip("a GPU may have the kernel: benchmarks/gpu.py exercises it there")
    layer = built_layer(seed=6, flash_attention=True)
    with pytest.raises(ValueError, match=r"flash_attention=True.*no flash-attention kernel.*backend="):
        layer(lc.random_array(SHAPE, seed=7))
    # Scores and attention dropout compute explicitly whatever the setting.
    out, scores = call(layer, lc.random_array(SHAPE, seed=7), return_attention_scores=True)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("value", [1, "yes", 0.5])
def test_bad_flash_attention_raises(value):
    with pytest.raises(ValueError, match=re.escape(f"flash_attention={value!r}")):
        MultiHeadSelfAttention(HEADS, flash_attention=value)


def test_flash_attention_round_trips_through_config():
    layer = MultiHeadSelfAttention(HEADS, flash_attention=False)
    assert MultiHeadSelfAttention.from_config(layer.get_config()).flash_attention is False


def test_flash_attention_true_lets_out_of_memory_through(monkeypatch):
    """A kernel that exists but finds the device full is not 'no kernel'."""
    from keras_vitmix.layers import attention

    def full(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 768.00 MiB")

    monkeypatch.setattr(attention.ops, "dot_product_attention", full)
    with pytest.raises(RuntimeError, match="out of memory"):
        attention._fused_attention(*(lc.random_array((2, 4, HEADS, 8)),) * 3, None, 0.35, False, True)


# cuDNN's fused attention under JAX on a GPU: the layer decides itself where it fits.
VIT_B = (8, 197, 12, 64)  # (batch, tokens, heads, head size) of ViT-B/16


@pytest.mark.parametrize(
    "query_shape, dtype, training, mask_shape, capability, expected",
    [
        (VIT_B, "bfloat16", False, None, (9, 0), True),  # inference takes 197 tokens
        (VIT_B, "bfloat16", True, None, (9, 0), False),  # training refuses an odd length
        ((8, 196, 12, 64), "bfloat16", True, None, (9, 0), True),
        ((8, 196, 12, 64), "float16", True, None, (8, 0), True),
        (VIT_B, "float32", False, None, (9, 0), False),  # float16/bfloat16 only
        ((8, 196, 3, 192), "bfloat16", False, None, (9, 0), True),  # Hopper: head size up to 256
        ((8, 196, 3, 192), "bfloat16", False, None, (8, 6), False),  # Ampere: up to 128
        ((8, 196, 3, 192), "bfloat16", False, None, None, False),  # unknown GPU: up to 128
        ((8, 196, 2, 264), "bfloat16", False, None, (9, 0), False),
        ((8, 196, 12, 60), "bfloat16", False, None, (9, 0), False),  # not a multiple of 8
        ((8, 196, 12, 64), "bfloat16", False, None, (7, 5), False),  # older than Ampere
        ((8, 196, 12, 64), "bfloat16", False, (8, 1, 1, 196), (9, 0), False),  # padding mask
        ((8, 196, 12, 64), "bfloat16", False, (8, 1, 196, 196), (9, 0), True),
        ((8, None, 12, 64), "bfloat16", False, None, (9, 0), False),  # length unknown
    ],
)
def test_cudnn_attention_fits(query_shape, dtype, training, mask_shape, capability, expected):
    from keras_vitmix.layers.attention import cudnn_attention_fits

    assert cudnn_attention_fits(query_shape, dtype, training, mask_shape, capability) is expected


def test_cudnn_attention_fits_rejects_a_query_of_another_rank():
    from keras_vitmix.layers.attention import cudnn_attention_fits

    with pytest.raises(ValueError, match=r"Received: query_shape=\(8, 197, 768\)"):
        cudnn_attention_fits((8, 197, 768), "bfloat16", False)


@pytest.mark.parametrize(
    "tokens, training, flash, expected",
    [(13, True, None, False), (13, False, None, None), (12, True, None, None), (13, True, True, True)],
)
def test_layer_passes_flash_false_where_cudnn_would_refuse(tokens, training, flash, expected, monkeypatch):
    """As under JAX on a GPU: a training call of an odd length gets `flash_attention=False`
    (Keras would otherwise try cuDNN and log its refusal); elsewhere the choice stays
    Keras's (None), and an explicit `flash_attention=True` is left to fail loudly."""
    from keras_vitmix import config
    from keras_vitmix.layers import attention

    seen = []
    fused = attention._fused_attention

    def recording(q, k, v, mask, scale, is_causal, flash):
        seen.append(flash)
        return fused(q, k, v, mask, scale, is_causal, flash if flash is not True else None)

    monkeypatch.setattr(attention, "_jax_on_gpu", lambda: True)
    monkeypatch.setattr(attention, "_gpu_compute_capability", lambda: (9, 0))
    monkeypatch.setattr(attention, "_fused_attention", recording)
    layer = MultiHeadSelfAttention(2, flash_attention=flash, dtype="mixed_bfloat16")
    with config.fast_routes(False, routes=["attention_jax_cpu", "attention_torch"]):
        layer(lc.random_array((2, tokens, 16), seed=1), training=training)
    assert seen == [expected]
