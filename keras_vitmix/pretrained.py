"""Pretrained weights and frozen backbones for a training run (`train(weights=, freeze=)`).

Adapting a pretrained backbone to new images is what people do with a model zoo first.
`train` builds the network for the data (its classes, its image size) and this module
puts the weights into it, whatever their source:

- "timm" or "timm:<timm name>": timm's checkpoint, fetched through timm, with its
  normalization (`create_model(name, weights=...)`, `keras_vitmix.weights`);
- a timm file (`.safetensors`, `.pth`, `.pt`, `.bin`), tensor for tensor;
- a `.keras` of ours (a `train` run's model.keras): variable for variable by path, the
  position embedding resampled where the image size differs;
- a `.weights.h5` of ours, saved from the same architecture at the same image size.

Everything but the classifier must fit, or a ValueError lists what did not and nothing
is trained. Where the data's classes differ from the weights' (or the weights have no
head), the head is new and starts at zero (`keras_vitmix.weights.zero_head` says why).

`freeze="backbone"` is a linear probe (keras-hub's `backbone.trainable = False`): every
layer but the classifier is made non-trainable, which in Keras also keeps
BatchNormalization on its moving statistics. The run's checkpoints are saved with every
layer trainable again (`thawed`), so a probe's model.keras reloads as a whole model,
ready to be fine-tuned.
"""

import contextlib
import os
import warnings

import keras
import numpy as np

from keras_vitmix.weights import HEADS, resampled_positions, zero_head

TIMM_FILES = (".safetensors", ".pth", ".pt", ".bin")
OWN_FILES = (".keras", ".weights.h5")
FREEZE = (None, "backbone")

# Config entries that do not change a model's variables or what they compute at
# inference: the rest must agree between a `.keras` source and the network trained.
_FREE_CONFIG = (
    "name", "trainable", "dtype", "classes", "input_shape", "classifier_activation", "metadata",
    "drop_path_rate", "dropout_rate", "attention_dropout_rate", "embedding_dropout_rate",
)


def is_timm_name(weights):
    """Whether `weights` names timm's checkpoint ("timm" or "timm:<timm name>")."""
    return isinstance(weights, str) and (weights == "timm" or weights.startswith("timm:"))


def check_weights(weights):
    """A ValueError/TypeError naming `weights` unless it is None, a timm name or an
    existing file of a kind `load` reads; called before any data is read."""
    if weights is None or is_timm_name(weights):
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"`weights` must be None, 'timm', 'timm:<timm name>' or a file path. Received: weights={weights!r} "
            f"of type {type(weights).__name__}"
        )
    path = os.fspath(weights)
    if not path.endswith(TIMM_FILES + OWN_FILES):
        raise ValueError(
            f"`weights` must be 'timm', 'timm:<timm name>', a timm file ({', '.join(TIMM_FILES)}) or one of ours "
            f"({', '.join(OWN_FILES)}). Received: weights={path!r}"
        )
    if not os.path.isfile(path):
        raise ValueError(f"The weights file does not exist. Received: weights={path!r}")


def check_freeze(freeze):
    if freeze not in FREEZE:
        raise ValueError(
            "`freeze` must be None (train every layer) or 'backbone' (a linear probe: the classifier alone "
            f"trains). Received: freeze={freeze!r}"
        )


def load(network, weights, class_names=None):
    """Puts the weights of a file into `network`, built for the run's data.

    Args:
        network: a model of `keras_vitmix.applications`.
        weights: a path of `TIMM_FILES` or `OWN_FILES` (timm names are loaded when the
            network is built: `create_model(name, weights=...)`).
        class_names: the data's classes, in label order, or None. A `.keras` of ours
            records the classes it was trained on (`saving.class_names`): its head is
            kept only for the same classes, not merely as many (two halves of one
            dataset, each relabelled from 0, have heads of one shape and no class in
            common). Files without names keep a head of the right shape, as timm does.

    Returns:
        What was loaded, for metrics.json: {"weights": path, "head": "loaded" or "new"}.
    """
    path = os.fspath(weights)
    if path.endswith(".keras"):
        from keras_vitmix import saving

        source = saving.load_model(path, compile=False, argument="weights")
        trained_on = saving.class_names(source)
        other_classes = None not in (trained_on, class_names) and list(trained_on) != [str(c) for c in class_names]
        new_head = transfer(source, network, path, keep_head=not other_classes)
    elif path.endswith(".weights.h5"):
        new_head = _load_weights_file(network, path)
    else:
        new_head = _load_timm_file(network, path)
    if new_head:
        zero_head(network)
    return {"weights": path, "head": "new" if new_head else "loaded"}


