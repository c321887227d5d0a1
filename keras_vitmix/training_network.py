"""The network a run trains: a registered name built for the data, or a given model
rebuilt with the options given with it (or refused), and what the recipe and the data
read from either. `keras_vitmix.training.train` uses it; `training_data` reads a model's
image size from it.
"""

import keras


def model_image_size(model):
    """(height, width) of a model, a registered name or a `.keras`-loaded model."""
    if isinstance(model, keras.Model):
        return tuple(model.input_shape[1:3])
    from keras_vitmix.applications import model_info

    shape = model_info(model)["config"].get("input_shape", (224, 224, 3))
    return tuple(shape[:2])


def recipe_family(model):
    """What `keras_vitmix.recipes.get_recipe` takes for `model`: its class, or a
    registered name's family."""
    if isinstance(model, keras.Model):
        return model
    from keras_vitmix.applications import model_info

    try:
        return model_info(model)["family"]
    except (KeyError, ValueError):
        return "default"


def build_network(model, size, num_classes, overrides, drop_path_rate=0.0, explicit=None, distributed=False,
                  weights=None, class_names=None):
    """The network a run trains: a registered name built for the data's size and classes
    (with the recipe's drop path where its family takes one), or a given model as it
    is. `explicit`: the architecture options the caller gave (model_overrides,
    drop_path_rate, image_size, dtype); a given model is rebuilt with them, weights
    kept, or they are refused: an option is never only recorded. `distributed`: the
    caller builds under a data-parallel distribution, where a given model's variables,
    made before it, are on one device: the network is a copy made under it, weights
    kept (`keras.models.clone_model`). `weights` (`keras_vitmix.pretrained`): the
    network is built for the data and then given them, a given model's architecture
    rebuilt for the data's classes (`class_names`, which decide whether a head is kept)
    and size.

    Returns:
        (network, what was loaded: None, or a dict for metrics.json).
    """
    if weights is None:
        return _network(model, size, num_classes, overrides, drop_path_rate, explicit, distributed), None
    from keras_vitmix import pretrained

    if isinstance(model, keras.Model):
        if pretrained.is_timm_name(weights):
            raise ValueError(
                f"weights={weights!r} names timm's checkpoint of a registered name: pass the name "
                f"(keras_vitmix.applications.list_models()), not a model. Received: model {model.name!r}"
            )
        model = _rebuilt_for(model, size, num_classes, explicit)
    elif pretrained.is_timm_name(weights):
        overrides = {**(overrides or {}), "weights": weights}
    network = _network(model, size, num_classes, overrides, drop_path_rate, explicit, distributed)
    if pretrained.is_timm_name(weights):
        return network, {"weights": weights, "head": "new" if pretrained.head_is_zero(network) else "loaded"}
    return network, pretrained.load(network, weights, class_names)


def _rebuilt_for(model, size, num_classes, explicit):
    """A given model's architecture for other weights: its config with the data's classes
    and size (and the options given), before any weights are loaded into it."""
    from keras_vitmix.applications._common import Application

    if not isinstance(model, Application):
        raise ValueError(
            f"`weights` load into the models of keras_vitmix.applications (a registered name, or one of their "
            f"models). Received: model {model.name!r} of type {type(model).__name__}"
        )
    changes = {k: v for k, v in dict(explicit or {}).items() if k not in ("image_size", "dtype")}
    config = {**model.get_config(), **changes, "classes": num_classes, "input_shape": (*size, 3)}
    return type(model).from_config(config)


def _network(model, size, num_classes, overrides, drop_path_rate, explicit, distributed):
    import inspect

    from keras_vitmix.applications import create_model, model_info

    if isinstance(model, keras.Model):
        if model.output_shape[-1] != num_classes:
            raise ValueError(
                f"The model has {model.output_shape[-1]} classes and the dataset {num_classes}. "
                "Build the model with `classes` equal to the dataset's, or adapt it: train(model, data, "
                "weights=<its .keras file>) gives it a new head for these classes."
            )
        network = rebuilt(model, dict(explicit or {}))
        if distributed and network is model:
            network = keras.models.clone_model(model)
            network.set_weights(model.get_weights())
        return network
    overrides = dict(overrides or {})
    if overrides.get("classes", num_classes) != num_classes:
        raise ValueError(
            f"The model has {overrides['classes']} classes and the dataset {num_classes}. "
            f"Received: classes={overrides['classes']}"
        )
    overrides.update(classes=num_classes, input_shape=(*size, 3))
    family = model_info(model)["family"]
    if drop_path_rate and "drop_path_rate" in inspect.signature(family).parameters:
        overrides.setdefault("drop_path_rate", drop_path_rate)
    return create_model(model, **overrides)


def rebuilt(model, changes):
    """`model` rebuilt from its config with `changes` and its weights, or `model` itself
    when nothing changes. The families of `keras_vitmix.applications` rebuild; any
    other model, an image size other than the model's, or an argument its family does
    not take is a ValueError naming the option."""
    size = changes.pop("image_size", None)
    if size is not None:
        wanted = (size, size) if isinstance(size, int) else tuple(size)
        if wanted != tuple(model.input_shape[1:3]):
            raise ValueError(
                f"A given model trains at its own input size {tuple(model.input_shape[1:3])}. Received: "
                f"image_size={size!r} (build the model for that size, or train a registered name)"
            )
    dtype = changes.pop("dtype", None)
    if dtype is not None and str(model.dtype_policy.name) == dtype:
        dtype = None
    from keras_vitmix.applications._common import Application

    config = model.get_config() if isinstance(model, Application) else None
    changes = {k: v for k, v in changes.items() if config is None or config.get(k) != v}
    if not changes and dtype is None:
        return model
    options = ", ".join(f"{k}={v!r}" for k, v in {**changes, **({"dtype": dtype} if dtype else {})}.items())
    if config is None:
        raise ValueError(
            f"{model.name!r} ({type(model).__name__}) cannot be rebuilt with other options, so they would not "
            f"apply. Received: {options}. Build the model with them, or leave them out."
        )
    unknown = sorted(k for k in changes if k not in config)
    if unknown:
        raise ValueError(f"{type(model).__name__} takes no {unknown}. Received: {options}")
    network = type(model).from_config({**config, **changes})  # under the policy train() set
    network.set_weights(model.get_weights())
    print(f"Rebuilt {model.name!r} with {options}; weights kept.")
    return network
