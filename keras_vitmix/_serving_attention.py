"""The model that `keras_vitmix.export(..., attention=True)` serves: the model's own
outputs, every attention block's scores and the attention rollout, from one pass.

Built from `inspection.attention_tensors` (a clone of the model's graph whose blocks
also return their scores), so the scores are those of `inspection.attention_model`.
The rollout (Abnar & Zuidema, 2020) is computed in the graph with `keras.ops`, as
`inspection.attention_rollout` computes it in NumPy (heads averaged, identity added,
rows renormalized, layers multiplied), and served as the map a user draws: the class
token's row over the patches, or without a class token the mean over the patches'
rows, reshaped to the patch grid (B, h, w). The prefix tokens (class, distillation,
registers) are counted by `inspection.patch_grid`. Both formats are written by
TensorFlow from this model (`_export_writer.with_attention`), so it is built where
TensorFlow writes; under JAX and torch it is also built in the exporting process, to
check it before the model goes to TensorFlow.
"""

import collections

import keras
from keras import ops

from keras_vitmix import inspection
from keras_vitmix.layers import ConvMixerBlock, MixerBlock, PatchEmbedding, TransformerBlock

SCORES_PREFIX = "attention_"  # + a block's name: its scores (B, heads, N, N)
ROLLOUT = "attention_rollout"  # the rollout map (B, h, w)


def serving_model(model, names, single_name):
    """A functional model from `model`'s input to a dict: its own outputs under the
    names an export gives them, `attention_<block>` for each TransformerBlock and
    `attention_rollout`.

    Args:
        model: a functional model.
        names: the export's names of `model`'s outputs (`_export_writer.output_names`),
            used for a list of outputs; a dict keeps its keys.
        single_name: the name of a model's only output (a tensor) among the others.

    Raises:
        ValueError: a model without TransformerBlocks or without a patch grid (the
            value `attention=True` named, and what is allowed), or outputs whose names
            clash with the attention outputs.
    """
    found, grid = _attention_and_grid(model)
    outputs = found.outputs
    if isinstance(outputs, dict):
        served = dict(outputs)
    elif isinstance(outputs, (list, tuple)):
        served = dict(zip(names, outputs))
    else:
        served = {single_name: outputs}
    attention = {SCORES_PREFIX + name: scores for name, scores in found.scores.items()}
    attention[ROLLOUT] = rollout_map(list(found.scores.values()), grid, _has_class_token(model))
    clash = sorted(set(served) & set(attention))
    if clash:
        raise ValueError(
            f"Model '{model.name}' cannot be exported with attention=True: its outputs {clash} "
            "are named like the attention outputs. Rename them, or export with attention=False."
        )
    return keras.Model(found.inputs, {**served, **attention}, name=f"{model.name}_with_attention")


def _attention_and_grid(model):
    """`inspection.attention_tensors(model)` and `inspection.patch_grid(model)`, or the
    error of `attention=True` for a model that cannot give them."""
    kinds = (TransformerBlock, MixerBlock, ConvMixerBlock)
    blocks = collections.Counter(type(layer).__name__ for layer in model.layers if isinstance(layer, kinds))
    if blocks[TransformerBlock.__name__]:
        try:
            return inspection.attention_tensors(model), inspection.patch_grid(model)
        except ValueError as error:
            reason = str(error)
    else:
        reason = f"it has no TransformerBlock (its blocks: {', '.join(f'{n} {k}' for k, n in blocks.items()) or 'none'})"
    raise ValueError(
        f"`attention=True` serves attention scores and their rollout over the patch grid, and "
        f"model '{model.name}' cannot give them: {reason}. Received: attention=True. Allowed: "
        "attention=True for a model with TransformerBlocks and a PatchEmbedding (ViT, DeiT, "
        "HybridMixerViT), attention=False for any model."
    )


def rollout_map(scores, grid, use_class_token):
    """Attention rollout of `scores` (a list of (B, heads, N, N), first block first) as
    a (B, h, w) map over the patch grid `grid` (`inspection.PatchGrid`).

    `inspection.attention_rollout(scores)[:, 0, prefix:]` with a class token, its mean
    over the patches' rows (`[:, prefix:, prefix:]`) without, reshaped to (h, w); in
    float32, with `keras.ops`, so it runs inside a served graph.
    """
    prefix, (h, w) = grid.num_prefix_tokens, grid.grid_shape
    tokens = scores[0].shape[-1]
    if tokens != prefix + h * w:
        raise ValueError(
            "The attention scores do not match the patch grid: N must be num_prefix_tokens + h * w. "
            f"Received: N={tokens}, grid_shape={(h, w)}, num_prefix_tokens={prefix}"
        )
    eye = ops.eye(tokens, dtype="float32")
    rollout = None
    for layer_scores in scores:
        fused = ops.mean(ops.cast(layer_scores, "float32"), axis=1) + eye  # (B, N, N)
        fused = fused / ops.sum(fused, axis=-1, keepdims=True)
        rollout = fused if rollout is None else ops.matmul(fused, rollout)
    if use_class_token:
        rows = rollout[:, 0, prefix:]  # (B, h * w)
    else:
        rows = ops.mean(rollout[:, prefix:, prefix:], axis=1)
    return ops.reshape(rows, (-1, h, w))


def _has_class_token(model):
    return any(isinstance(layer, PatchEmbedding) and layer.use_class_token for layer in model.layers)
