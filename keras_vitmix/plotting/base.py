"""What every figure module draws with: matplotlib set up for servers, images as imshow
takes them, a grid of small axes, and heat maps that cannot mislead: a colour scale fitted
to the values drawn, a colour bar beside every heat map, and overlays that leave the image
visible (the image in full in its own panel, and under the heat map at half strength)."""

import os

import numpy as np

OVERLAY_ALPHA = 0.5  # the heat map's opacity over the image: half of the image's contrast stays


def pyplot():
    """`matplotlib.pyplot`, on the Agg backend when no display is set (servers, tests)."""
    import matplotlib

    if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def as_image(image):
    """One image (H, W, C) or (H, W) with values in [0, 255] as floats in [0, 1] for imshow.

    Values outside [0, 255] are refused rather than clipped: an image scaled to [-1, 1]
    would otherwise be drawn as a black square without a word."""
    image = np.asarray(image, dtype=np.float32)
    image = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(f"Expected one image (height, width[, channels]). Received: shape {image.shape}")
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 255:
        raise ValueError(f"Image values must be in [0, 255]. Received: range [{image.min()}, {image.max()}]")
    return image / 255.0


def luminance(image):
    """An image from `as_image` as one gray plane (ITU-R 601 weights), so that a heat map's
    colours laid over it are not mixed with the image's own colours."""
    return image if image.ndim == 2 else image[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)


def upsample(grid, size):
    """Nearest-neighbour resize of a (h, w) map to `size` = (H, W)."""
    rows = np.arange(size[0]) * grid.shape[0] // size[0]
    cols = np.arange(size[1]) * grid.shape[1] // size[1]
    return grid[rows][:, cols]


def heat_limits(values, symmetric=False):
    """(vmin, vmax) of a colour scale fitted to `values`: their min and max, or +-max|v|
    with `symmetric`. A scale from 0 would draw 0.015 +- 0.001 as one flat colour.

    A constant map gets a range of +-0.1% around its value (one middle colour, the value
    on the colour bar); NaN or infinity is refused, since imshow would leave holes."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"Cannot draw a heat map of non-finite values. Received: "
                         f"{np.count_nonzero(~np.isfinite(values))} NaN or infinite of {values.size}")
    low, high = float(values.min()), float(values.max())
    if symmetric:
        high = max(abs(low), abs(high))
        low = -high
    if high - low <= 1e-12 * max(1.0, abs(high)):
        pad = max(1e-3 * abs(high), 1e-12)
        low, high = low - pad, high + pad
    return low, high


def outline(ax, query, grid_shape, image_shape):
    """A cyan rectangle around patch `query` of the `grid_shape` grid on an image of
    `image_shape`; returns it (an animation moves it)."""
    from matplotlib.patches import Rectangle

    ph, pw = image_shape[0] / grid_shape[0], image_shape[1] / grid_shape[1]
    row, col = divmod(query, grid_shape[1])
    box = Rectangle((col * pw - 0.5, row * ph - 0.5), pw, ph, fill=False, edgecolor="cyan", linewidth=2)
    return ax.add_patch(box)


def show_image(ax, image, query=None, grid_shape=None, title="image"):
    """The image in full, untouched by any heat map, with the query patch outlined."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    if query is not None:
        outline(ax, query, grid_shape, image.shape)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def overlay(ax, image, heat, limits, query=None, grid_shape=None, title=None):
    """Draws the (h, w) map `heat` over the gray `image` at OVERLAY_ALPHA, its colours
    spanning `limits` = (vmin, vmax), and outlines patch `query`. Returns the heat map's
    AxesImage, for its colour bar."""
    ax.imshow(luminance(image), cmap="gray", vmin=0, vmax=1)
    drawn = ax.imshow(upsample(heat, image.shape[:2]), cmap="inferno", alpha=OVERLAY_ALPHA,
                      vmin=limits[0], vmax=limits[1])
    if query is not None:
        outline(ax, query, grid_shape, image.shape)
    ax.set_title(title or "", fontsize=9)
    ax.axis("off")
    return drawn


def grid_figure(count, max_cols, tile=1.6):
    """A figure with `count` axes on a grid of at most `max_cols` columns; returns
    `(figure, axes)` with the axes in row-major order."""
    cols = min(count, max_cols)
    rows = -(-count // cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(tile * cols, tile * rows), squeeze=False)
    for ax in axes.ravel()[count:]:
        fig.delaxes(ax)
    return fig, axes.ravel()[:count]


def image_and_heat(axes, image, heat, label, query=None, grid_shape=None, title=None, cax=None):
    """The image in full on `axes[0]`; the (h, w) map `heat` over it on `axes[1]`, on a
    colour scale fitted to `heat`, with its colour bar (labelled `label`; drawn in `cax`
    when given, else beside `axes[1]`). Returns the heat map's AxesImage."""
    show_image(axes[0], image, query, grid_shape)
    drawn = overlay(axes[1], image, heat, heat_limits(heat), query, grid_shape, title)
    axes[1].figure.colorbar(drawn, ax=None if cax else axes[1], cax=cax, label=label)
    return drawn
