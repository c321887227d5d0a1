"""Layer-wise learning-rate decay for fine-tuning: AdamW whose rate shrinks towards the input.

A pretrained backbone's early layers hold generic features that fine-tuning should move
little, its late layers and the new head task-specific ones that must move a lot. BEiT
(Bao et al., 2021, https://arxiv.org/abs/2106.08254, Sec. 2.6) gives layer j of a model
with L blocks the rate `peak * layer_decay ** (L + 1 - j)`, where everything before the
first block (patch and position embeddings, class, distillation and register tokens, a
stem) is layer 0, block k is layer k + 1 and everything after the last block (final
norm, pooling, heads) is layer L + 1. MAE, DeiT III and timm's
`param_groups_layer_decay` fine-tune ViTs with the same rule (decay 0.65-0.75); on timm's
vit_tiny it gives 14 scales, from decay ** 13 to 1. One difference: timm's ViT puts its
final norm with the last block (layer L); BEiT and MAE, and this module, with the head.

`layer_ids(model)` numbers a model's top-level layers by that rule from the blocks that
`keras_vitmix.features.model_blocks` finds (every family names them `block_<i>`), and
`LayerDecayAdamW` is Keras's AdamW with each variable's rate, and the decoupled weight
decay that rate drives, scaled by its layer's factor: exactly what timm's parameter
groups do, where a group's `lr_scale` multiplies the rate its AdamW decays with.
`import keras_vitmix` imports this module, so a `.keras` file compiled with the
optimizer reloads, compiled, with `keras.saving.load_model`.
"""

import numbers
import re

import keras
from keras import ops



def layer_ids(model):
    """The BEiT / timm layer id of each top-level layer of `model`.

    With L blocks (`block_0` … `block_<L-1>`, as `keras_vitmix.features.model_blocks`
    finds them), a layer placed in `model.layers` before the first block is layer 0,
    block k is layer k + 1 and a layer after the last block is layer L + 1. A layer
    between two blocks (the reshape from a ConvMixer grid to Mixer tokens in
    `HybridConvMixerMixer`) takes the id of the block before it: it belongs to that
    stage's output.

    Args:
        model: a `keras.Model` whose blocks are named `block_<i>` (every family of
            `keras_vitmix.applications`, built or loaded from `.keras`).

    Returns:
        A dict {layer name: layer id} over every layer of `model.layers`, in order.

    Example:

    >>> model = keras_vitmix.applications.ViT(patch_size=4, hidden_dim=32, num_layers=2,
    ...                                       num_heads=2, input_shape=(16, 16, 3), classes=3)
    >>> ids = layer_ids(model)
    >>> ids["patch_embedding"], ids["block_0"], ids["block_1"], ids["head"]
    (0, 1, 2, 3)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model of type {type(model).__name__}")
    from keras_vitmix.features import model_blocks  # here: `import keras_vitmix` imports no features module

    blocks = model_blocks(model)
    if not blocks:
        raise ValueError(
            f"Layer decay numbers the layers from the model's blocks (block_0, block_1, …); model "
            f"'{model.name}' has none. Received: a model with layers {[layer.name for layer in model.layers][:12]}"
        )
    block_id = {block.name: k + 1 for k, block in enumerate(blocks)}
    ids, current = {}, 0
    for layer in model.layers:
        # Walking the layers in order: before the first block `current` is 0, after a
        # block it is that block's id, after the last block it is L + 1.
        if layer.name in block_id:
            current = block_id[layer.name]
        elif current == len(blocks):
            current = len(blocks) + 1
        ids[layer.name] = current
    return ids


def check_layer_decay(layer_decay):
    """`layer_decay` as a float, or a ValueError naming it."""
    if (
        not isinstance(layer_decay, numbers.Real)
        or isinstance(layer_decay, bool)
        or not 0 < layer_decay <= 1
    ):
        raise ValueError(
            "`layer_decay` must be a number in (0, 1]: each layer's rate is "
            f"layer_decay ** (num_layers + 1 - layer id), 1.0 for none. Received: layer_decay={layer_decay!r}"
        )
    return float(layer_decay)


def _check_ids(ids, num_layers):
    """`ids` as a plain {str: int} dict and `num_layers` as an int, both checked."""
    if not isinstance(ids, dict) or not ids:
        raise TypeError(
            "`layer_ids` must be a non-empty dict {top-level layer name: layer id}, e.g. "
            f"keras_vitmix.optimizers.layer_ids(model). Received: layer_ids={ids!r}"
        )
    bad = {k: v for k, v in ids.items() if not isinstance(k, str) or not _is_int(v) or v < 0}
    if bad:
        raise ValueError(f"`layer_ids` must map layer names to ints >= 0. Received: {bad!r}")
    if num_layers is None:
        num_layers = max(ids.values()) - 1  # the head's id is L + 1
    if not _is_int(num_layers) or num_layers < 0 or max(ids.values()) > num_layers + 1:
        raise ValueError(
            "`num_layers` must be the model's number of blocks L, an int >= 0 with every layer id in "
            f"[0, L + 1]. Received: num_layers={num_layers!r}, largest id {max(ids.values())}"
        )
    return {k: int(v) for k, v in ids.items()}, int(num_layers)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class _VariableTable:
    """The variables an optimizer was built with, their scales and names, and a lookup
    from whatever `update_step` receives for one of them.

    Keras hands `update_step` the `keras.Variable` under JAX and torch, but its
    `tf.Variable` (`variable.value`) under TensorFlow, and under a `tf.distribute`
    strategy each replica's copy of it. A plain object, so Keras's attribute tracking
    does not take the model's variables for the optimizer's own.
    """

    def __init__(self, variables, scales):
        self.variables = list(variables)
        self.scales = list(scales)
        self.by_id = {}
        self.index_replicas()

    def index_replicas(self):
        for i, variable in enumerate(self.variables):
            self.by_id[id(variable)] = i
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                value = variable.value
                self.by_id[id(value)] = i
                # The current strategy's per-replica copies (only the variable itself
                # outside tf.distribute).
                for local in tf.distribute.get_strategy().experimental_local_results(value):
                    self.by_id[id(local)] = i

    def index(self, variable):
        if id(variable) not in self.by_id:
            self.index_replicas()  # first seen inside a strategy's update: its replicas
        if id(variable) not in self.by_id:
            raise ValueError(
                f"The optimizer was not built with variable '{variable.name}'. Build it on every "
                "variable it updates (`model.compile` and `fit` do)."
            )
        return self.by_id[id(variable)]


class _Exclusions:
    """`exclude_from_weight_decay`'s arguments, matched as Keras matches them: a variable
    in `var_list`, or whose name (`keras.Variable.name`) contains one of `var_names`."""

    def __init__(self, var_list=None, var_names=None):
        self.ids = frozenset(id(variable) for variable in var_list or ())
        self.pattern = re.compile("|".join(set(var_names))) if var_names else None

    def excludes(self, variable):
        return id(variable) in self.ids or bool(self.pattern and self.pattern.search(variable.name))


class _Frozen:
    """A dict kept as a plain object: Keras's tracking would wrap a dict attribute."""

    def __init__(self, values):
        self.values = dict(values)


