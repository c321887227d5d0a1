"""matplotlib figures. Every function returns a `matplotlib.figure.Figure` and never calls
`show()`; save one with `fig.savefig(path)`. The Agg backend is used when no display is
set, so this works on servers and in tests.

The figures live in one module per topic, importable from here: `training` (curves,
confusion matrix) and `attention` (patch grid, attention maps, the class token's
attention with registers apart, rollout, attention distance, token-mixing weights);
`charts` draws plain log-log curves and labelled points for `keras_vitmix.cost`
(`cost.cost_curves`, `cost.speed_accuracy`); `base` holds what they all share.

Every heat map has a colour bar and a colour scale fitted to the values drawn (or a
stated fixed range: a confusion matrix from 0 images, token-mixing tiles from -1 to 1 of
each tile's largest weight); an overlay puts the image in full beside the heat map and
under it in gray at half strength, so that neither hides the other.
"""

from keras_vitmix.plotting.attention import (
    attention_distance,
    attention_heads,
    attention_map,
    class_attention,
    image_patches,
    query_attention,
    rollout_overlay,
    token_mixing_tiles,
)
from keras_vitmix.plotting.base import pyplot
from keras_vitmix.plotting.training import confusion_matrix, training_curves

__all__ = [
    "attention_distance",
    "attention_heads",
    "attention_map",
    "class_attention",
    "confusion_matrix",
    "image_patches",
    "pyplot",
    "query_attention",
    "rollout_overlay",
    "token_mixing_tiles",
    "training_curves",
]
