"""matplotlib figures. Every function returns a `matplotlib.figure.Figure` and never calls
`show()`; save one with `fig.savefig(path)`. The Agg backend is used when no display is
set, so this works on servers and in tests.

The figures live in one module per topic, all importable from here: `training` (curves,
confusion matrix), `attention` (patch grid, attention maps, rollout, attention distance,
token-mixing weights), `cost` (time against tokens, speed against accuracy); `base` holds
what they share.
"""

from keras_vitmix.plotting.attention import (
    attention_distance,
    attention_heads,
    attention_map,
    image_patches,
    query_attention,
    rollout_overlay,
    token_mixing_tiles,
)
from keras_vitmix.plotting.base import pyplot
from keras_vitmix.plotting.cost import cost_curves, speed_accuracy
from keras_vitmix.plotting.training import confusion_matrix, training_curves

# The name `pyplot` had before it was public; benchmarks/scaling.py still calls it.
_pyplot = pyplot

__all__ = [
    "attention_distance",
    "attention_heads",
    "attention_map",
    "confusion_matrix",
    "cost_curves",
    "image_patches",
    "pyplot",
    "query_attention",
    "rollout_overlay",
    "speed_accuracy",
    "token_mixing_tiles",
    "training_curves",
]
