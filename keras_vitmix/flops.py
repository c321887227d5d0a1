"""FLOPs per image, computed from the architecture.

Counts the multiply-accumulates (MACs) of every matrix product and convolution, as the
papers do (DeiT's Table 1 gives 1.3 / 4.6 / 17.6 G for Ti / S / B at 224 px, attention
products included), and reports FLOPs = 2 x MACs. Normalizations, activations, softmax
and additions are left out: together they are a few percent at these sizes.

Example:

>>> from keras_vitmix.applications import create_model
>>> count_flops(create_model("vit_base_patch16_224"))["macs"] / 1e9  # doctest: +ELLIPSIS
17.5...
"""

import math

import keras

from keras_vitmix import layers as vitmix_layers


def count_flops(model):
    """MACs and FLOPs of one image through `model`, by layer.

    Args:
        model: a functional `keras.Model` (every keras_vitmix application is one).

    Returns:
        dict with "macs" and "flops" (= 2 x macs) per image, and "by_layer":
        {layer name: macs} for the layers that multiply.
    """
    if not (isinstance(model, keras.Model) and isinstance(model, keras.Function)):
        raise ValueError(f"count_flops needs a functional keras.Model. Received: {type(model).__name__}")
    by_layer = {}
    for layer in model.layers:  # each called in the graph, so `layer.input` is defined
        shape = tuple(layer.input.shape[1:]) if not isinstance(layer.input, (list, tuple, dict)) else None
        if shape is None or None in shape:
            continue
        macs = _layer_macs(layer, shape)
        if macs:
            by_layer[layer.name] = macs
    macs = sum(by_layer.values())
    return {"macs": macs, "flops": 2 * macs, "by_layer": by_layer}


def _layer_macs(layer, shape):
    """MACs of one call of `layer` on one example of `shape` (no batch)."""
    if isinstance(layer, vitmix_layers.PatchEmbedding):
        return _conv_macs(layer.projection, shape)
    if isinstance(layer, vitmix_layers.TransformerBlock):
        tokens, dim = shape
        attention = layer.attention
        inner = attention.qkv.units // 3
        projections = tokens * (attention.qkv.units * dim + inner * dim)
        products = 2 * tokens * tokens * inner  # q @ k^T, then scores @ v
        return projections + products + _mlp_macs(layer.mlp, tokens, dim)
    if isinstance(layer, vitmix_layers.MixerBlock):
        tokens, dim = shape
        return _mlp_macs(layer.token_mixing, dim, tokens) + _mlp_macs(layer.channel_mixing, tokens, dim)
    if isinstance(layer, vitmix_layers.ConvMixerBlock):
        return _conv_macs(layer.depthwise, shape) + _conv_macs(layer.pointwise, shape)
    if isinstance(layer, vitmix_layers.MLP):
        return _mlp_macs(layer, math.prod(shape[:-1]), shape[-1])
    if isinstance(layer, keras.layers.Dense):
        return math.prod(shape[:-1]) * shape[-1] * layer.units
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        return _conv_macs(layer, shape)
    return 0


def _mlp_macs(mlp, vectors, dim):
    """An MLP (fc1 then fc2 back to `dim`) applied to `vectors` vectors of size `dim`."""
    return vectors * 2 * dim * mlp.fc1.units


def _conv_macs(conv, shape):
    height, width, channels = shape
    (kh, kw), (sh, sw) = conv.kernel_size, conv.strides
    if conv.padding == "same":
        out_h, out_w = math.ceil(height / sh), math.ceil(width / sw)
    else:
        out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        per_pixel = kh * kw * channels * conv.depth_multiplier
    else:
        per_pixel = kh * kw * (channels // conv.groups) * conv.filters
    return out_h * out_w * per_pixel
