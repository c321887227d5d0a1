"""Named variants: `register_model`, `list_models`, `create_model` (as in timm).

Variants are small data tables in each family's module; one test suite runs over
every registered name. Pretrained weights come from sources that register themselves
here (`register_weights_source`): `keras_vitmix.weights` registers "timm", so that
`create_model(name, weights="timm")` works without this module importing it.
"""

import difflib
import fnmatch

_REGISTRY = {}
_WEIGHTS_SOURCES = {}


def register_model(name, family, description="", **config):
    """Registers `name` as `family(**config)`.

    Args:
        name: str, unique variant name (e.g. "vit_tiny_patch16_224").
        family: the application class.
        description: one line shown by `keras-vitmix models`.
        **config: constructor arguments of `family`.
    """
    if name in _REGISTRY:
        raise ValueError(f"A model named {name!r} is already registered.")
    _REGISTRY[name] = {"family": family, "config": dict(config), "description": description}


def list_models(pattern=None):
    """Sorted names of the registered variants, optionally filtered by a glob pattern."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def model_info(name):
    """A copy of the registry entry: {"family", "config", "description"}."""
    entry = _REGISTRY.get(name)
    if entry is None:
        _unknown(name)
    return {**entry, "config": dict(entry["config"])}


def register_weights_source(prefix, loader):
    """Lets `create_model(name, weights=prefix)` and `weights=f"{prefix}:<id>"` build
    through `loader`.

    Args:
        prefix: str, the source's name, without ":" (e.g. "timm"; "hf" could follow).
        loader: callable `loader(name, weights, **overrides)` returning the model: the
            registered variant `name` built with `overrides`, its weights loaded from
            `weights` (the string as given).
    """
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise ValueError(f"`prefix` must be a non-empty str without ':'. Received: prefix={prefix!r}")
    if not callable(loader):
        raise TypeError(f"`loader` must be callable. Received: loader of type {type(loader).__name__}")
    known = _WEIGHTS_SOURCES.get(prefix)
    if known is not None and _where(known) != _where(loader):  # a re-import registers the same one
        raise ValueError(f"A weights source named {prefix!r} is already registered: {_where(known)}.")
    _WEIGHTS_SOURCES[prefix] = loader


def _where(loader):
    return f"{getattr(loader, '__module__', '?')}.{getattr(loader, '__qualname__', repr(loader))}"


def list_weights_sources():
    """Sorted prefixes of the registered weights sources (e.g. ["timm"])."""
    return sorted(_WEIGHTS_SOURCES)


def _weights_loader(weights):
    if not isinstance(weights, str):
        return None
    return _WEIGHTS_SOURCES.get(weights.partition(":")[0])


def create_model(name, features_only=False, **overrides):
    """Builds the registered variant `name`, with constructor arguments overridden.

    Args:
        name: a name from `list_models()`.
        features_only: bool; True builds the variant without its head
            (`include_top=False`) and returns `keras_vitmix.features.feature_model`
            of it, as timm's `create_model(..., features_only=True)`: a model from the
            images to `{block_name: features}`. With it, and only with it,
            `out_indices` (the blocks, as `feature_model`'s `indices`; None, the
            default, for every block, where timm's default is 3, the last three),
            `output_format` ("NHWC" or "NLC"), `norm` and `prefix_tokens` are
            `feature_model`'s arguments.
        **overrides: constructor arguments replacing the variant's (e.g.
            `input_shape=(64, 64, 3)`, `classes=10`, `include_top=False`).
            `weights` may name a registered weights source
            (`list_weights_sources()`): `weights="timm"` loads timm's pretrained
            checkpoint of the same name, `weights="timm:<timm name>"` another one
            (e.g. "timm:vit_small_patch16_224.augreg_in1k"), fetched through timm and
            huggingface_hub; the model takes the checkpoint's normalization, and a
            `classes` other than the checkpoint's gets a new head (see
            `keras_vitmix.weights`).

    Returns:
        A `keras.Model` of the variant's family, named `name` unless overridden, or
        with `features_only=True` a functional `keras.Model` named `{name}_features`.

    Example:

    >>> model = create_model("vit_cifar_patch4_32", classes=100)
    >>> imagenet = create_model("deit_tiny_patch16_224", weights="timm")  # needs the network
    >>> grids = create_model("convmixer_256_8", features_only=True, out_indices=[-1])
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str from list_models(). Received: name={name!r}")
    entry = model_info(name)  # an unknown name fails before a weights source runs
    feature_options = _feature_options(features_only, overrides)
    if features_only:
        from keras_vitmix import features  # imports no application: no cycle

        model = create_model(name, **overrides, include_top=False, pooling=None)
        return features.feature_model(model, **feature_options)
    loader = _weights_loader(overrides.get("weights"))
    if loader is not None:
        return loader(name, **overrides)
    config = {**entry["config"], "name": name, **overrides}
    return entry["family"](**config)


# create_model's feature arguments -> feature_model's (timm's names: out_indices).
_FEATURE_OPTIONS = {
    "out_indices": "indices",
    "output_format": "output_format",
    "norm": "norm",
    "prefix_tokens": "prefix_tokens",
}


def _feature_options(features_only, overrides):
    """Takes `feature_model`'s arguments out of `overrides`, checking they apply."""
    if not isinstance(features_only, bool):
        raise TypeError(f"`features_only` must be True or False. Received: features_only={features_only!r}")
    given = sorted(set(overrides) & set(_FEATURE_OPTIONS))
    if given and not features_only:
        raise TypeError(f"{', '.join(given)} apply to features_only=True. Received: features_only=False")
    if features_only:
        for head, default in (("include_top", False), ("pooling", None)):
            value = overrides.pop(head, default)
            if value is not default:  # the features end at the blocks
                raise ValueError(
                    f"features_only=True builds no head or pooling: `{head}` must be {default}. "
                    f"Received: {head}={value!r}"
                )
    return {_FEATURE_OPTIONS[key]: overrides.pop(key) for key in given}


def _unknown(name):
    close = difflib.get_close_matches(str(name), _REGISTRY, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown model name. Received: name={name!r}.{hint} "
        f"See keras_vitmix.applications.list_models() for the {len(_REGISTRY)} names."
    )
