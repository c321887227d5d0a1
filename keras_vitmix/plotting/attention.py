"""Figures of what attention and token mixing learn, drawn from the numbers
`keras_vitmix.inspection` computes: the patch grid, attention maps, where one query patch
looks (per head, or through all layers by rollout), mean attention distance by depth,
and MLP-Mixer's token-mixing weights.

The helpers that read attention scores (one layer, one head, one query patch) are public
because `keras_vitmix.visualize` writes the same figures to files.
"""

import re

import numpy as np

from keras_vitmix.plotting.base import as_image, grid_figure, heat_limits, image_and_heat, overlay, pyplot, show_image


def block_order(names):
    """Block names (e.g. "block_10") in network order: by their trailing number when
    every name has one, else as given."""
    numbers = [re.search(r"(\d+)$", str(name)) for name in names]
    if all(numbers):
        return [name for _, name in sorted(zip((int(m.group(1)) for m in numbers), names))]
    return list(names)


def layer_heads(scores, layer=-1, sample=0):
    """The scores of one layer and one sample, (heads, N, N).

    Args:
        scores: (B, heads, N, N), (heads, N, N) or (N, N); or a list, or a dict by block
            name, of such arrays, one per layer.
        layer: dict key, or index in network order, of the layer when `scores` holds several.
        sample: index in the batch.
    """
    if isinstance(scores, dict) and layer in scores:
        scores = scores[layer]
    elif isinstance(scores, (dict, list, tuple)):
        n = len(scores)
        if isinstance(layer, str) or not -n <= layer < n:
            raise ValueError(f"`layer` must be a key of `scores` or an index in [{-n}, {n - 1}]. "
                             f"Received: layer={layer!r}")
        scores = [scores[k] for k in block_order(scores)][layer] if isinstance(scores, dict) else scores[layer]
    s = np.asarray(scores, dtype=np.float32)
    s = s[sample] if s.ndim == 4 else (s[None] if s.ndim == 2 else s)
    if s.ndim != 3 or s.shape[-1] != s.shape[-2]:
        raise ValueError(f"Expected scores (batch, heads, N, N), (heads, N, N) or (N, N). Received: shape {s.shape}")
    return s


def pick_head(heads, head):
    """(H, ...) -> the mean over heads when `head` is None, else that head."""
    if head is None:
        return heads.mean(axis=0)
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < len(heads):
        raise ValueError(f"`head` must be None or an int in [0, {len(heads) - 1}]. Received: head={head!r}")
    return heads[head]


def query_index(query, grid_shape):
    """A patch index in [0, h * w) from an int or a (row, col) pair."""
    h, w = grid_shape
    if isinstance(query, (tuple, list)) and len(query) == 2 and all(0 <= q < s for q, s in zip(query, (h, w))):
        return int(query[0]) * w + int(query[1])
    if isinstance(query, (int, np.integer)) and not isinstance(query, bool) and 0 <= query < h * w:
        return int(query)
    raise ValueError(
        f"`query` must be a patch index in [0, {h * w - 1}] or (row, col) within the grid {tuple(grid_shape)}. "
        f"Received: query={query!r}"
    )


def query_maps(heads, grid_shape, num_prefix_tokens):
    """(H, N, N) -> (H, M, h, w): each patch query's attention over the patch keys."""
    tokens, (h, w) = heads.shape[-1], grid_shape
    if tokens != num_prefix_tokens + h * w:
        raise ValueError(
            "The scores do not match the grid: N must be num_prefix_tokens + h * w. "
            f"Received: N={tokens}, grid_shape={tuple(grid_shape)}, num_prefix_tokens={num_prefix_tokens}"
        )
    p = num_prefix_tokens
    return heads[:, p:, p:].reshape(len(heads), h * w, h, w)

