"""Patch embedding: an image becomes a sequence (or grid) of tokens.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021
(https://arxiv.org/abs/2010.11929): cut the image into non-overlapping P x P patches
and project each linearly, which is a convolution with kernel = stride = P; optionally
prepend a learnable class token (and DeiT's distillation token, Touvron et al. 2021,
https://arxiv.org/abs/2012.12877, and register tokens, Darcet et al., "Vision Transformers
Need Registers", ICLR 2024, https://arxiv.org/abs/2309.16588) and add a position embedding
(learned, or the fixed 2-D sine-cosine one of Chen et al. 2021,
https://arxiv.org/abs/2104.02057).

The prefix tokens come in timm's order (`VisionTransformer._pos_embed`,
`VisionTransformerDistilled._pos_embed`): class, distillation, registers, then the
patches. Their count, `num_prefix_tokens`, is the one number that pooling, inspection,
features and resampling use to find the patches.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vitmix._internals import call_sublayer as _sub
from keras_vitmix.layers._checks import check_positive_int, to_pair
from keras_vitmix.layers._resize import bicubic_resize
from keras_vitmix.layers.conv import Conv2D

POSITION_EMBEDDINGS = ("learned", "sincos", None)


def sincos_position_embedding(grid_size, dim, temperature=10000.0):
    """Fixed 2-D sine-cosine embedding, (h * w, dim) as NumPy float32 (MoCo v3 layout)."""
    if dim % 4:
        raise ValueError(
            f"The sincos position embedding needs `hidden_dim` divisible by 4. Received: hidden_dim={dim}"
        )
    h, w = grid_size
    grid_y, grid_x = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    omega = 1.0 / temperature ** (np.arange(dim // 4, dtype=np.float32) / (dim // 4))
    out_y = grid_y.reshape(-1, 1) * omega[None]
    out_x = grid_x.reshape(-1, 1) * omega[None]
    return np.concatenate([np.sin(out_x), np.cos(out_x), np.sin(out_y), np.cos(out_y)], axis=1)


def resample_position_embedding(embedding, new_grid, old_grid=None, num_prefix_tokens=0):
    """Resizes a learned position embedding to another patch grid (bicubic), as timm does.

    The interpolation is timm's `resample_abs_pos_embed` (PyTorch's antialiased bicubic),
    computed in NumPy, so every backend gets the same numbers.

    Args:
        embedding: array (1, num_prefix_tokens + h * w, D).
        new_grid: (h', w') target grid.
        old_grid: (h, w) source grid; inferred as square when omitted.
        num_prefix_tokens: leading positions kept as they are: the embedding's entries for
            the class/distillation/register tokens (0 where the embedding covers the
            patches only, `use_prefix_positions=False`).

    Returns:
        NumPy array (1, num_prefix_tokens + h' * w', D).
    """
    embedding = np.asarray(keras.ops.convert_to_numpy(embedding), dtype=np.float32)
    prefix, grid = embedding[:, :num_prefix_tokens], embedding[:, num_prefix_tokens:]
    count, dim = grid.shape[1], grid.shape[2]
    if old_grid is None:
        side = int(round(math.sqrt(count)))
        if side * side != count:
            raise ValueError(
                f"Cannot infer a square grid from {count} positions; pass `old_grid`. "
                f"Received: embedding.shape={embedding.shape}, num_prefix_tokens={num_prefix_tokens}"
            )
        old_grid = (side, side)
    old_grid, new_grid = to_pair(old_grid, "old_grid"), to_pair(new_grid, "new_grid")
    if old_grid[0] * old_grid[1] != count:
        raise ValueError(
            f"`old_grid` does not match the embedding. Received: old_grid={old_grid}, "
            f"positions={count} (expected {old_grid[0] * old_grid[1]})"
        )
    if tuple(old_grid) != tuple(new_grid):
        grid = bicubic_resize(grid.reshape(old_grid[0], old_grid[1], dim), new_grid).reshape(1, -1, dim)
    return np.concatenate([prefix, grid], axis=1)


@keras.saving.register_keras_serializable(package="keras_vitmix")
class PatchEmbedding(keras.layers.Layer):
    """Images (B, H, W, C) to tokens (B, N, D), or a grid (B, H/P, W/P, D).

    The layer learns its grid from the input shape in `build()`; `grid_size` and
    `num_patches` are available afterwards.

    Args:
        hidden_dim: int, token dimension D.
        patch_size: int or (int, int), patch height and width P; must divide the image.
        use_class_token: bool, prepend a learnable class token (needs `flatten=True`).
        use_distillation_token: bool, also prepend DeiT's distillation token, after the
            class token (needs `use_class_token=True`).
        position_embedding: "learned", "sincos" (fixed 2-D sine-cosine) or None.
        flatten: bool, return tokens (B, N, D) rather than the grid (B, h, w, D).
        num_register_tokens: int, learned register tokens after the class (and
            distillation) token (Darcet et al., 2024): extra tokens that hold the global
            computations a ViT otherwise parks in low-information patches, so those
            patches' attention maps stay clean. Needs `flatten=True`.
        use_prefix_positions: bool, whether the position embedding has entries for the
            prefix tokens (ViT, DeiT: added after the prefix tokens are prepended). False
            is timm's `no_embed_class=True` (DeiT III, DINOv2 with registers): the
            embedding covers the patches only and the prefix tokens are prepended after
            it is added.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: images (B, H, W, C) with the size and channel count the layer was
            built for.

    Returns:
        Tokens (B, num_prefix_tokens + h * w, D) when `flatten` (class, distillation,
        register tokens, then the patches row-major), else the grid (B, h, w, D).

    Example:

    >>> embed = PatchEmbedding(64, patch_size=4, use_class_token=True)
    >>> embed(keras.ops.ones((2, 32, 32, 3))).shape
    (2, 65, 64)

    Reference:
        Dosovitskiy et al., 2021, https://arxiv.org/abs/2010.11929
        Darcet et al., 2024, https://arxiv.org/abs/2309.16588 (registers)
    """

    def __init__(
        self,
        hidden_dim,
        patch_size,
        use_class_token=False,
        position_embedding="learned",
        flatten=True,
        use_distillation_token=False,
        num_register_tokens=0,
        use_prefix_positions=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        self.patch_size = to_pair(patch_size, "patch_size")
        self.num_register_tokens = check_positive_int(num_register_tokens, "num_register_tokens", minimum=0)
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"`position_embedding` must be one of {POSITION_EMBEDDINGS}. "
                f"Received: position_embedding={position_embedding!r}"
            )
        if use_class_token and not flatten:
            raise ValueError(
                "A class token needs a token sequence: `use_class_token=True` requires "
                "`flatten=True`. Received: flatten=False"
            )
        if self.num_register_tokens and not flatten:
            raise ValueError(
                "Register tokens need a token sequence: `num_register_tokens` > 0 requires "
                f"`flatten=True`. Received: num_register_tokens={num_register_tokens}, flatten=False"
            )
        if use_distillation_token and not use_class_token:
            raise ValueError(
                "A distillation token follows the class token: `use_distillation_token=True` "
                "requires `use_class_token=True`. Received: use_class_token=False"
            )
        self.use_class_token = bool(use_class_token)
        self.use_distillation_token = bool(use_distillation_token)
        self.position_embedding = position_embedding
        self.flatten = bool(flatten)
        self.use_prefix_positions = bool(use_prefix_positions)
        self.projection = Conv2D(
            hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            dtype=self.dtype_policy,
            name="projection",
        )

    @property
    def num_prefix_tokens(self):
        """Tokens before the patches: class + distillation + registers."""
        return int(self.use_class_token) + int(self.use_distillation_token) + self.num_register_tokens

    @property
    def num_prefix_positions(self):
        """Entries of the position embedding before the patches' (kept as they are when
        it is resampled): the prefix tokens', or none with `use_prefix_positions=False`."""
        return self.num_prefix_tokens if self.use_prefix_positions else 0

    @property
    def num_patches(self):
        return self.grid_size[0] * self.grid_size[1]

    def _check_image_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"PatchEmbedding expects images (batch, height, width, channels). "
                f"Received: input_shape={tuple(shape)}"
            )
        height, width, channels = shape[1], shape[2], shape[3]
        if height is None or width is None or channels is None:
            raise ValueError(
                "PatchEmbedding needs a known image size and channel count. "
                f"Received: input_shape={tuple(shape)}"
            )
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(
                "The patch size must divide the image size. Received: "
                f"patch_size={self.patch_size[0] if self.patch_size[0] == self.patch_size[1] else self.patch_size}, "
                f"image size=({height}, {width})"
            )

    def build(self, input_shape):
        self._check_image_shape(input_shape)
        self.image_size = (input_shape[1], input_shape[2])
        self.num_channels = input_shape[3]
        self.grid_size = (input_shape[1] // self.patch_size[0], input_shape[2] // self.patch_size[1])
        self.projection.build(input_shape)
        if self.use_class_token:
            self.class_token = self.add_weight(
                shape=(1, 1, self.hidden_dim), initializer="zeros", name="class_token"
            )
        if self.use_distillation_token:
            self.distillation_token = self.add_weight(
                shape=(1, 1, self.hidden_dim),
                initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                name="distillation_token",
            )
        if self.num_register_tokens:
            # DINOv2 and timm draw registers from N(0, 1e-6): distinct, so that they can
            # learn different roles, and negligible at the start.
            self.register_tokens = self.add_weight(
                shape=(1, self.num_register_tokens, self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=1e-6),
                name="register_tokens",
            )
        positions = self.num_prefix_positions + self.num_patches
        if self.position_embedding == "learned":
            self.position_embeddings = self.add_weight(
                shape=(1, positions, self.hidden_dim),
                initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                name="position_embeddings",
            )
        elif self.position_embedding == "sincos":
            table = sincos_position_embedding(self.grid_size, self.hidden_dim)
            prefix = np.zeros((self.num_prefix_positions, self.hidden_dim), np.float32)
            self._sincos_table = np.concatenate([prefix, table])[None]

    def call(self, inputs):
        shape = tuple(inputs.shape)
        if shape[1:] != (*self.image_size, self.num_channels):
            raise ValueError(
                f"PatchEmbedding was built for images of shape {(*self.image_size, self.num_channels)} "
                f"(height, width, channels). Received: input shape={shape}. Build a new model "
                "for another size; `resample_position_embedding` carries learned positions over."
            )
        x = _sub(self.projection, inputs)  # (B, h, w, D)
        if not self.flatten:
            if self.position_embedding is not None:
                x = x + ops.reshape(self._positions(), (1, *self.grid_size, self.hidden_dim))
            return x
        batch = ops.shape(x)[0]
        x = ops.reshape(x, (batch, self.num_patches, self.hidden_dim))  # (B, N, D)
        add_positions = self.position_embedding is not None
        if add_positions and not self.use_prefix_positions:
            x = x + self._positions()  # the patches' positions, before the prefix joins
        prefix = [self.class_token] if self.use_class_token else []
        prefix += [self.distillation_token] if self.use_distillation_token else []
        prefix += [self.register_tokens] if self.num_register_tokens else []
        if prefix:
            prefix = [ops.broadcast_to(ops.cast(t, x.dtype), (batch, t.shape[1], self.hidden_dim)) for t in prefix]
            x = ops.concatenate([*prefix, x], axis=1)  # (B, prefix + N, D)
        if add_positions and self.use_prefix_positions:
            x = x + self._positions()
        return x

    def _positions(self):
        if self.position_embedding == "learned":
            return ops.cast(self.position_embeddings, self.compute_dtype)
        return ops.convert_to_tensor(self._sincos_table, dtype=self.compute_dtype)

    def set_position_embeddings(self, embedding, source_grid=None):
        """Assigns a learned position embedding, resampling it to this layer's grid.

        Args:
            embedding: array (1, num_prefix_positions + h * w, D) from a model at
                another (or the same) resolution.
            source_grid: (h, w) of `embedding`; inferred as square when omitted.
        """
        if self.position_embedding != "learned":
            raise ValueError(
                "Only a learned position embedding can be assigned. "
                f"Received: position_embedding={self.position_embedding!r}"
            )
        resampled = resample_position_embedding(
            embedding, self.grid_size, source_grid, self.num_prefix_positions
        )
        self.position_embeddings.assign(resampled)

    def compute_output_shape(self, input_shape):
        grid = (
            None if input_shape[1] is None else input_shape[1] // self.patch_size[0],
            None if input_shape[2] is None else input_shape[2] // self.patch_size[1],
        )
        if not self.flatten:
            return (input_shape[0], *grid, self.hidden_dim)
        tokens = None if None in grid else grid[0] * grid[1] + self.num_prefix_tokens
        return (input_shape[0], tokens, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "patch_size": self.patch_size,
                "use_class_token": self.use_class_token,
                "position_embedding": self.position_embedding,
                "flatten": self.flatten,
                "use_distillation_token": self.use_distillation_token,
                "num_register_tokens": self.num_register_tokens,
                "use_prefix_positions": self.use_prefix_positions,
            }
        )
        return config
