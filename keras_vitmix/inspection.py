"""Looking inside trained models: attention maps, attention rollout, attention distance,
and the token-mixing weights of MLP-Mixer.

- Attention scores come from a clone of the model's graph (`keras.models.clone_model`)
  whose TransformerBlocks also return their scores: it shares the model's weights,
  follows later training, saves as `.keras`, and exports (`export(..., attention=True)`).
- Attention rollout: Abnar & Zuidema, "Quantifying Attention Flow in Transformers",
  ACL 2020 (https://arxiv.org/abs/2005.00928): fuse the heads, add the identity for
  the residual connection, renormalize, and multiply the layers together.
- Mean attention distance: Dosovitskiy et al., 2021 (https://arxiv.org/abs/2010.11929),
  figure 7: how far, in pixels, each head looks; the "receptive field" of attention.
- Token-mixing weights: Tolstikhin et al., 2021 (https://arxiv.org/abs/2105.01601),
  figure 5: each hidden unit of the first token-mixing Dense, seen as a patch grid.
"""

import collections
import numbers
import re

import keras
import numpy as np

from keras_vitmix.layers import ConvMixerBlock, MixerBlock, PatchEmbedding, ScoredTransformerBlock, TransformerBlock
from keras_vitmix.layers._checks import to_pair

HEAD_FUSIONS = ("mean", "max", "min")

PatchGrid = collections.namedtuple("PatchGrid", "image_size patch_size grid_shape num_prefix_tokens")


