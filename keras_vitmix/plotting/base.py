"""What every figure module draws with: matplotlib set up for servers, images as imshow
takes them, a grid of small axes, and a heat map laid over an image."""

import os

import numpy as np


def pyplot():
    """`matplotlib.pyplot`, on the Agg backend when no display is set (servers, tests)."""
    import matplotlib

    if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def as_image(image):
    """One image (H, W, C) or (H, W) with values in [0, 255] as floats in [0, 1] for imshow."""
    image = np.asarray(image, dtype=np.float32)
    image = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(f"Expected one image (height, width[, channels]). Received: shape {image.shape}")
    return np.clip(image / 255.0, 0.0, 1.0)


def upsample(grid, size):
    """Nearest-neighbour resize of a (h, w) map to `size` = (H, W)."""
    rows = np.arange(size[0]) * grid.shape[0] // size[0]
    cols = np.arange(size[1]) * grid.shape[1] // size[1]
    return grid[rows][:, cols]


def overlay(ax, image, heat, query=None, grid_shape=None, title=None):
    """Draws `image` with the (h, w) map `heat` on top and, for a query patch index, a
    rectangle around that patch of the `grid_shape` grid."""
    from matplotlib.patches import Rectangle

    ax.imshow(image, cmap="gray")
    ax.imshow(upsample(heat, image.shape[:2]), cmap="inferno", alpha=0.6, vmin=0, vmax=max(float(heat.max()), 1e-12))
    if query is not None:
        ph, pw = image.shape[0] / grid_shape[0], image.shape[1] / grid_shape[1]
        row, col = divmod(query, grid_shape[1])
        ax.add_patch(Rectangle((col * pw - 0.5, row * ph - 0.5), pw, ph, fill=False, edgecolor="cyan", linewidth=2))
    ax.set_title(title or "", fontsize=9)
    ax.axis("off")


def grid_figure(count, max_cols, tile=1.6):
    """A figure with `count` axes on a grid of at most `max_cols` columns; returns
    `(figure, axes)` with the axes in row-major order."""
    cols = min(count, max_cols)
    rows = -(-count // cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(tile * cols, tile * rows), squeeze=False)
    for ax in axes.ravel()[count:]:
        fig.delaxes(ax)
    return fig, axes.ravel()[:count]
