"""Writes the attention figures of a model for one image: the `keras-vitmix visualize`
command and the demo call `write_attention_figures`."""

import os

import numpy as np

from keras_vitmix.plotting.attention import (
    attention_distance,
    attention_heads,
    attention_map,
    block_order,
    class_attention,
    image_patches,
    layer_heads,
    pick_head,
    query_attention,
    query_index,
    query_maps,
    rollout_overlay,
    token_mixing_tiles,
)
from keras_vitmix.plotting.base import as_image, heat_limits, image_and_heat, pyplot, upsample


def _model_image(model, image):
    """Checks one image against the model's input; resizes it (with a warning) if needed."""
    import warnings

    from PIL import Image

    height, width, channels = model.input_shape[1:]
    array = np.asarray(image)
    array = array[0] if array.ndim == 4 and array.shape[0] == 1 else array
    array = array[..., None] if array.ndim == 2 else array
    if array.ndim != 3 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"`image` must be one image (height, width, channels) of numbers. "
                         f"Received: shape {np.shape(image)}, dtype {array.dtype}")
    if array.shape[-1] != channels:
        raise ValueError(f"Model '{model.name}' takes {channels}-channel images. "
                         f"Received: image of shape {array.shape} ({array.shape[-1]} channels)")
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise ValueError(f"`image` values must be in [0, 255]. Received: range [{array.min()}, {array.max()}]")
    if array.shape[:2] != (height, width):
        warnings.warn(f"Resized the image from {array.shape[:2]} to the model's input size {(height, width)}.",
                      stacklevel=3)
        planes = [Image.fromarray(array[..., c]).resize((width, height), Image.BILINEAR) for c in range(channels)]
        array = np.stack([np.asarray(p, np.float32) for p in planes], axis=-1)
    return array