def _graph(model):
    """`model` as a functional graph: itself, or for a built Sequential a functional
    model over the same layers and calls."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model of type {type(model).__name__}")
    if isinstance(model, keras.Function):
        return model
    if isinstance(model, keras.Sequential):
        try:  # a Sequential has one input and one output
            return keras.Model(model.inputs[0], model.outputs[0], name=model.name)
        except AttributeError:  # not built yet: no inputs
            pass
    raise ValueError(
        "Inspection needs a functional model (an application, `keras.Model(inputs, outputs)` "
        f"or a built Sequential). Received: model '{model.name}' of type {type(model).__name__}"
    )


def _blocks(graph, layer_type):
    """The `layer_type` layers of the functional `graph`, in graph order."""
    return [layer for layer in graph.layers if isinstance(layer, layer_type)]


def _block_summary(graph):
    """E.g. "2 MixerBlock, 1 ConvMixerBlock", for error messages."""
    layers = graph.layers
    kinds = (TransformerBlock, MixerBlock, ConvMixerBlock, keras.Model)
    counts = collections.Counter(type(layer).__name__ for layer in layers if isinstance(layer, kinds))
    summary = ", ".join(f"{count} {kind}" for kind, count in counts.items()) or "none"
    if any(isinstance(layer, keras.Model) for layer in layers):
        summary += " (nested models are not searched: pass the inner model itself)"
    return summary


AttentionTensors = collections.namedtuple("AttentionTensors", "inputs outputs scores")


def attention_tensors(model, layers=None):
    """`model`'s graph re-run with its TransformerBlocks also returning their scores.

    A clone of the graph (`keras.models.clone_model` with a `call_function`) that calls
    each chosen block through a `keras_vitmix.layers.ScoredTransformerBlock`, with every
    argument the model's own graph gives it (a constant or symbolic `attention_mask`
    included): the blocks and every other layer are `model`'s own, so a model built
    from these tensors holds no weights of its own, follows later training, and saves
    and reloads as `.keras` (after `import keras_vitmix`). One pass gives both the
    model's outputs and the scores; `attention_model` and `export(..., attention=True)`
    are built from it.

    Args:
        model: as for `attention_model`.
        layers: as for `attention_model`.

    Returns:
        `AttentionTensors(inputs, outputs, scores)`: symbolic tensors of the clone: its
        inputs and outputs in `model`'s own structures, and a dict
        `{block_name: scores (B, heads, N, N)}` in graph order. A block that the graph
        calls more than once gives the scores of its first call.

    Example:

    >>> model = keras_vitmix.applications.ViT(patch_size=4, hidden_dim=32, num_layers=2,
    ...                                       num_heads=2, input_shape=(16, 16, 3), classes=3)
    >>> found = attention_tensors(model)
    >>> both = keras.Model(found.inputs, {"probabilities": found.outputs, **found.scores})
    """
    graph = _graph(model)
    wanted = {id(block) for block in _attention_blocks(graph, model, layers)}
    scores = {}

    def clone(layer):  # the model's own layers; a chosen block in a wrapper of its own
        return ScoredTransformerBlock(layer) if id(layer) in wanted else layer

    def call(layer, *args, **kwargs):
        if not isinstance(layer, ScoredTransformerBlock):
            return layer(*args, **kwargs)
        tokens, block_scores = layer(*args, **kwargs)
        scores.setdefault(layer.name, block_scores)
        return tokens

    clone_graph = keras.models.clone_model(graph, clone_function=clone, call_function=call)
    return AttentionTensors(clone_graph.input, clone_graph.output, scores)


def _attention_blocks(graph, model, layers):
    """The TransformerBlocks of `graph` that `layers` names (all when None), in graph order."""
    blocks = _blocks(graph, TransformerBlock)
    if not blocks:
        raise ValueError(
            f"Model '{model.name}' has no attention: it contains no TransformerBlock. "
            f"Received: a model with blocks: {_block_summary(graph)}. "
            "For MLP-Mixer blocks use `token_mixing_weights`."
        )
    if layers is None:
        return blocks
    valid = [block.name for block in blocks]
    wanted = [layers] if isinstance(layers, str) else list(layers)
    unknown = [name for name in wanted if name not in valid]
    if unknown or not wanted:
        raise ValueError(
            f"`layers` must name TransformerBlocks of model '{model.name}': one of {valid}. "
            f"Received: layers={layers!r}"
        )
    return [block for block in blocks if block.name in wanted]


def attention_model(model, layers=None):
    """A model from `model`'s inputs to the attention scores of its TransformerBlocks.

    Built by `attention_tensors`: a clone of `model`'s graph through public Keras in
    which each block is called with `return_attention_scores=True` and the arguments
    the model gives it (masks included). The sub-model holds no weights of its own and
    sees every later change to `model`'s weights without rebuilding; it saves to
    `.keras` and reloads after `import keras_vitmix`, and `keras_vitmix.export` serves
    it (or use `export(model, ..., attention=True)` for the model's outputs and its
    attention together).

    Args:
        model: a functional `keras.Model` (e.g. `ViT`, `HybridMixerViT`) containing
            `keras_vitmix.layers.TransformerBlock` layers, or a built Sequential.
        layers: optional block name or list of names (e.g. "block_1"); all
            TransformerBlocks when None.

    Returns:
        A `keras.Model` whose output is a dict `{block_name: scores}`, scores of shape
        (B, heads, N, N) in float32, rows summing to 1; N counts the prefix tokens
        (class, distillation) where the model has them. `predict` returns a dict of
        NumPy arrays.

    Raises:
        ValueError: a model without TransformerBlocks (MLP-Mixer, ConvMixer: the
            message names the blocks it has), `layers` naming no block of the model,
            a model that is not functional.

    Example:

    >>> model = keras_vitmix.applications.ViT(patch_size=4, hidden_dim=32, num_layers=2,
    ...                                       num_heads=2, input_shape=(16, 16, 3), classes=3)
    >>> scores = attention_model(model).predict(np.zeros((1, 16, 16, 3)), verbose=0)
    >>> scores["block_1"].shape
    (1, 2, 17, 17)
    """
    found = attention_tensors(model, layers)
    return keras.Model(found.inputs, found.scores, name=f"{model.name}_attention")


def _layer_index(name):
    match = re.search(r"(\d+)$", str(name))
    return int(match.group(1)) if match else -1


def _score_layers(scores):
    """Per-layer scores as a list of float64 arrays (B, H, N, N), in block order."""
    if isinstance(scores, dict):
        keys = sorted(scores, key=_layer_index) if all(_layer_index(k) >= 0 for k in scores) else list(scores)
        scores = [scores[k] for k in keys]
    elif not isinstance(scores, (list, tuple)):
        array = np.asarray(keras.ops.convert_to_numpy(scores))
        scores = list(array) if array.ndim == 5 else [array]
    layers = [np.asarray(keras.ops.convert_to_numpy(s), dtype=np.float64) for s in scores]
    if not layers:
        raise ValueError("`scores` is empty. Received: scores=[]")
    for s in layers:
        if s.ndim != 4 or s.shape[-1] != s.shape[-2] or s.shape[1:] != layers[0].shape[1:]:
            raise ValueError(
                "`scores` must be arrays (batch, heads, N, N), one per layer, of one shape. "
                f"Received: shapes {[tuple(s.shape) for s in layers]}"
            )
    return layers


def attention_rollout(scores, head_fusion="mean", discard_ratio=0.0):
    """Attention rollout (Abnar & Zuidema, 2020): attention flowed through all layers.

    For each layer, the heads are fused, the lowest `discard_ratio` of the weights are
    set to zero (never entry (0, 0), the class token's attention to itself, as in the
    reference implementation), the identity is added for the residual connection and
    the rows are renormalized; the layers are then multiplied, first layer on the right.

    Args:
        scores: the dict returned by `attention_model(...).predict` (ordered by block
            index), a list of per-layer arrays (B, heads, N, N), or one such array.
        head_fusion: "mean", "max" or "min" over the heads.
        discard_ratio: float in [0, 1), the fraction of lowest weights dropped per layer.

    Returns:
        NumPy array (B, N, N): row i is how much each token contributes to token i
        at the output. With a class token, row 0 (columns 1:) is the usual map.

    Example:

    >>> attention_rollout([np.full((1, 2, 5, 5), 0.2)]).shape
    (1, 5, 5)
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"`head_fusion` must be one of {HEAD_FUSIONS}. Received: head_fusion={head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"`discard_ratio` must be in [0, 1). Received: discard_ratio={discard_ratio}")
    layers = _score_layers(scores)
    batch, _, tokens, _ = layers[0].shape
    eye = np.eye(tokens)
    result = np.broadcast_to(eye, (batch, tokens, tokens)).copy()
    for s in layers:
        fused = getattr(np, head_fusion)(s, axis=1)  # (B, N, N)
        discard = int(tokens * tokens * discard_ratio)
        if discard:
            flat = fused.reshape(batch, -1)
            lowest = np.argsort(flat, axis=-1, kind="stable")[:, :discard]
            keep_first = np.where(lowest == 0, -1, lowest)  # never drop (0, 0)
            for b in range(batch):
                flat[b, keep_first[b][keep_first[b] >= 0]] = 0.0
            fused = flat.reshape(batch, tokens, tokens)
        a = fused + eye
        a = a / a.sum(axis=-1, keepdims=True)
        result = a @ result
    return result