def transfer(source, network, label="the source", keep_head=True):
    """Copies `source`'s variables into `network`'s by path: the same architecture, but
    perhaps other classes (the head is left for `zero_head`, as it is where `keep_head`
    is False) or another image size (the position embedding is resampled, as timm's
    `img_size=` does). Returns whether the head is new; anything else that does not fit
    is a ValueError and nothing is copied."""
    if type(source) is not type(network):
        raise ValueError(
            f"The weights are those of a {type(source).__name__} and the model is a {type(network).__name__}. "
            f"Received: weights={label!r}"
        )
    source_config, config = source.get_config(), network.get_config()
    differing = sorted(
        k for k in set(source_config) | set(config)
        if k not in _FREE_CONFIG and source_config.get(k) != config.get(k) and k != "include_top"
    )
    if differing:
        details = ", ".join(f"{k}: {source_config.get(k)!r} -> {config.get(k)!r}" for k in differing)
        raise ValueError(
            f"The weights are those of another architecture ({details}). Received: weights={label!r}"
        )
    sources = {v.path: v for v in source.weights}
    assignments, problems, new_head = [], [], False
    for variable in network.weights:
        head = variable.path.split("/")[0] in HEADS
        if head and not keep_head:
            new_head = True
            continue
        if variable.path not in sources:
            if head:
                new_head = True
            else:
                problems.append(f"{variable.path}: not in the weights")
            continue
        value = keras.ops.convert_to_numpy(sources[variable.path])
        if tuple(value.shape) != tuple(variable.shape) and variable.path.endswith("position_embeddings"):
            value = resampled_positions(value, network.get_layer("patch_embedding"))
        if tuple(value.shape) != tuple(variable.shape):
            if head:
                new_head = True
                continue
            problems.append(f"{variable.path}: {tuple(value.shape)} -> {tuple(variable.shape)}")
            continue
        assignments.append((variable, value))
    if problems:
        raise ValueError(
            f"The weights do not fit the model ({len(problems)} variables): " + "; ".join(problems[:10])
            + f". Received: weights={label!r}"
        )
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return new_head


def _load_weights_file(network, path):
    """A `.weights.h5` holds no architecture, so it is loaded into the network with
    Keras's own `load_weights(skip_mismatch=True)`, every float variable first set to
    NaN: a variable still NaN afterwards was not in the file. A new head is allowed;
    anything else left is a ValueError."""
    before = [keras.ops.convert_to_numpy(v) for v in network.weights]
    floats = [v for v in network.weights if "float" in str(v.dtype)]
    for variable in floats:
        variable.assign(keras.ops.full(variable.shape, float("nan"), dtype=variable.dtype))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns of each skipped layer; we list them below
            network.load_weights(path, skip_mismatch=True)
    except Exception as error:
        _restore(network, before)
        raise ValueError(f"Keras could not read the weights file ({error}). Received: weights={path!r}") from error
    missing = [v.path for v in floats if np.isnan(keras.ops.convert_to_numpy(v)).any()]
    others = [p for p in missing if p.split("/")[0] not in HEADS]
    if others:
        _restore(network, before)
        raise ValueError(
            f"The weights file does not fit the model: {len(others)} variables were not in it or had other "
            f"shapes ({', '.join(others[:10])}); a .weights.h5 loads into the architecture and image size it was "
            f"saved from (a .keras file also transfers to another image size). Received: weights={path!r}"
        )
    return bool(missing)


def _restore(network, values):
    for variable, value in zip(network.weights, values):
        variable.assign(value)


def _load_timm_file(network, path):
    """A timm file, through `keras_vitmix.weights.load_timm_weights`; its head is
    loaded only where its classes are the data's."""
    from keras_vitmix import checkpoints, weights

    state = checkpoints.read_file(path)
    has_head = any(layer.name in HEADS for layer in network.layers)
    head = state.get("head.weight")
    load_head = has_head and head is not None and int(head.shape[0]) == int(network.output_shape[-1])
    try:
        weights.load_timm_weights(network, state, load_head=load_head)
    except ValueError as error:
        raise ValueError(f"{error}\nReceived: weights={path!r}") from error
    return has_head and not load_head


def head_is_zero(network):
    """Whether every classifier variable of `network` is zero (a new head)."""
    values = [keras.ops.convert_to_numpy(v) for layer in network.layers if layer.name in HEADS for v in layer.weights]
    return bool(values) and not any(value.any() for value in values)


def freeze_backbone(network):
    """Makes every layer of `network` but its classifier(s) non-trainable (a linear
    probe) and returns the names of the layers frozen, for `thawed`."""
    if not any(layer.name in HEADS for layer in network.layers):
        raise ValueError(
            f"freeze='backbone' trains the classifier alone, and model {network.name!r} has none "
            "(include_top=False). Received: freeze='backbone'"
        )
    frozen = [layer for layer in network.layers if layer.name not in HEADS and layer.weights]
    for layer in frozen:
        layer.trainable = False
    return tuple(layer.name for layer in frozen)


@contextlib.contextmanager
def thawed(network, names):
    """Every layer of `names` trainable inside the block (a checkpoint being saved),
    frozen again after it. Keras's trainers read the trainable variables at the start
    of each epoch's steps, so flipping them back and forth at an epoch's end leaves the
    run as it was."""
    layers = [network.get_layer(name) for name in names]
    for layer in layers:
        layer.trainable = True
    try:
        yield network
    finally:
        for layer in layers:
            layer.trainable = False
