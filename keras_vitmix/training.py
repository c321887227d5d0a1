"""The training recipe: AdamW + warmup-cosine, label smoothing, clipping, checkpoints.

The recipe follows DeiT (Touvron et al., 2021, https://arxiv.org/abs/2012.12877) scaled
down: AdamW with decoupled weight decay that spares norms, biases, position embeddings
and class tokens; a linear warmup then cosine decay; label smoothing; gradient clipping.
`train()` wires it to `keras_vitmix.datasets` and writes a run folder that a killed run
resumes from (`keras.callbacks.BackupAndRestore`). The loss and metrics it compiles with
live in `keras_vitmix.losses` and `keras_vitmix.metrics`, which `import keras_vitmix`
registers: the `.keras` files of a run reload, compiled, without this module.
"""

import functools
import json
import os
import shutil
import sys
import time
import warnings

import keras

from keras_vitmix import distribution, pretrained, saving
from keras_vitmix.distribution import distribution_scope  # noqa: F401  (training.distribution_scope, as before)
from keras_vitmix.applications._common import Application
from keras_vitmix.augmentation import policy_name
from keras_vitmix.datasets.info import check_fractions
from keras_vitmix.evaluation import evaluate  # noqa: F401  (training.evaluate, as before)
from keras_vitmix.run_record import closing_line, run_metadata, run_metrics, trained_values
from keras_vitmix.losses import ClassificationLoss
from keras_vitmix.metrics import accuracy_metrics
from keras_vitmix.training_callbacks import EpochTimer, callbacks
from keras_vitmix.training_data import PIPELINES, training_data
from keras_vitmix.training_network import build_network, recipe_family

# DeiT's: hard distillation (the default with a teacher), alpha 0.5; tau 1 (soft only).
DISTILLATION_DEFAULTS = {"distillation": "hard", "distillation_alpha": 0.5, "distillation_tau": 1.0}

# Variables named so are not decayed (LayerNorm/BatchNorm gamma/beta, biases, ...).
NO_WEIGHT_DECAY = ("bias", "gamma", "beta", "position_embeddings", "class_token", "layer_scale")


def warmup_cosine(learning_rate, total_steps, warmup_steps):
    """Linear warmup from 0 to `learning_rate`, then cosine decay to 0."""
    warmup_steps = min(int(warmup_steps), max(int(total_steps) - 1, 0))
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(float(learning_rate), max(1, int(total_steps)))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, int(total_steps) - warmup_steps),
        warmup_target=float(learning_rate),
        warmup_steps=warmup_steps,
    )