def _patch_centers(grid_shape, patch_size):
    """Pixel coordinates (h * w, 2) of the patch centers, row-major like the tokens."""
    (h, w), (ph, pw) = grid_shape, patch_size
    rows, cols = np.meshgrid((np.arange(h) + 0.5) * ph, (np.arange(w) + 0.5) * pw, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1)


def mean_attention_distance(scores, grid_shape, patch_size, num_prefix_tokens=0):
    """Mean attention distance in pixels per layer and head (ViT paper, figure 7).

    For each query patch, the attention weights over the key patches (prefix tokens
    left out, weights renormalized over the patches) weigh the Euclidean distance
    between the two patch centers; the result is averaged over queries and the batch.

    Args:
        scores: one array (B, heads, N, N), a list of them, or the dict returned by
            `attention_model(...).predict`.
        grid_shape: (h, w), the patch grid; N must equal `num_prefix_tokens + h * w`.
        patch_size: int or (int, int), patch size in pixels.
        num_prefix_tokens: int, leading class/distillation tokens.

    Returns:
        NumPy array (layers, heads), or (heads,) when `scores` is one array.

    Example:

    >>> uniform = np.full((1, 2, 4, 4), 0.25)
    >>> mean_attention_distance(uniform, (2, 2), 16).round(2)
    array([13.66, 13.66])
    """
    single = not isinstance(scores, (dict, list, tuple)) and np.ndim(scores) == 4
    layers = _score_layers(scores)
    grid_shape, patch_size = to_pair(grid_shape, "grid_shape"), to_pair(patch_size, "patch_size")
    tokens = layers[0].shape[-1]
    if tokens != num_prefix_tokens + grid_shape[0] * grid_shape[1]:
        raise ValueError(
            "The scores do not match the patch grid: N must be num_prefix_tokens + h * w. "
            f"Received: N={tokens}, grid_shape={grid_shape}, num_prefix_tokens={num_prefix_tokens}"
        )
    centers = _patch_centers(grid_shape, patch_size)
    distances = np.linalg.norm(centers[:, None] - centers[None], axis=-1)  # (M, M)
    result = []
    for s in layers:
        patches = s[..., num_prefix_tokens:, num_prefix_tokens:]  # (B, H, M, M)
        patches = patches / np.maximum(patches.sum(-1, keepdims=True), 1e-12)
        result.append((patches * distances).sum(-1).mean(axis=(0, 2)))  # (H,)
    result = np.stack(result)
    return result[0] if single else result


