"""Multi-head self-attention with one fused query/key/value projection.

Vaswani et al., "Attention Is All You Need", NeurIPS 2017
(https://arxiv.org/abs/1706.03762): softmax(Q K^T / sqrt(d)) V, computed per head.
Without scores the layer calls `keras.ops.dot_product_attention`, which dispatches to
each backend's fused kernel (flash attention where available; `flash_attention=` chooses),
except on two fast routes (`keras_vitmix.config`): under JAX on the CPU plain
self-attention multiplies with heads first ("attention_jax_cpu", `_heads_first_attention`),
and under torch it hands strided views to torch's kernel without Keras's copies and
checks ("attention_torch", `_torch_attention`). Under JAX on a GPU the layer itself
decides whether cuDNN's fused attention takes the shape (`cudnn_attention_fits`), so that
Keras does not try, fail and log an error. With scores it computes the softmax
explicitly in float32 so the maps can be inspected. All paths agree; docs/performance.md
has the measurements.
"""

import keras
from keras import ops

from keras_vitmix import config
from keras_vitmix._internals import call_sublayer as _sub
from keras_vitmix.layers._checks import check_positive_int, check_rate
from keras_vitmix.layers._platform import cpu_threads as _cpu_threads
from keras_vitmix.layers._platform import gpu_compute_capability as _gpu_compute_capability
from keras_vitmix.layers._platform import jax_on_cpu as _jax_on_cpu
from keras_vitmix.layers._platform import jax_on_gpu as _jax_on_gpu
from keras_vitmix.layers._platform import torch_tensor as _torch_tensor
from keras_vitmix.layers.linear import Dense