@keras.saving.register_keras_serializable(package="keras_vitmix")
class LayerDecayAdamW(keras.optimizers.AdamW):
    """AdamW with BEiT's layer-wise learning-rate decay, for fine-tuning.

    Each trainable variable belongs to the top-level layer named by the first component
    of its path that `layer_ids` names (`"block_3/mlp/fc1/kernel"` to `block_3`), and its
    rate is the schedule's times `layer_decay ** (num_layers + 1 - id)`. Everything else
    is Keras's AdamW: the same moments, bias correction, clipping, EMA and gradient
    accumulation. Decoupled weight decay (`variable -= variable * weight_decay * rate`,
    before the Adam step, as Keras applies it) uses the scaled rate too, as timm's layer
    decay groups do; `exclude_from_weight_decay` works as in AdamW. Keras's own
    `weight_decay` attribute stays None (Keras would apply it at the unscaled rate); the
    coefficient is `decoupled_weight_decay`, and the config's `weight_decay`.

    A variable whose layer is not in `layer_ids` is refused when the optimizer is built
    (a ValueError naming its path), rather than trained at some rate nobody chose.

    Args:
        layer_ids: dict {top-level layer name: layer id}, as `layer_ids(model)` gives.
        layer_decay: float in (0, 1], the factor per layer; 1.0 is plain AdamW.
        num_layers: int, the model's number of blocks L; None reads it as the largest
            id minus 1 (right when the map has a layer after the last block, such as
            the head or the final norm).
        weight_decay: float or None, AdamW's decoupled weight decay coefficient.
        **kwargs: any other argument of `keras.optimizers.AdamW` (`learning_rate`,
            a float or a `LearningRateSchedule`, `beta_1`, `global_clipnorm`,
            `use_ema`, `ema_momentum`, …).

    Example:

    >>> model = keras_vitmix.applications.ViT(patch_size=4, hidden_dim=32, num_layers=2,
    ...                                       num_heads=2, input_shape=(16, 16, 3), classes=3)
    >>> optimizer = LayerDecayAdamW(layer_ids(model), layer_decay=0.75, learning_rate=1e-3)
    >>> optimizer.layer_scale("patch_embedding"), optimizer.layer_scale("head")
    (0.421875, 1.0)

    Reference:
    - Bao et al., 2021, "BEiT: BERT Pre-Training of Image Transformers",
      https://arxiv.org/abs/2106.08254 (layer-wise learning-rate decay)
    - timm's `timm.optim.param_groups_layer_decay`
    """

    def __init__(self, layer_ids, layer_decay=0.75, num_layers=None, weight_decay=0.004, **kwargs):
        layer_decay = check_layer_decay(layer_decay)
        ids, num_layers = _check_ids(layer_ids, num_layers)
        if weight_decay is not None and (
            not isinstance(weight_decay, numbers.Real) or isinstance(weight_decay, bool) or not weight_decay >= 0
        ):
            raise ValueError(f"`weight_decay` must be None or a number >= 0. Received: weight_decay={weight_decay!r}")
        super().__init__(weight_decay=0.0, **kwargs)  # AdamW refuses None here
        self.weight_decay = None  # Keras's unscaled decay off: update_step decays at the scaled rate
        self.layer_decay = layer_decay
        self.num_layers = num_layers
        self.decoupled_weight_decay = None if weight_decay is None else float(weight_decay)
        self.layer_id_map = _Frozen(ids)
        self.decay_exclusions = _Exclusions()
        self.variable_table = None

    def layer_scale(self, layer_name):
        """The factor on the rate of the variables of layer `layer_name`."""
        return self.layer_decay ** (self.num_layers + 1 - self.layer_id_map.values[layer_name])

    def variable_scale(self, variable):
        """The factor on `variable`'s rate: its layer's, found from its path."""
        for name in variable.path.split("/"):
            if name in self.layer_id_map.values:
                return self.layer_scale(name)
        raise ValueError(
            f"Variable '{variable.path}' belongs to no layer of `layer_ids`, so it has no layer-decay "
            f"scale. Received: layer_ids naming {sorted(self.layer_id_map.values)}"
        )

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        super().exclude_from_weight_decay(var_list=var_list, var_names=var_names)
        self.decay_exclusions = _Exclusions(var_list, var_names)

    def build(self, var_list):
        if self.built:
            return
        scales = [self.variable_scale(variable) for variable in var_list]  # refuse before building
        super().build(var_list)
        self.variable_table = _VariableTable(var_list, scales)

    def update_step(self, gradient, variable, learning_rate):
        # Every backend runs this per variable: torch swaps its fused `_foreach` AdamW in
        # only for Keras's own classes (by exact type), TensorFlow's tf.distribute update
        # calls it on each replica's copy, JAX's stateless apply on each variable. The
        # decay, then Adam's step, both at the scaled rate, is Keras's AdamW order.
        index = self.variable_table.index(variable)
        scale = self.variable_table.scales[index]
        lr = ops.cast(learning_rate, variable.dtype)
        if scale != 1.0:
            lr = ops.multiply(lr, ops.cast(scale, variable.dtype))
        own = self.variable_table.variables[index]  # the keras.Variable, whose name Keras matches
        if self.decoupled_weight_decay and not self.decay_exclusions.excludes(own):
            wd = ops.cast(self.decoupled_weight_decay, variable.dtype)
            self.assign_sub(variable, ops.multiply(ops.multiply(variable, wd), lr))
        super().update_step(gradient, variable, lr)

    def get_config(self):
        config = super().get_config()
        config.update(
            layer_ids=dict(self.layer_id_map.values),
            layer_decay=self.layer_decay,
            num_layers=self.num_layers,
            weight_decay=self.decoupled_weight_decay,
        )
        return config


def layer_decay_optimizer(model, layer_decay=0.75, **kwargs):
    """A `LayerDecayAdamW` for `model`: its `layer_ids` and its number of blocks.

    Args:
        model: a `keras.Model` with blocks named `block_<i>`.
        layer_decay: float in (0, 1], the factor per layer.
        **kwargs: `keras.optimizers.AdamW`'s arguments (`learning_rate`,
            `weight_decay`, `global_clipnorm`, `use_ema`, …).

    Returns:
        A `LayerDecayAdamW`.

    Example:

    >>> optimizer = layer_decay_optimizer(model, 0.65, learning_rate=5e-4, weight_decay=0.05)
    """
    from keras_vitmix.features import model_blocks

    return LayerDecayAdamW(layer_ids(model), layer_decay=layer_decay, num_layers=len(model_blocks(model)), **kwargs)