def patch_grid(model):
    """The patch layout of a model with a `PatchEmbedding` named or found in its layers.

    Args:
        model: a built `keras.Model` from keras_vitmix.

    Returns:
        `PatchGrid(image_size, patch_size, grid_shape, num_prefix_tokens)`, tuples of
        (height, width) and an int.

    Example:

    >>> patch_grid(keras_vitmix.applications.create_model("seed_vit")).grid_shape
    (12, 12)
    """
    for layer in getattr(model, "layers", []):
        if isinstance(layer, PatchEmbedding) and getattr(layer, "built", False):
            return PatchGrid(
                tuple(layer.image_size), tuple(layer.patch_size), tuple(layer.grid_size), layer.num_prefix_tokens
            )
    raise ValueError(
        f"The model has no built PatchEmbedding layer. Received: model '{getattr(model, 'name', model)}' "
        f"of type {type(model).__name__}"
    )


def token_mixing_weights(model, block=0):
    """The first token-mixing kernel of a MixerBlock as patch-grid images (Mixer, fig. 5).

    Args:
        model: a functional `keras.Model` with MixerBlocks (MLPMixer, the hybrids).
        block: the block's name (e.g. "block_2"), or an int indexing the model's
            MixerBlocks in order (0 is the first MixerBlock, negative counts back).

    Returns:
        NumPy array (token_mlp_dim, grid_h, grid_w): `kernel[prefix:, u]` of
        `block.token_mixing.fc1.kernel` (N, token_mlp_dim) reshaped for each hidden
        unit u; the rows of prefix (class) tokens are left out.

    Example:

    >>> model = keras_vitmix.applications.create_model("mixer_cifar_patch4_32")
    >>> token_mixing_weights(model, 0).shape[1:]
    (8, 8)
    """
    graph = _graph(model)
    blocks = _blocks(graph, MixerBlock)
    if not blocks:
        raise ValueError(
            f"Model '{model.name}' has no MixerBlock, so no token-mixing weights. "
            f"Received: a model with blocks: {_block_summary(graph)}"
        )
    names = [b.name for b in blocks]
    if isinstance(block, str) and block in names:
        layer = blocks[names.index(block)]
    elif isinstance(block, numbers.Integral) and not isinstance(block, bool) and -len(blocks) <= block < len(blocks):
        layer = blocks[block]
    else:
        raise ValueError(
            f"`block` must be a MixerBlock name in {names} or an index in "
            f"[{-len(blocks)}, {len(blocks) - 1}]. Received: block={block!r}"
        )
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.token_mixing.fc1.kernel))  # (N, U)
    try:
        grid = patch_grid(model)
        (h, w), prefix = grid.grid_shape, grid.num_prefix_tokens
    except ValueError:
        h = w = int(round(np.sqrt(kernel.shape[0])))
        prefix = 0
    if kernel.shape[0] != prefix + h * w:
        raise ValueError(
            f"Cannot lay the {kernel.shape[0]} token-mixing inputs of '{layer.name}' on a patch grid. "
            f"Received: grid_shape={(h, w)}, num_prefix_tokens={prefix}"
        )
    return kernel[prefix:].T.reshape(-1, h, w)
