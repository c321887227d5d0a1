"""Intermediate features of any model of ours: what a backbone is used for.

A linear probe, a detector or a segmentation head reads a backbone's blocks, not its
logits. `feature_model` builds a functional `keras.Model` from a model's input to the
outputs of its blocks, found by name (`block_0`, `block_1`, …; every family names them
so), so it shares the model's weights, follows later training, saves to `.keras` and
exports with one named output per block.

The arguments are timm's (`VisionTransformer.forward_intermediates` and
`feature_take_indices`, timm 1.0), so a timm user gets the same tensors for the same
call: `indices` picks blocks the same way, grids drop the prefix tokens (class,
distillation, registers), `norm=True` applies the model's final norm to each feature.
Grids are channels-last (NHWC), as everywhere in Keras, where timm's are NCHW.
"""

import numbers

import keras

from keras_vitmix import inspection

OUTPUT_FORMATS = ("NHWC", "NLC")
FINAL_NORM = "norm"  # the layer every family with a final norm names so


def model_blocks(model):
    """The layers of `model` named `block_<i>`, in index order (the backbone's blocks)."""
    named = []
    for layer in model.layers:
        prefix, _, number = layer.name.rpartition("_")
        if prefix == "block" and number.isdigit():
            named.append((int(number), layer))
    return [layer for _, layer in sorted(named, key=lambda item: item[0])]


def take_indices(num_blocks, indices=None):
    """The block indices that `indices` picks, as timm's `feature_take_indices` reads it.

    Args:
        num_blocks: int, the model's number of blocks L.
        indices: None (every block), an int n (the last n blocks, 1 <= n <= L), or a
            list or tuple of block indices in [-L, L - 1] (negative ones count from the
            end).

    Returns:
        The sorted, distinct non-negative indices: features come in block order, each
        once, as timm's loop over its blocks gives them whatever the order asked.

    Example:

    >>> take_indices(12, 3)
    [9, 10, 11]
    >>> take_indices(12, [-1, 0, 0])
    [0, 11]
    """
    if indices is None:
        return list(range(num_blocks))
    if _is_int(indices):
        if not 1 <= indices <= num_blocks:
            raise ValueError(
                f"An int `indices` takes the last n blocks, 1 <= n <= {num_blocks} for a model with "
                f"{num_blocks} blocks. Received: indices={indices!r}"
            )
        return list(range(num_blocks - int(indices), num_blocks))
    if not isinstance(indices, (list, tuple, range)):
        raise TypeError(
            "`indices` must be None, an int (the last n blocks) or a list of block indices. "
            f"Received: indices={indices!r} of type {type(indices).__name__}"
        )
    wrong = [i for i in indices if not _is_int(i)]
    if wrong:
        raise TypeError(f"`indices` must hold ints. Received: indices={indices!r}, with {wrong!r}")
    outside = [i for i in indices if not -num_blocks <= i < num_blocks]
    if outside or not indices:
        raise ValueError(
            f"`indices` must list block indices in [{-num_blocks}, {num_blocks - 1}] for a model with "
            f"{num_blocks} blocks, at least one. Received: indices={indices!r}"
        )
    return sorted({int(i) % num_blocks for i in indices})


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def feature_model(model, indices=None, output_format="NHWC", norm=False, prefix_tokens=False):
    """A model from `model`'s input to the features of its blocks.

    The outputs are the blocks' own output tensors in `model`'s graph (normed, split
    and reshaped by weightless layers where asked), so the feature model holds no
    weights of its own: it sees every later change to `model`'s weights.

    Args:
        model: a functional `keras.Model` of keras_vitmix (an application, built or
            loaded from `.keras`) whose blocks are named `block_0`, `block_1`, ….
        indices: which blocks, as timm's `forward_intermediates(indices=...)`: None
            for every block, an int n for the last n, or a list of block indices
            (negative ones count from the end).
        output_format: "NHWC" for grids (B, h, w, D) on the patch grid, the prefix
            tokens (class, distillation, registers) removed; "NLC" for tokens
            (B, h * w, D), the prefix tokens removed too (as timm does). A ConvMixer
            block's grid is flattened for "NLC".
        norm: bool, apply the model's final norm (its layer `norm`, a LayerNorm of
            each token) to each feature first, as timm's `norm=True`, a hybrid's
            ConvMixer grids included; a model without one refuses (ConvMixer, and a
            ViT whose `fc_norm` follows the pooling, where timm's `norm` is an identity).
        prefix_tokens: bool, also output each block's prefix tokens (B, p, D) under
            `{block_name}_prefix` (timm's `return_prefix_tokens`); a model without
            prefix tokens refuses.

    Returns:
        A `keras.Model` whose output is a dict `{block_name: features}` in block order
        (calling the model keeps that order; `predict` returns Keras's sorted keys).

    Example:

    >>> model = keras_vitmix.applications.ViT(patch_size=4, hidden_dim=32, num_layers=2,
    ...                                       num_heads=2, input_shape=(16, 16, 3), classes=3)
    >>> extractor = feature_model(model, indices=[-1], prefix_tokens=True)
    >>> {k: tuple(v.shape) for k, v in extractor(np.zeros((1, 16, 16, 3))).items()}
    {'block_1': (1, 4, 4, 32), 'block_1_prefix': (1, 1, 32)}
    """
    graph = _functional(model)
    blocks = model_blocks(graph)
    if not blocks:
        raise ValueError(
            f"Model '{model.name}' has no blocks: features come from layers named block_0, block_1, …. "
            f"Received: a model with layers {[layer.name for layer in graph.layers][:12]}"
        )
    taken = take_indices(len(blocks), indices)
    if output_format not in OUTPUT_FORMATS:
        hint = " Grids are channels-last in Keras; transpose for NCHW." if output_format == "NCHW" else ""
        raise ValueError(
            f"`output_format` must be one of {OUTPUT_FORMATS}. Received: output_format={output_format!r}.{hint}"
        )
    for flag, value in (("norm", norm), ("prefix_tokens", prefix_tokens)):
        if not isinstance(value, bool):
            raise TypeError(f"`{flag}` must be True or False. Received: {flag}={value!r}")
    layout = _layout(model, prefix_tokens)
    final_norm = _final_norm(graph) if norm else None
    outputs = {}
    for index in taken:
        block = blocks[index]
        x = block.output
        if final_norm is not None:
            x = final_norm(x)
        outputs.update(_block_features(block, x, layout, output_format, prefix_tokens))
    return keras.Model(graph.input, outputs, name=f"{model.name}_features")


