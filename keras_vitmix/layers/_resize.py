"""Bicubic resizing in NumPy, identical under every backend and to timm's.

timm resamples position embeddings with `torch.nn.functional.interpolate(mode="bicubic",
antialias=True)`, whose kernel is PIL's (Keys' cubic with a = -0.5, widened by the
scale when shrinking, weights renormalized at the borders). `keras.ops.image.resize`
differs per backend (TensorFlow and JAX use other kernels and border rules), so the
weights are computed here once, exactly as PyTorch and PIL compute them.
"""

import numpy as np


def _cubic(x, a=-0.5):
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _resize_matrix(in_size, out_size):
    """(out_size, in_size) weights of antialiased bicubic resampling along one axis."""
    scale = in_size / out_size
    support = 2.0 * max(scale, 1.0)  # the cubic's radius 2, widened when shrinking
    stretch = 1.0 / max(scale, 1.0)
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        start = max(int(center - support + 0.5), 0)
        stop = min(int(center + support + 0.5), in_size)
        taps = _cubic((np.arange(start, stop) - center + 0.5) * stretch)
        matrix[i, start:stop] = taps / taps.sum()
    return matrix


def bicubic_resize(grid, size):
    """Resizes a (h, w, D) array to (size[0], size[1], D), as timm resizes embeddings.

    Args:
        grid: array (h, w, D).
        size: (h', w') target size.

    Returns:
        float32 NumPy array (h', w', D).
    """
    grid = np.asarray(grid, dtype=np.float64)
    rows = _resize_matrix(grid.shape[0], size[0])
    cols = _resize_matrix(grid.shape[1], size[1])
    return np.einsum("ih,hwd,jw->ijd", rows, grid, cols).astype(np.float32)