def _animate(path, image, heads, grid_shape, num_prefix_tokens, head, dpi):
    """A GIF stepping the query over every patch, one frame per patch, drawn like
    `query_attention`: the image beside the heat map, whose colour scale is refitted to
    each frame's map (the colour bar follows it)."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    maps = query_maps(heads, grid_shape, num_prefix_tokens)  # (H, M, h, w)
    maps = maps.mean(axis=0) if head is None else maps[head]  # (M, h, w)
    image = as_image(image)
    fig = pyplot().figure(figsize=(6, 3.2))
    # fixed axes, no layout engine: each frame redraws quickly
    axes = [fig.add_axes((0.01, 0.02, 0.4, 0.86)), fig.add_axes((0.43, 0.02, 0.4, 0.86))]
    heat = image_and_heat(axes, image, maps[0], "attention weight", 0, grid_shape,
                          cax=fig.add_axes((0.85, 0.1, 0.03, 0.7)))
    boxes = [ax.patches[0] for ax in axes]
    ph, pw = image.shape[0] / grid_shape[0], image.shape[1] / grid_shape[1]

    def frame(q):
        heat.set_data(upsample(maps[q], image.shape[:2]))
        heat.set_clim(*heat_limits(maps[q]))
        row, col = divmod(q, grid_shape[1])
        for box in boxes:
            box.set_xy((col * pw - 0.5, row * ph - 0.5))
        axes[1].set_title(f"query patch {q}", fontsize=9)
        return [heat, *boxes]

    FuncAnimation(fig, frame, frames=len(maps)).save(path, writer=PillowWriter(fps=4), dpi=dpi)
    pyplot().close(fig)


def prefix_token_names(model):
    """The names of `model`'s prefix tokens in order (class, distillation, registers), as
    its PatchEmbedding prepends them; [] without one."""
    from keras_vitmix.layers import PatchEmbedding

    for layer in model.layers:
        if isinstance(layer, PatchEmbedding):
            names = ["class"] if layer.use_class_token else []
            names += ["distillation"] if layer.use_distillation_token else []
            return names + [f"register {i}" for i in range(layer.num_register_tokens)]
    return []


def _attention_figures(model, image, grid, layer, head, query):
    """Checks the choices, runs the model once; returns [(file name, figure thunk)], GIF args."""
    from keras_vitmix import inspection

    scores = inspection.attention_model(model).predict(image[None], verbose=0)
    names = block_order(scores)
    if layer is None:
        layer = names[-1]
    elif isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and -len(names) <= layer < len(names):
        layer = names[layer]
    elif layer not in names:
        raise ValueError(f"`layer` must be an attention block name in {names} or an index in "
                         f"[{-len(names)}, {len(names) - 1}]. Received: layer={layer!r}")
    heads = layer_heads(scores, layer)
    pick_head(heads, head)  # checks `head`
    h, w = grid.grid_shape
    query = h // 2 * w + w // 2 if query is None else query_index(query, grid.grid_shape)
    args = (image, heads, query, grid.grid_shape)
    prefix = grid.num_prefix_tokens
    distances = inspection.mean_attention_distance(scores, grid.grid_shape, grid.patch_size, prefix)
    names = prefix_token_names(model)
    has_class = names[:1] == ["class"]
    rollout = inspection.attention_rollout(scores)
    figures = [
        ("attention_map.png", lambda: attention_map(scores, layer, head)),
        ("query_attention.png", lambda: query_attention(*args, head, prefix)),
        ("attention_heads.png", lambda: attention_heads(*args, prefix)),
        ("rollout.png", lambda: rollout_overlay(image, rollout, grid.grid_shape, 0, prefix, has_class)),
        ("attention_distance.png", lambda: attention_distance(distances)),
    ]
    if has_class:  # DINO's picture; registers (Darcet et al., 2024) in a panel of their own
        figures.append(
            ("class_attention.png", lambda: class_attention(image, heads, grid.grid_shape, prefix, -1, names))
        )
    return figures, (image, heads, grid.grid_shape, prefix, head)


def write_attention_figures(model, image, output_dir, layer=None, head=None, query=None, animate=False, dpi=72):
    """Writes the inspection figures of one image as PNG files (and optionally a GIF).

    patches.png always; for attention models attention_map.png, query_attention.png,
    attention_heads.png, rollout.png, attention_distance.png (and query_attention.gif
    with `animate`), and with a class token class_attention.png: its attention per head
    on the patches, with what it gives the prefix tokens (registers) in a panel apart;
    for models with MixerBlocks token_mixing.png (first MixerBlock). Patch maps leave
    every prefix token (class, distillation, registers) out.

    Args:
        model: a keras_vitmix model with a PatchEmbedding that takes pixel values in
            [0, 255] (`include_preprocessing=True`).
        image: one image (H, W, C), uint8 or float in [0, 255]; resized (with a
            warning) to the model's input size when it differs.
        output_dir: folder, created if missing.
        layer: attention block name or index among the attention blocks; the last
            one when None.
        head: int head, or None for the mean over heads.
        query: patch index or (row, col); the center patch when None.
        animate: bool, also write a GIF stepping the query over every patch.
        dpi: int, resolution of the files.

    Returns:
        The list of written paths.

    Example:

    >>> model = keras_vitmix.applications.create_model("seed_vit")
    >>> paths = write_attention_figures(model, np.zeros((72, 72, 3), np.uint8), "/tmp/figures")
    """
    from keras_vitmix import inspection
    from keras_vitmix.layers import MixerBlock, TransformerBlock

    grid = inspection.patch_grid(model)
    image = _model_image(model, image)
    figures, animation = [("patches.png", lambda: image_patches(image, grid.patch_size))], None
    if any(isinstance(layer_, TransformerBlock) for layer_ in model.layers):
        more, animation = _attention_figures(model, image, grid, layer, head, query)
        figures += more
    elif layer is not None or head is not None:
        raise ValueError(f"`layer` and `head` choose attention maps; model '{model.name}' has no attention. "
                         f"Received: layer={layer!r}, head={head!r}")
    if any(isinstance(layer_, MixerBlock) for layer_ in model.layers):
        weights = inspection.token_mixing_weights(model, 0)
        figures.append(("token_mixing.png", lambda: token_mixing_tiles(weights)))
    if len(figures) == 1:
        import warnings

        warnings.warn(f"Model '{model.name}' has no attention and no MixerBlock: only the patches are drawn.",
                      stacklevel=2)
    os.makedirs(output_dir, exist_ok=True)
    plt, paths = pyplot(), []
    for name, make in figures:
        fig = make()
        paths.append(os.path.join(output_dir, name))
        fig.savefig(paths[-1], dpi=dpi)
        plt.close(fig)
    if animate and animation is not None:
        paths.append(os.path.join(output_dir, "query_attention.gif"))
        _animate(paths[-1], *animation, dpi=max(24, dpi // 2))
    return paths