def image_patches(image, patch_size):
    """The image cut into its patch grid, one small axis per patch (ViT's first step).

    Args:
        image: array (H, W, C) or (H, W), pixel values in [0, 255].
        patch_size: int or (int, int), must divide the image size.

    Returns:
        A Figure with h * w axes, row-major like the tokens.

    Example:

    >>> fig = image_patches(np.zeros((32, 32, 3), np.uint8), 8)  # 16 axes
    """
    from keras_vitmix.layers._checks import to_pair

    image, (ph, pw) = as_image(image), to_pair(patch_size, "patch_size")
    if image.shape[0] % ph or image.shape[1] % pw:
        raise ValueError(f"The patch size must divide the image size. Received: patch_size={patch_size}, "
                         f"image size={image.shape[:2]}")
    h, w = image.shape[0] // ph, image.shape[1] // pw
    fig, axes = grid_figure(h * w, w, tile=min(1.0, 8.0 / w))
    for i, ax in enumerate(axes):
        row, col = divmod(i, w)
        ax.imshow(image[row * ph:(row + 1) * ph, col * pw:(col + 1) * pw], cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    return fig


def attention_map(scores, layer=-1, head=None, sample=0):
    """The N x N attention map of one layer (one head, or the mean of the heads).

    Args:
        scores: (B, heads, N, N), (heads, N, N) or (N, N), or a list/dict of per-layer
            arrays as returned by `inspection.attention_model(...).predict`.
        layer: index, or dict key (e.g. "block_1"), of the layer when `scores` holds several.
        head: int head index, or None for the mean over heads.
        sample: index in the batch.

    Returns:
        A Figure with two axes: the map (rows: queries, columns: keys), its colour bar.
        The colours span the map's own min to max: softmax weights of 64 tokens sit
        near 1/64, and a scale from 0 would draw them as one flat colour.

    Example:

    >>> fig = attention_map(np.full((1, 2, 5, 5), 0.2), head=1)
    """
    matrix = pick_head(layer_heads(scores, layer, sample), head)
    fig, ax = pyplot().subplots(figsize=(5, 4.2), constrained_layout=True)
    low, high = heat_limits(matrix)
    fig.colorbar(ax.imshow(matrix, cmap="viridis", vmin=low, vmax=high), ax=ax, label="attention weight")
    ax.set_xlabel("key token")
    ax.set_ylabel("query token")
    label = "mean of heads" if head is None else f"head {head}"
    ax.set_title(f"{layer}, {label}" if isinstance(layer, str) else label)
    return fig


def query_attention(image, scores, query, grid_shape, head=None, num_prefix_tokens=0, layer=-1):
    """Where one query patch looks: its attention over the patches, on the image.

    Args:
        image: array (H, W, C) or (H, W), pixel values in [0, 255].
        scores: one layer's scores (see `attention_map`; the first image of a batch),
            or several layers with `layer`.
        query: patch index in [0, h * w) or (row, col).
        grid_shape: (h, w), the patch grid.
        head: int head, or None for the mean over heads.
        num_prefix_tokens: leading class/distillation/register tokens in the scores.
        layer: the layer when `scores` holds several.

    Returns:
        A Figure with three axes: the image in full with the query patch outlined; the
        heat map (upsampled to the image, colours fitted to its min and max) over the
        image in gray at half strength; the heat map's colour bar.

    Example:

    >>> fig = query_attention(np.zeros((8, 8)), np.full((4, 4), 0.25), 0, (2, 2))
    """
    query = query_index(query, grid_shape)
    heat = pick_head(query_maps(layer_heads(scores, layer), grid_shape, num_prefix_tokens)[:, query], head)
    fig, axes = pyplot().subplots(1, 2, figsize=(7, 3.4), constrained_layout=True)
    label = "mean of heads" if head is None else f"head {head}"
    image_and_heat(axes, as_image(image), heat, "attention weight", query, grid_shape, f"query patch {query}, {label}")
    return fig


def attention_heads(image, scores, query, grid_shape, num_prefix_tokens=0, layer=-1):
    """`query_attention` for every head of one layer, side by side.

    Args:
        image, scores, query, grid_shape, num_prefix_tokens, layer: as in
            `query_attention`.

    Returns:
        A Figure with the image in full (query patch outlined), one axis per head, and
        one colour bar: the heads share a colour scale fitted to their min and max, so
        that a colour means the same weight in every head.

    Example:

    >>> fig = attention_heads(np.zeros((8, 8)), np.full((1, 3, 4, 4), 0.25), 0, (2, 2))
    """
    query = query_index(query, grid_shape)
    maps = query_maps(layer_heads(scores, layer), grid_shape, num_prefix_tokens)[:, query]
    image, limits = as_image(image), heat_limits(maps)
    fig, axes = grid_figure(1 + len(maps), 4, tile=2.4)
    show_image(axes[0], image, query, grid_shape, f"image, query patch {query}")
    for h, (ax, heat) in enumerate(zip(axes[1:], maps)):
        drawn = overlay(ax, image, heat, limits, query, grid_shape, f"head {h}")
    fig.colorbar(drawn, ax=list(axes), label="attention weight (all heads)", shrink=0.8)
    return fig


def rollout_overlay(image, rollout, grid_shape, sample=0, num_prefix_tokens=None, use_class_token=None):
    """Attention rollout on the image: the class token's row (patch columns) or, without
    a class token, the mean over the patch queries.

    Args:
        image: array (H, W, C) or (H, W), pixel values in [0, 255].
        rollout: (B, N, N) or (N, N) from `inspection.attention_rollout`; N is
            `num_prefix_tokens` + h * w.
        grid_shape: (h, w), the patch grid.
        sample: index in the batch.
        num_prefix_tokens: leading class/distillation/register tokens
            (`inspection.patch_grid(model).num_prefix_tokens`); None reads N = h * w [+ 1]
            as no prefix or a class token.
        use_class_token: whether token 0 is a class token; None: when there is a prefix.
            A model with registers and no class token (timm's reg4_gap) passes False.

    Returns:
        A Figure with three axes: the image in full, the rollout over it (colours fitted
        to its min and max; prefix columns left out), the rollout's colour bar.

    Example:

    >>> fig = rollout_overlay(np.zeros((8, 8)), np.eye(5), (2, 2))
    """
    rollout = np.asarray(rollout, dtype=np.float32)
    rollout = rollout[sample] if rollout.ndim == 3 else rollout
    (h, w), tokens = grid_shape, rollout.shape[-1]
    prefix = tokens - h * w if num_prefix_tokens is None and tokens - h * w in (0, 1) else num_prefix_tokens
    if rollout.ndim != 2 or prefix is None or tokens != prefix + h * w:
        expected = "h * w [+ 1]" if num_prefix_tokens is None else "num_prefix_tokens + h * w"
        raise ValueError(f"`rollout` must be (B, N, N) or (N, N) with N = {expected}. "
                         f"Received: shape {rollout.shape}, grid_shape={tuple(grid_shape)}, "
                         f"num_prefix_tokens={num_prefix_tokens}")
    cls = bool(prefix) if use_class_token is None else bool(use_class_token)
    heat = rollout[0, prefix:] if cls else rollout[prefix:, prefix:].mean(axis=0)
    fig, axes = pyplot().subplots(1, 2, figsize=(7, 3.4), constrained_layout=True)
    label = "rollout, class token's row" if cls else "rollout, mean over queries"
    image_and_heat(axes, as_image(image), heat.reshape(h, w), label, title="attention rollout")
    return fig


def class_token_attention(heads, grid_shape, num_prefix_tokens):
    """The class token's attention (query 0) in two parts: over the patches, and over the
    prefix tokens (itself, a distillation token, registers).

    DINO's and DINOv2's attention pictures are the class token's row drawn on the grid.
    With registers (Darcet et al., 2024) much of that row goes to the registers; drawn
    into the map, or renormalized over the patches, it would be hidden, so it is
    returned apart.

    Args:
        heads: (heads, N, N) scores of one layer and one image (`layer_heads`).
        grid_shape: (h, w), the patch grid.
        num_prefix_tokens: int >= 1, the leading tokens, the class token first.

    Returns:
        `(maps, prefix)`: (heads, h, w), the weights on the patch columns in grid
        order, and (heads, num_prefix_tokens), the weights on the prefix columns; per
        head the two sum to the row's sum, 1.
    """
    tokens, (h, w) = heads.shape[-1], grid_shape
    if num_prefix_tokens < 1 or tokens != num_prefix_tokens + h * w:
        raise ValueError(
            "The class token's attention needs scores with a class token first: N must be "
            "num_prefix_tokens + h * w, num_prefix_tokens >= 1. "
            f"Received: N={tokens}, grid_shape={tuple(grid_shape)}, num_prefix_tokens={num_prefix_tokens}"
        )
    row = heads[:, 0]  # (H, N)
    return row[:, num_prefix_tokens:].reshape(len(heads), h, w), row[:, :num_prefix_tokens]


def class_attention(image, scores, grid_shape, num_prefix_tokens, layer=-1, prefix_names=None):
    """The class token's attention per head on the image (DINO's picture), and its
    attention to each prefix token (registers, ...) in a panel of its own.

    Args:
        image: array (H, W, C) or (H, W), pixel values in [0, 255].
        scores: one layer's scores (see `attention_map`; the first image of a batch),
            or several layers with `layer`.
        grid_shape: (h, w), the patch grid.
        num_prefix_tokens: int >= 1, leading tokens, the class token first.
        layer: the layer when `scores` holds several (the last by default).
        prefix_names: optional names of the prefix tokens (e.g. "class",
            "register 0"), for the bar panel.

    Returns:
        A Figure: the image in full; per head the class token's weights on the patches
        over the image (one colour scale for all heads, its colour bar); a bar panel of
        its weights on each prefix token (the mean of the heads, each head a dot), on
        the same scale of attention weight, so that what the registers take is seen
        and not folded into the map.

    Example:

    >>> fig = class_attention(np.zeros((8, 8)), np.full((2, 6, 6), 1 / 6), (2, 2), 2)
    """
    maps, prefix = class_token_attention(layer_heads(scores, layer), grid_shape, num_prefix_tokens)
    names = list(prefix_names) if prefix_names is not None else [f"prefix {i}" for i in range(num_prefix_tokens)]
    if len(names) != num_prefix_tokens:
        raise ValueError(f"`prefix_names` must name the {num_prefix_tokens} prefix tokens. "
                         f"Received: prefix_names={prefix_names!r}")
    image, limits = as_image(image), heat_limits(maps)
    cols = min(1 + len(maps), 4)
    rows = -(-(1 + len(maps)) // cols)
    fig = pyplot().figure(figsize=(2.4 * cols + 0.8, 2.4 * rows + 2.2), layout="constrained")
    layout = fig.add_gridspec(rows + 1, cols, height_ratios=[2.4] * rows + [2.0])
    axes = [fig.add_subplot(layout[i // cols, i % cols]) for i in range(1 + len(maps))]
    show_image(axes[0], image, title="image")
    for h, (ax, heat) in enumerate(zip(axes[1:], maps)):
        drawn = overlay(ax, image, heat, limits, title=f"head {h}")
    fig.colorbar(drawn, ax=axes[1:], label="weight on a patch", shrink=0.8)
    bars, positions = fig.add_subplot(layout[rows, :]), np.arange(num_prefix_tokens)
    bars.bar(positions, prefix.mean(axis=0), color="0.6", label="mean of heads")
    bars.scatter(np.repeat(positions[None], len(prefix), 0).ravel(), prefix.ravel(), s=10, color="black",
                 zorder=3, label="one head")
    bars.set_xticks(positions, names, fontsize=8)
    bars.set_ylabel("weight", fontsize=8)
    bars.legend(fontsize=7)
    patch_share = float(maps.sum(axis=(1, 2)).mean())
    bars.set_title(f"the class token's weight on each prefix token (on the patches: {patch_share:.0%} "
                   "on average), apart from the maps", fontsize=9)
    return fig


def attention_distance(distances):
    """Mean attention distance by depth, one point per head (ViT paper, figure 7).

    Args:
        distances: (layers, heads) or (heads,) in pixels, from
            `inspection.mean_attention_distance`.

    Returns:
        A Figure with one axis: x = layer (1 = first), y = distance in pixels.

    Example:

    >>> fig = attention_distance(np.array([[10.0, 20.0], [30.0, 40.0]]))
    """
    distances = np.atleast_2d(np.asarray(distances, dtype=np.float32))
    fig, ax = pyplot().subplots(figsize=(5, 4), constrained_layout=True)
    depth = np.arange(1, len(distances) + 1)
    for head in range(distances.shape[1]):
        ax.scatter(depth, distances[:, head], s=18, label=f"head {head}")
    ax.set_xlabel("layer (network depth)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(depth)
    ax.grid(alpha=0.3)
    if distances.shape[1] <= 16:
        ax.legend(fontsize=7, ncols=2)
    return fig


def token_mixing_tiles(weights, max_tiles=64):
    """MLP-Mixer token-mixing weights, one patch-grid tile per hidden unit (Mixer, fig. 5).

    Args:
        weights: (units, h, w) from `inspection.token_mixing_weights`.
        max_tiles: int, at most this many units are drawn (the first ones).

    Returns:
        A Figure with min(units, max_tiles) axes and one colour bar. Each tile is divided
        by its own max |weight| (red +1, blue -1) so that every unit's pattern shows,
        whatever its scale; the colour bar says so.

    Example:

    >>> fig = token_mixing_tiles(np.random.randn(8, 4, 4))
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim != 3:
        raise ValueError(f"`weights` must be (units, h, w). Received: shape {weights.shape}")
    weights = weights[:max_tiles]
    heat_limits(weights)  # refuses NaN and infinity
    scale = np.maximum(np.abs(weights).max(axis=(1, 2), keepdims=True), 1e-12)
    fig, axes = grid_figure(len(weights), int(np.ceil(np.sqrt(len(weights)))), tile=0.9)
    for ax, tile in zip(axes, weights / scale):
        drawn = ax.imshow(tile, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.axis("off")
    fig.colorbar(drawn, ax=list(axes), label="weight / the tile's max |weight|", shrink=0.8)
    return fig