def _functional(model):
    """`model`, checked to be a functional graph whose block outputs can be read."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model of type {type(model).__name__}")
    if not isinstance(model, keras.Function):
        raise ValueError(
            "Features need a functional model (an application, or `keras.Model(inputs, outputs)`). "
            f"Received: model '{model.name}' of type {type(model).__name__}"
        )
    return model


def _layout(model, prefix_tokens):
    """The model's patch layout: `inspection.patch_grid`, the one count of prefix tokens."""
    try:
        layout = inspection.patch_grid(model)
    except ValueError as error:
        raise ValueError(f"Features are laid out on the patch grid of the model's PatchEmbedding. {error}") from None
    if prefix_tokens and not layout.num_prefix_tokens:
        raise ValueError(
            f"Model '{model.name}' has no prefix tokens (class, distillation or register tokens). "
            "Received: prefix_tokens=True"
        )
    return layout


def _final_norm(graph):
    names = [layer.name for layer in graph.layers]
    if FINAL_NORM in names:
        return graph.get_layer(FINAL_NORM)
    why = "ConvMixer ends with its blocks' BatchNormalization"
    if "fc_norm" in names:
        why = "its 'fc_norm' normalizes the pooled features, not the tokens"
    raise ValueError(
        f"Model '{graph.name}' has no final norm of its tokens (a layer named {FINAL_NORM!r}; {why}). "
        "Received: norm=True"
    )


def _block_features(block, x, layout, output_format, prefix_tokens):
    """{name: features} of one block from its (normed) output `x`: tokens (B, p + N, D)
    or, for a ConvMixer block, a grid (B, h, w, D)."""
    name, dtype = block.name, block.dtype_policy
    if len(x.shape) == 4:
        if output_format == "NLC":
            x = keras.layers.Reshape((-1, x.shape[-1]), dtype=dtype, name=f"{name}_tokens")(x)
        return {name: x}
    (h, w), prefix = layout.grid_shape, layout.num_prefix_tokens
    tokens, dim = x.shape[1], x.shape[-1]
    if tokens != prefix + h * w:
        raise ValueError(
            f"The tokens of '{name}' are not the prefix tokens and patches of the model's PatchEmbedding, "
            f"so they have no grid and no known prefix. Received: {tokens} tokens, "
            f"num_prefix_tokens={prefix}, grid_shape=({h}, {w})"
        )
    features = {name: x}
    if prefix:
        crop = keras.layers.Cropping1D
        features[name] = crop((prefix, 0), dtype=dtype, name=f"{name}_patches")(x)
        if prefix_tokens:
            features[f"{name}_prefix"] = crop((0, h * w), dtype=dtype, name=f"{name}_prefix")(x)
    if output_format == "NHWC":
        grid = keras.layers.Reshape((h, w, dim), dtype=dtype, name=f"{name}_grid")(features[name])
        features[name] = grid
    return features