def compile_for_training(
    model,
    total_steps,
    learning_rate=1e-3,
    weight_decay=0.05,
    warmup_steps=None,
    label_smoothing=0.1,
    clipnorm=1.0,
    jit_compile="auto",
    ema_momentum=None,
    layer_decay=1.0,
):
    """Compiles `model` with the recipe.

    Args:
        model: a keras_vitmix model (softmax outputs).
        total_steps: int, optimizer steps of the whole run (epochs x steps per epoch).
        learning_rate: float, peak learning rate.
        weight_decay: float, AdamW's decoupled weight decay.
        warmup_steps: int, linear warmup; defaults to 10% of `total_steps`.
        label_smoothing: float in [0, 1).
        clipnorm: float or None, global gradient-norm clipping.
        jit_compile: "auto", True (XLA under tensorflow and jax) or False.
        ema_momentum: None, or a float in (0, 1): the optimizer also keeps an exponential
            moving average of the weights (Polyak averaging, timm's "model EMA"), which
            `fit` writes into the model when it ends. Pair it with
            `keras.callbacks.SwapEMAWeights` to validate and checkpoint the average
            (`callbacks(..., ema=True)` does).
        layer_decay: float in (0, 1]: below 1, layer-wise learning-rate decay over the
            model's blocks (`keras_vitmix.optimizers.LayerDecayAdamW`, BEiT's rule).

    Returns:
        The model, compiled, with metrics "accuracy" (and "top5" for > 5 classes).
    """
    if jit_compile is True and keras.backend.backend() == "torch":
        raise ValueError(
            "XLA compilation is available under the tensorflow and jax backends, not torch. "
            "Received: jit_compile=True with KERAS_BACKEND=torch"
        )
    if ema_momentum is not None and (
        isinstance(ema_momentum, bool) or not isinstance(ema_momentum, (int, float)) or not 0 < ema_momentum < 1
    ):
        raise ValueError(f"`ema_momentum` must be None or in (0, 1). Received: ema_momentum={ema_momentum!r}")
    if warmup_steps is None:
        warmup_steps = max(1, total_steps // 10)
    if clipnorm and _tf_replicas() > 1:
        # Under tf.distribute, Keras clips each replica's gradients before summing them,
        # which scales a clipped update by the replica count: leave clipping out instead.
        warnings.warn(
            f"Gradient clipping is off under a {_tf_replicas()}-replica tf.distribute strategy: "
            f"Keras would clip per replica, before aggregation. Received: clipnorm={clipnorm}"
        )
        clipnorm = None
    adamw = dict(
        learning_rate=warmup_cosine(learning_rate, total_steps, warmup_steps),
        weight_decay=weight_decay,
        global_clipnorm=clipnorm,
        use_ema=ema_momentum is not None,
        ema_momentum=0.99 if ema_momentum is None else float(ema_momentum),
    )
    if layer_decay is not None and layer_decay < 1:
        from keras_vitmix.optimizers import layer_decay_optimizer

        optimizer = layer_decay_optimizer(model, layer_decay, **adamw)
    else:
        optimizer = keras.optimizers.AdamW(**adamw)
    optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    metrics = accuracy_metrics(model.output_shape[-1])
    model.compile(
        optimizer=optimizer,
        loss=ClassificationLoss(label_smoothing=label_smoothing),
        metrics=metrics,
        jit_compile=jit_compile,
    )
    return model


def _tf_replicas():
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def write_json(path, payload):
    """Writes JSON atomically: a temporary file moved into place."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def train(
    model="hybrid_mixer_vit_cifar_patch4_32",
    dataset="digits",
    epochs=None,
    batch_size=None,
    image_size=None,
    learning_rate=None,
    weight_decay=None,
    warmup_epochs=None,
    label_smoothing=None,
    augment=None,
    mixed_precision=False,
    jit_compile="auto",
    distribute=None,
    output_dir="runs/train",
    seed=0,
    verbose="auto",
    model_overrides=None,
    extra_callbacks=(),
    ema_momentum=None,
    pipeline="auto",
    recipe=None,
    drop_path_rate=None,
    test_time_flip=None,
    clipnorm=None,
    validation_fraction=0.1,
    test_fraction=0.1,
    weights=None,
    freeze=None,
    layer_decay=None,
    teacher=None,
    distillation=None,
    distillation_alpha=None,
    distillation_tau=None,
):
    """Trains a model on a dataset with a recipe and writes a run folder.

    Every training argument left at None takes the value of the recipe
    (`keras_vitmix.recipes`, docs/recipes.md): `recipe="small"`, `"cifar"` or `"deit"`,
    chosen by default from the training split's size and image side, and `"finetune"`
    whenever `weights` or `freeze` are given. Arguments given explicitly win over the
    recipe. A run killed part-way resumes at the epoch it reached
    when called again with the same `output_dir`; a run that fails before its first
    epoch leaves no folder it created.

    A run has three splits: `train`, `validation` (picks the checkpoint) and `test`,
    scored once at the end and never used to select. Where no test split can be had
    (tiny classes, `test_fraction=0`, a dict of arrays without "test"), the run says so
    and reports no test score.

    Args:
        model: a registered name, a `keras.Model`, or a `.keras` path. A given model is
            trained as it is: architecture options given with it (`drop_path_rate`,
            `model_overrides`, `mixed_precision`) rebuild it from its config with its
            weights (and say so), or raise a ValueError where it cannot be rebuilt.
        dataset: "digits", a TFDS name, a folder (see `keras_vitmix.datasets.load`), or
            in-memory arrays: `(images, labels)` (seeded test and validation parts of
            each class are held out) or a dict with "train" and optionally "validation"
            and "test" entries of `(images, labels)`. Images are uint8 (N, H, W, 3) of
            the model's input size; labels integers.
        epochs: int >= 1.
        batch_size: int >= 1. The training split's last, partial batch is dropped, a
            different remainder each epoch, so that the step compiles once.
        image_size: int; defaults to the model's input size (a given model's only).
        learning_rate, weight_decay, label_smoothing, clipnorm: the optimizer's (see
            `compile_for_training`); `warmup_epochs` of linear warmup.
        augment: a policy of `keras_vitmix.augmentation.AUGMENTATIONS` ("none",
            "light", "medium", "strong"; False/True mean "none"/"light").
        mixed_precision: bool, train under the "mixed_bfloat16" policy.
        jit_compile: "auto", True (XLA; tensorflow and jax) or False.
        distribute: None or "data_parallel": every step's batch split over all devices
            by `keras.distribution.DataParallel` (JAX; several processes join through
            `keras.distribution.initialize`, see `keras_vitmix.distribution`) or
            `tf.distribute.MirroredStrategy` (TensorFlow), on either pipeline; under
            torch a ValueError. `batch_size` is the global batch.
        output_dir: folder for model.keras (best by validation accuracy, the later
            epoch on a tie), last.keras, history.csv, curves.png, metrics.json and the
            resumable backup/.
        seed: int, seeds initialization, batch order, augmentation and the hold-outs.
        verbose: Keras's fit verbosity; "auto" is a progress bar on a terminal and one
            line per epoch otherwise (a piped log gets no control characters).
        model_overrides: dict of constructor arguments for the model.
        extra_callbacks: more `keras.callbacks.Callback`s.
        ema_momentum: None (the recipe's), False (off), or a float in (0, 1): validate,
            checkpoint and keep an exponential moving average of the weights.
        pipeline: "device" holds the images on the accelerator and samples and augments
            each batch inside the compiled step (`keras_vitmix.device_pipeline`; no
            TensorFlow needed); "tf.data" streams batches from storage; "auto" picks
            "device" when the training images fit the device
            (`device_pipeline.MEMORY_FRACTION` of its memory), else "tf.data";
            metrics.json's `pipeline_reason` says why. Both augment each batch inside
            the compiled step with the same layers.
        recipe: None (chosen from the data), or a name of `keras_vitmix.recipes.RECIPES`.
        drop_path_rate: stochastic depth for registered names whose family takes it
            (the recipe's by default); given explicitly, it rebuilds a given model.
        test_time_flip: whether validation and the final evaluation average each
            image's prediction with its mirror's (only where flips keep labels).
        validation_fraction, test_fraction: floats: the parts of each class held out of
            a folder, a TFDS dataset or arrays that lack those splits (seeded, disjoint);
            `test_fraction=0`: no test split.
        weights: None (the model's own: random for a name), "timm", "timm:<timm name>",
            a timm file (.safetensors, .pth, .pt, .bin) or a .keras / .weights.h5 of
            ours: loaded into the network built for the data (`keras_vitmix.pretrained`):
            a new, zero-initialized head where the data's classes differ, the position
            embedding resampled where the image size does.
        freeze: None, or "backbone": a linear probe, the classifier alone trains
            (normalization statistics frozen too); the checkpoints reload trainable.
        layer_decay: None (the recipe's), or a float in (0, 1]: block i of L trains at
            `layer_decay ** (L - i)` times the learning rate, the stem at
            `layer_decay ** (L + 1)`, the head at 1 (`keras_vitmix.optimizers`).
        teacher: None, a classifier (`keras.Model`), a `.keras` path or a registered
            name (built with `weights="timm"`) of the data's classes: frozen, in
            inference mode, it sees each augmented batch the student sees
            (`keras_vitmix.distillation`).
        distillation: "hard" (the default with a teacher: cross-entropy on the
            teacher's argmax, DeiT's) or "soft" (KL at temperature
            `distillation_tau`, times tau^2); a DeiT student (a distillation token)
            learns it in its `head_dist` and predicts the mean of both heads.
        distillation_alpha: the distillation term's weight in
            `(1 - alpha) * loss(labels) + alpha * distillation`; default 0.5.
        distillation_tau: the soft distillation's temperature; default 1.0.

    Returns:
        The metrics dict written to metrics.json.
    """
    args = dict(locals())
    _check_arguments(args)
    created = not os.path.exists(output_dir)
    try:
        return _train(args)
    except BaseException:
        if created and not os.path.exists(os.path.join(output_dir, "last.keras")):
            shutil.rmtree(output_dir, ignore_errors=True)  # nothing to resume from
        raise


def _check_arguments(args):
    from keras_vitmix import recipes

    epochs = args["epochs"]
    if isinstance(epochs, bool) or (epochs is not None and (not isinstance(epochs, int) or epochs < 1)):
        raise ValueError(f"`epochs` must be an integer >= 1. Received: epochs={epochs!r}")
    distribution.check_distribute(args["distribute"])
    if args["pipeline"] not in PIPELINES:
        raise ValueError(f"`pipeline` must be one of {PIPELINES}. Received: pipeline={args['pipeline']!r}")
    if args["recipe"] is not None and args["recipe"] not in recipes.RECIPES:
        recipes.get_recipe(args["recipe"])  # the ValueError naming it, with close names
    if args["augment"] is not None:
        policy_name(args["augment"])  # an unknown name fails before any data is read
    check_fractions(args["validation_fraction"], args["test_fraction"])  # before any data is read
    pretrained.check_weights(args["weights"])
    pretrained.check_freeze(args["freeze"])
    decay = args["layer_decay"]
    if decay is not None:
        from keras_vitmix.optimizers import check_layer_decay

        check_layer_decay(decay)
    if args["freeze"] and decay not in (None, 1, 1.0):
        raise ValueError(
            "A frozen backbone trains the classifier alone, so a layer decay would not apply. Received: "
            f"freeze={args['freeze']!r}, layer_decay={decay!r}"
        )
    _check_distillation(args)


def _check_distillation(args):
    """The distillation's settings, and a teacher file that exists, before any data is read."""
    from keras_vitmix.distillation import check_distillation

    settings = {k: args[k] for k in ("distillation", "distillation_alpha", "distillation_tau") if args[k] is not None}
    teacher = args["teacher"]
    if teacher is None:
        if settings:
            given = ", ".join(f"{k}={v!r}" for k, v in settings.items())
            raise ValueError(f"Distillation needs a teacher: pass `teacher=`. Received: {given} with teacher=None")
        return
    check_distillation(args["distillation"] or "hard", *(
        DISTILLATION_DEFAULTS[k] if args[k] is None else args[k] for k in ("distillation_alpha", "distillation_tau")
    ))
    if isinstance(teacher, (str, os.PathLike)) and os.fspath(teacher).endswith(".keras"):
        saving.check_model_file(os.fspath(teacher), argument="teacher")


def _train(args):
    """`train` after its arguments are checked: data, run description, fit, score, record."""
    from keras_vitmix import recipes

    if args["distribute"] == "data_parallel":
        distribution.initialize_processes()  # before JAX computes anything
    keras.utils.set_random_seed(args["seed"])
    model = args["model"]
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".keras"):
        model = saving.load_model(model, compile=False)
    data = training_data(
        args["dataset"], args["image_size"], model, args["seed"], args["validation_fraction"], args["pipeline"],
        args["test_fraction"], new_head=args["weights"] is not None,
    )
    info = data.info
    adapting = args["weights"] is not None or args["freeze"] is not None
    chosen = recipes.get_recipe(
        args["recipe"] or ("finetune" if adapting else recipes.choose_recipe(info.num_examples, info.image_shape)),
        recipe_family(model),
    )
    run = {**_resolve_run(chosen, args, info), "recipe": chosen.name}
    os.makedirs(args["output_dir"], exist_ok=True)
    batches = data.training_batches(run["batch_size"], run["augment"], args["seed"])
    steps = len(batches) if data.pipeline == "device" else max(1, info.num_examples // run["batch_size"])
    previous_policy = keras.config.dtype_policy()
    if args["mixed_precision"]:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with distribution_scope(args["distribute"], shard_dataset=data.pipeline == "tf.data"):
            distribution.check_batch(run["batch_size"], args["distribute"])
            devices = distribution.describe(args["distribute"])
            net, run["weights"] = build_network(
                model, data.size, info.num_classes, args["model_overrides"], run["drop_path_rate"],
                explicit=_explicit_architecture(args), distributed=devices["strategy"] is not None,
                weights=args["weights"], class_names=info.class_names,
            )
            frozen = pretrained.freeze_backbone(net) if run["freeze"] else ()
            distribution.check_network(net)
            compile_for_training(
                net, run["epochs"] * steps, run["learning_rate"], run["weight_decay"], run["warmup_epochs"] * steps,
                run["label_smoothing"], clipnorm=run["clipnorm"], jit_compile=args["jit_compile"],
                ema_momentum=run["ema_momentum"], layer_decay=run["layer_decay"],
            )
            run.update(trained_values(net))
            metadata = run_metadata(args, data, run)
            if isinstance(net, Application):  # kept in its config, so in every checkpoint
                net.metadata = metadata
            teacher = _teacher(args["teacher"], info.num_classes, data.size)
            trainer = data.trainer(net, run, args["seed"], args["jit_compile"], teacher=teacher)
        output_dir = args["output_dir"]
        resuming = os.path.isdir(os.path.join(output_dir, "backup"))
        if not resuming and os.path.exists(os.path.join(output_dir, "history.csv")):
            os.remove(os.path.join(output_dir, "history.csv"))  # a fresh run: no stale rows
        run_callbacks = callbacks(
            output_dir, (*data.callbacks(batches), *args["extra_callbacks"]), ema=run["ema_momentum"] is not None,
            frozen=frozen,
        )
        start = time.perf_counter()
        trainer.fit(
            batches, validation_data=data.validation(run["batch_size"], distribution.local_replicas(args["distribute"])),
            epochs=run["epochs"],
            callbacks=run_callbacks, verbose=fit_verbosity(args["verbose"]), shuffle=False,
        )
        wall = time.perf_counter() - start
        best = saving.load_model(os.path.join(output_dir, "model.keras"))
        score = functools.partial(data.score, best, run["batch_size"], run["test_time_flip"], run["label_smoothing"])
        scores = {split: score(split=split) for split in ("validation", "test") if split != "test" or data.has_test}
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if args["distribute"] and keras.backend.backend() == "jax":
            keras.distribution.set_distribution(None)
    times = next(c for c in run_callbacks if isinstance(c, EpochTimer)).times
    seen = min(info.num_examples, steps * run["batch_size"])  # training images per epoch
    metrics = run_metrics(net, data, scores, times, wall, resuming, seen, run)
    metrics.update(pipeline_reason=data.reason, distribution=devices, metadata=metadata)  # where any model's run is read back (evaluation.run_metadata)
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    print(closing_line(metrics, output_dir))
    return metrics


def _resolve_run(chosen, args, info):
    """The recipe's row with what the caller gave explicitly put over it."""
    names = (
        "epochs", "batch_size", "learning_rate", "weight_decay", "warmup_epochs", "label_smoothing", "augment",
        "drop_path_rate", "ema_momentum", "test_time_flip", "clipnorm",
    )
    run = {**chosen.as_dict(), **{k: args[k] for k in names if args[k] is not None}}
    run["ema_momentum"] = run["ema_momentum"] or None  # False: off
    run["augment"] = policy_name(run["augment"])
    run["test_time_flip"] = bool(run["test_time_flip"]) and info.flip_invariant
    run["freeze"] = args["freeze"]
    teacher = args["teacher"]
    run["teacher"] = None if teacher is None else getattr(teacher, "name", None) or os.fspath(teacher)
    for name, default in DISTILLATION_DEFAULTS.items():  # recorded only where a teacher teaches
        run[name] = None if teacher is None else (default if args[name] is None else args[name])
    if args["layer_decay"] is not None:
        run["layer_decay"] = float(args["layer_decay"])
    if run["freeze"]:  # the classifier alone trains: no blocks to decay over, no drop path
        run["layer_decay"] = 1.0
        if args["drop_path_rate"] is None:
            run["drop_path_rate"] = 0.0
    if isinstance(run["batch_size"], bool) or not isinstance(run["batch_size"], int) or run["batch_size"] < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={run['batch_size']!r}")
    return run


def _teacher(teacher, num_classes, size):
    """The run's teacher as a model (`keras_vitmix.distillation.resolve_teacher`), made
    inside the run's distribution scope like the network: a registered name is built
    with timm's weights for the data's classes and image size."""
    if teacher is None:
        return None
    from keras_vitmix.distillation import resolve_teacher

    model = resolve_teacher(teacher, weights="timm", classes=num_classes, input_shape=(*size, 3))
    if isinstance(teacher, str) and not teacher.endswith(".keras") and pretrained.head_is_zero(model):
        raise ValueError(
            f"timm's checkpoint of {teacher!r} does not predict the data's {num_classes} classes, so as a teacher "
            "its new head would teach nothing. Train a teacher on the data (`train`) and pass its .keras file. "
            f"Received: teacher={teacher!r}"
        )
    return model


def _explicit_architecture(args):
    """The architecture options the caller gave explicitly: they rebuild a given model."""
    explicit = dict(args["model_overrides"] or {})
    if args["drop_path_rate"] is not None:
        explicit["drop_path_rate"] = args["drop_path_rate"]
    if args["image_size"] is not None:
        explicit["image_size"] = args["image_size"]
    if args["mixed_precision"]:
        explicit["dtype"] = "mixed_bfloat16"
    return explicit


def fit_verbosity(verbose):
    """Keras's `verbose` for `fit`: "auto" is the progress bar (1) on a terminal and one
    line per epoch (2) otherwise, since a bar's carriage returns and colour codes turn a
    piped log into noise."""
    if verbose != "auto":
        return verbose
    stream = sys.stdout
    return 1 if stream is not None and hasattr(stream, "isatty") and stream.isatty() else 2