@keras.saving.register_keras_serializable(package="keras_vitmix")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Self-attention over a token sequence (B, N, D).

    The `qkv` projection's output is laid out as (3, num_heads, key_dim), as in timm,
    so fused checkpoints map onto it with a transpose.

    Args:
        num_heads: int, number of attention heads.
        key_dim: optional int, size of each head; defaults to `D // num_heads`.
        dropout: float in [0, 1), dropout on the attention probabilities.
        use_bias: bool, whether the projections have biases.
        flash_attention: None, True or False. None follows
            `keras.config.is_flash_attention_enabled()`: a fused flash kernel where the
            backend has one for the inputs (JAX: cuDNN on an Ampere or newer GPU;
            torch: CUDA; both in float16/bfloat16), the plain product otherwise. True
            requires the flash kernel and raises a `ValueError` where there is none
            (on a CPU, under TensorFlow); False never uses it. Calls that return scores
            or apply attention dropout compute the softmax explicitly either way.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor (B, N, D).
        attention_mask: optional boolean tensor, True where attention is allowed:
            (B, N) masks keys (padding), (B, N, N) or (B, heads, N, N) masks pairs.
        use_causal_mask: bool, forbids each query to attend to later tokens.
        return_attention_scores: bool, also return the softmax scores.
        training: bool, enables dropout.

    Returns:
        Tensor (B, N, D), or `(outputs, scores)` with scores (B, heads, N, N) in
        float32 when `return_attention_scores=True`.

    Example:

    >>> mhsa = MultiHeadSelfAttention(num_heads=4)
    >>> y, scores = mhsa(keras.ops.ones((2, 10, 32)), return_attention_scores=True)
    >>> scores.shape
    (2, 4, 10, 10)

    Reference:
        Vaswani et al., 2017, https://arxiv.org/abs/1706.03762
    """

    def __init__(self, num_heads, key_dim=None, dropout=0.0, use_bias=True, flash_attention=None, **kwargs):
        super().__init__(**kwargs)
        if not (flash_attention is None or isinstance(flash_attention, bool)):
            raise ValueError(
                f"`flash_attention` must be None, True or False. Received: flash_attention={flash_attention!r}"
            )
        self.flash_attention = flash_attention
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.key_dim = None if key_dim is None else check_positive_int(key_dim, "key_dim")
        self.dropout = check_rate(dropout, "dropout")
        self.use_bias = use_bias
        self.attention_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="attention_dropout")

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects tokens of shape (batch, tokens, dim). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        dim = input_shape[-1]
        if self.key_dim is None and dim % self.num_heads:
            raise ValueError(
                f"The token dimension must be divisible by `num_heads` (or pass `key_dim`). "
                f"Received: dim={dim}, num_heads={self.num_heads}"
            )
        self._head_dim = self.key_dim or dim // self.num_heads
        inner = self.num_heads * self._head_dim
        self.qkv = Dense(3 * inner, use_bias=self.use_bias, dtype=self.dtype_policy, name="qkv")
        self.proj = Dense(dim, use_bias=self.use_bias, dtype=self.dtype_policy, name="proj")
        self.qkv.build(input_shape)
        self.proj.build(tuple(input_shape[:-1]) + (inner,))
        # Checked by Keras at this layer's call, before any sublayer sees a wrong shape.
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: dim})

    def _split_heads(self, inputs):
        qkv = _sub(self.qkv, inputs)  # (B, N, 3 * H * d)
        batch, tokens = ops.shape(qkv)[0], ops.shape(qkv)[1]
        qkv = ops.reshape(qkv, (batch, tokens, 3, self.num_heads, self._head_dim))
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, N, H, d)

    def _mask(self, attention_mask, use_causal_mask, tokens):
        """Combines the masks into one boolean (B|1, H|1, N, N) tensor, or None."""
        mask = None
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "bool")
            rank = len(mask.shape)
            if rank == 2:  # (B, N) key padding
                mask = mask[:, None, None, :]
            elif rank == 3:  # (B, N, N)
                mask = mask[:, None, :, :]
            elif rank != 4:
                raise ValueError(
                    "`attention_mask` must have shape (B, N), (B, N, N) or (B, heads, N, N). "
                    f"Received: attention_mask.shape={tuple(attention_mask.shape)}"
                )
        if use_causal_mask:
            causal = ops.tril(ops.ones((tokens, tokens), dtype="bool"))[None, None]
            mask = causal if mask is None else ops.logical_and(mask, causal)
        return mask

    def call(
        self,
        inputs,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        tokens = ops.shape(inputs)[1]
        scale = 1.0 / float(self._head_dim) ** 0.5
        dropout_active = training and self.dropout > 0.0
        plain = not (return_attention_scores or dropout_active or use_causal_mask) and attention_mask is None
        flash = self.flash_attention
        if flash is None:
            flash = keras.config.is_flash_attention_enabled()  # None (where possible) or False
        if plain and flash is not True and _jax_on_cpu() and config.fast_routes_enabled("attention_jax_cpu"):
            return self._heads_first_attention(inputs, scale)
        if plain and flash is not True and _torch_tensor(inputs) and config.fast_routes_enabled("attention_torch"):
            return self._torch_attention(inputs, scale)
        q, k, v = self._split_heads(inputs)
        if return_attention_scores or dropout_active:
            outputs, scores = self._explicit_attention(
                q, k, v, attention_mask, use_causal_mask, scale, training
            )
        else:
            mask, is_causal = None, use_causal_mask
            if attention_mask is not None:
                # Both masks in one: Keras before 3.15 dropped `is_causal` under torch when
                # a mask was given too.
                mask, is_causal = self._mask(attention_mask, use_causal_mask, tokens), False
            if flash is None and _jax_on_gpu() and not cudnn_attention_fits(
                q.shape, q.dtype, training=bool(training), mask_shape=None if mask is None else mask.shape,
                compute_capability=_gpu_compute_capability(),
            ):
                flash = False  # Keras would try cuDNN, log the refusal with a traceback, then fall back
            outputs = _fused_attention(q, k, v, mask, scale, is_causal, flash)  # (B, N, H, d)
            scores = None
        batch = ops.shape(outputs)[0]
        outputs = _sub(self.proj, ops.reshape(outputs, (batch, tokens, self.num_heads * self._head_dim)))
        return (outputs, scores) if return_attention_scores else outputs

    def _torch_attention(self, inputs, scale):
        """Plain self-attention under torch, as timm computes it: Q, K and V are strided
        views of the projection, permuted to (B, H, N, d), and go to
        `torch.nn.functional.scaled_dot_product_attention` as they are. Keras's
        `dot_product_attention` (what the other path calls) transposes them to that
        layout and copies each into contiguous memory, and its output comes back as a
        strided (B, N, H, d) view. Here the kernel reads the strided views, and its output
        is copied once, by the final reshape. The same kernel computes the same values,
        and the Keras op's checks and casts no longer run in Python at every call.

        On a GPU, torch picks the kernel itself (flash attention first where the inputs
        allow it), as Keras's op does with `flash_attention=None`; only
        `flash_attention=True` goes through Keras's op, which says why when no flash
        kernel can run."""
        import torch

        qkv = _sub(self.qkv, inputs)
        batch, tokens = qkv.shape[0], qkv.shape[1]
        q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, self._head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        outputs = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, H, N, d)
        outputs = outputs.transpose(1, 2).reshape(batch, tokens, self.num_heads * self._head_dim)
        return _sub(self.proj, outputs)

    def _heads_first_attention(self, inputs, scale):
        """softmax(Q K^T) V with heads before tokens, (B, H, N, d): JAX's CPU route.

        There, JAX's `dot_product_attention` (what `keras.ops.dot_product_attention`
        calls) multiplies (B, N, H, d) tensors, and XLA:CPU's batched products in that
        layout are slower, forward and backward, than with heads first. On an
        accelerator the fused kernel stays.

        XLA:CPU fuses the two products and the softmax into one YNNPACK kernel, which runs
        on one thread. The batch is therefore cut into one slice per CPU, computed as
        independent kernels that XLA runs side by side. Each slice computes the same
        values as the whole. The scale multiplies Q (B*H*N*d values) rather than the
        logits (B*H*N*N), which XLA had materialized as a full-size operand."""
        qkv = self.qkv(inputs)
        batch, tokens = ops.shape(qkv)[0], ops.shape(qkv)[1]
        qkv = ops.transpose(ops.reshape(qkv, (batch, tokens, 3, self.num_heads, self._head_dim)), (2, 0, 3, 1, 4))
        q, k, v = qkv[0] * ops.cast(scale, qkv.dtype), qkv[1], qkv[2]
        # A symbolic batch (a shape-polymorphic export) stays one kernel.
        parts = min(batch, _cpu_threads()) if isinstance(batch, int) else 1
        outputs = []
        for rows in _slices(batch, parts):
            logits = ops.matmul(q[rows], ops.swapaxes(k[rows], -1, -2))
            probs = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), v.dtype)
            outputs.append(ops.matmul(probs, v[rows]))
        outputs = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=0)
        outputs = ops.transpose(outputs, (0, 2, 1, 3))  # (B, N, H, d)
        return self.proj(ops.reshape(outputs, (batch, tokens, self.num_heads * self._head_dim)))

    def _explicit_attention(self, q, k, v, attention_mask, use_causal_mask, scale, training):
        tokens = ops.shape(q)[1]
        logits = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32"))
        logits = logits * scale
        mask = self._mask(attention_mask, use_causal_mask, tokens)
        if mask is not None:
            # A large finite value (not -inf) keeps fully masked rows free of NaN.
            logits = ops.where(mask, logits, ops.cast(-1e9, "float32"))
        scores = ops.softmax(logits, axis=-1)  # (B, H, N, N), float32
        probs = _sub(self.attention_dropout, ops.cast(scores, v.dtype), training=training)
        outputs = ops.einsum("bhqk,bkhd->bqhd", probs, v)
        return outputs, scores

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, return_attention_scores=False, **kwargs):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        batch, tokens = inputs.shape[0], inputs.shape[1]
        scores = keras.KerasTensor((batch, self.num_heads, tokens, tokens), dtype="float32")
        return outputs, scores

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "flash_attention": self.flash_attention,
            }
        )
        return config


def _fused_attention(q, k, v, mask, scale, is_causal, flash):
    """`keras.ops.dot_product_attention`; with `flash=True`, a backend that has no flash
    kernel for these inputs raises a `ValueError` that says what it needs."""
    if flash is not True:
        return ops.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal, flash_attention=flash)
    backend = keras.backend.backend()
    try:
        return ops.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal, flash_attention=True)
    except (RuntimeError, ValueError, ImportError, NotImplementedError, AssertionError) as error:
        if "out of memory" in str(error).lower() or "resource_exhausted" in str(error).lower():
            raise  # the kernel exists; the device is full
        raise ValueError(
            "flash_attention=True, but there is no flash-attention kernel for these inputs here. It needs "
            "the JAX backend with cuDNN on an Ampere or newer GPU, or the torch backend on CUDA, with "
            "float16 or bfloat16 inputs (e.g. the 'mixed_bfloat16' policy); TensorFlow has none. Pass "
            "flash_attention=None to use it only where it can run. Received: "
            f"backend={backend}, dtype={q.dtype}, query shape={tuple(q.shape)} (batch, tokens, heads, head size); "
            f"{type(error).__name__}: {str(error)[:300]}"
        ) from error


def cudnn_attention_fits(query_shape, dtype, training, mask_shape=None, compute_capability=None):
    """Whether cuDNN's fused attention under JAX takes self-attention of these inputs.

    Keras's JAX `dot_product_attention` with `flash_attention=None` checks the inputs as
    for inference, then calls `jax.nn.dot_product_attention(implementation="cudnn")`;
    where JAX refuses, Keras logs the error with its traceback (once per layer, at every
    compile) and falls back to XLA's attention. This mirrors JAX's own rules for
    float16/bfloat16 inputs as JAX 0.10 has them (`check_layout` and
    `check_is_flash_attention` in `jax._src.cudnn.fused_attention_stablehlo`), so that
    the layer passes `flash_attention=False` where cuDNN would refuse:

    - the inputs are float16 or bfloat16;
    - the head size is a multiple of 8, at most 128 (256 from compute capability 9.0,
      Hopper), and the GPU is an Ampere (8.0) or newer;
    - in training (the call is differentiated), the sequence length is even: JAX hands
      the training kernel a placeholder bias, and its rule for a bias asks for even
      lengths (ViT-B/16's 197 tokens are refused there, not at inference);
    - a mask covers (tokens, tokens): JAX turns it into a bias of its shape, and refuses
      one broadcast along the queries, such as a (B, 1, 1, N) padding mask.

    Args:
        query_shape: (batch, tokens, heads, head size).
        dtype: the query's dtype.
        training: bool, whether the call is part of a training step.
        mask_shape: the shape of the boolean mask passed along, or None.
        compute_capability: the GPU's, as (major, minor); None where unknown (then at
            most 128 for the head size).

    Returns:
        bool.
    """
    if len(query_shape) != 4:
        raise ValueError(
            f"`query_shape` must be (batch, tokens, heads, head size). Received: query_shape={tuple(query_shape)}"
        )
    tokens, head_dim = query_shape[1], query_shape[3]
    if tokens is None or head_dim is None:
        return False  # not known while tracing: do not let Keras try
    if keras.backend.standardize_dtype(dtype) not in ("float16", "bfloat16"):
        return False
    if compute_capability is not None and tuple(compute_capability) < (8, 0):
        return False
    limit = 256 if compute_capability is not None and tuple(compute_capability) >= (9, 0) else 128
    if head_dim > limit or head_dim % 8:
        return False
    if training and tokens % 2:
        return False
    if mask_shape is not None and tuple(mask_shape[-2:]) != (tokens, tokens):
        return False
    return True


def _slices(size, parts):
    """`parts` contiguous slices covering range(size), as even as possible."""
    if parts == 1:
        return [slice(None)]
    bounds = [size * i // parts for i in range(parts + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]
