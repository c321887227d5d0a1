"""Layer-wise learning-rate decay: the layer ids of every family, one step equal to a
plain AdamW's at each layer's scaled rate (weight decay included), the same in `fit`, on
two replicas, parity with timm's `param_groups_layer_decay`, serialization, bad input."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vitmix import optimizers
from keras_vitmix.optimizers import LayerDecayAdamW, layer_decay_optimizer, layer_ids
from tests.small_models import small

STEM = ("images", "rescaling", "normalization", "patch_embedding")
EXPECTED_IDS = {
    "ViT": {**dict.fromkeys(STEM + ("embedding_dropout",), 0), "block_0": 1, "block_1": 2,
            **dict.fromkeys(("norm", "token_pool", "head", "predictions"), 3)},
    "MLPMixer": {**dict.fromkeys(STEM, 0), "block_0": 1, "block_1": 2,
                 **dict.fromkeys(("norm", "avg_pool", "head", "predictions"), 3)},
    "ConvMixer": {**dict.fromkeys(STEM + ("stem_activation", "stem_norm"), 0), "block_0": 1, "block_1": 2,
                  **dict.fromkeys(("avg_pool", "head", "predictions"), 3)},
    "HybridMixerViT": {**dict.fromkeys(STEM, 0), "block_0": 1, "block_1": 2,
                       **dict.fromkeys(("norm", "avg_pool", "head", "predictions"), 3)},
    # to_tokens (a ConvMixer grid to Mixer tokens) sits between the two kinds of block.
    "HybridConvMixerMixer": {**dict.fromkeys(STEM + ("stem_activation", "stem_norm"), 0), "block_0": 1,
                             "to_tokens": 1, "block_1": 2,
                             **dict.fromkeys(("norm", "avg_pool", "head", "predictions"), 3)},
}
EXCLUDED = ["bias", "gamma", "beta", "position_embeddings", "class_token"]  # as training.py's NO_WEIGHT_DECAY


def first_layer(variable):
    return variable.path.split("/")[0]


@pytest.mark.parametrize("family", sorted(EXPECTED_IDS))
def test_the_layer_ids_of_each_family(family):
    model = small(family)
    ids = layer_ids(model)
    assert ids == EXPECTED_IDS[family]
    assert list(ids) == [layer.name for layer in model.layers]
    # Every trainable variable's path starts with a layer of the map: stem 0, blocks, head L + 1.
    used = {ids[first_layer(v)] for v in model.trainable_variables}
    assert used == {0, 1, 2, 3}


def test_the_distillation_and_register_tokens_are_layer_0():
    model = small("ViT", use_distillation_token=True, num_register_tokens=2)
    ids = layer_ids(model)
    paths = {v.path: ids[first_layer(v)] for v in model.trainable_variables}
    for token in ("class_token", "distillation_token", "register_tokens", "position_embeddings"):
        assert paths[f"patch_embedding/{token}"] == 0
    assert paths["head/kernel"] == paths["head_dist/kernel"] == 3


def reference_step(variables, grads, scales, lr, weight_decay, steps):
    """Each scale's variables through a plain AdamW at `lr * scale`, `steps` times."""
    by_scale = {}
    for variable, grad, scale in zip(variables, grads, scales):
        by_scale.setdefault(scale, []).append((variable, grad))
    for scale, pairs in by_scale.items():
        plain = keras.optimizers.AdamW(learning_rate=lr * scale, weight_decay=weight_decay or 0.0)
        plain.exclude_from_weight_decay(var_names=EXCLUDED)
        for _ in range(steps):
            plain.apply([g for _, g in pairs], [v for v, _ in pairs])


@pytest.mark.parametrize("weight_decay", [None, 0.3])
def test_a_step_is_adamw_at_each_layers_scaled_rate(weight_decay):
    model = small("ViT")
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32")) for v in variables]
    initial = [v.numpy() for v in variables]
    lr, decay, steps = 1e-2, 0.5, 2
    optimizer = layer_decay_optimizer(model, decay, learning_rate=lr, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=EXCLUDED)
    for _ in range(steps):
        optimizer.apply(grads, variables)
    ours = [v.numpy() for v in variables]

    ids = layer_ids(model)
    scales = [decay ** (3 - ids[first_layer(v)]) for v in variables]
    assert sorted(set(scales)) == [0.125, 0.25, 0.5, 1.0]
    for variable, value in zip(variables, initial):
        variable.assign(value)
    reference_step(variables, grads, scales, lr, weight_decay, steps)
    for variable, mine in zip(variables, ours):
        np.testing.assert_allclose(mine, variable.numpy(), rtol=1e-5, atol=1e-8, err_msg=variable.path)

    if weight_decay:  # the decay did act, on the variables not excluded only
        for variable, value in zip(variables, initial):
            variable.assign(value)
        reference_step(variables, grads, scales, lr, None, steps)
        moved = {v.path: not np.allclose(mine, v.numpy(), rtol=1e-5, atol=1e-8) for v, mine in zip(variables, ours)}
        assert moved["block_0/mlp/fc1/kernel"] and moved["head/kernel"] and moved["patch_embedding/projection/kernel"]
        assert not moved["block_0/mlp/fc1/bias"] and not moved["patch_embedding/class_token"]


def test_fit_moves_each_layer_by_its_scaled_rate():
    # Adam's first step moves each weight by about lr * sign(gradient): in `fit`
    # (TensorFlow's distributed update, JAX's stateless one, torch's) the largest move
    # of each variable is its layer's rate.
    model = small("ViT", classifier_activation=None)
    lr, decay = 1e-3, 0.5
    optimizer = layer_decay_optimizer(model, decay, learning_rate=lr, weight_decay=None, global_clipnorm=1.0)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {v.path: v.numpy() for v in model.trainable_variables}
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32"), np.arange(8) % 10, batch_size=8, verbose=0)
    ids = layer_ids(model)
    for v in model.trainable_variables:
        move = float(np.max(np.abs(v.numpy() - before[v.path])))
        np.testing.assert_allclose(move, lr * decay ** (3 - ids[first_layer(v)]), rtol=2e-2, err_msg=v.path)


def test_the_scales_are_timms_on_vit_tiny():
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    from keras_vitmix.applications import create_model
    from keras_vitmix.weights import import_timm

    timm = import_timm()
    from timm.optim import param_groups_layer_decay

    decay = 0.75
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    names = {id(param): name for name, param in reference.named_parameters()}
    groups = param_groups_layer_decay(reference, layer_decay=decay)
    timm_scales = {round(group["lr_scale"], 12) for group in groups}
    assert len(timm_scales) == 14 and min(timm_scales) == round(decay**13, 12)

    model = create_model("vit_tiny_patch16_224")
    optimizer = layer_decay_optimizer(model, decay)
    ours = {round(optimizer.variable_scale(v), 12) for v in model.trainable_variables}
    assert ours == timm_scales
    # Per parameter: timm's name -> our layer, the same scale.
    timm_by_layer = {}
    for group in groups:
        for name in (names[id(param)] for param in group["params"]):
            head, _, rest = name.partition(".")
            ours_name = {"cls_token": "patch_embedding", "pos_embed": "patch_embedding",
                         "patch_embed": "patch_embedding"}.get(head, head)
            if head == "blocks":
                ours_name = f"block_{rest.split('.')[0]}"
            timm_by_layer.setdefault(ours_name, set()).add(round(group["lr_scale"], 12))
    # The one difference: timm's ViT groups its final norm with the last block (its
    # group_matcher's MATCH_PREV_GROUP), one step below the head; BEiT's and MAE's rule,
    # ours, puts it with the head at L + 1.
    assert timm_by_layer.pop("norm") == {round(decay * optimizer.layer_scale("norm"), 12)}
    assert set(timm_by_layer) == {"patch_embedding", "head", *(f"block_{k}" for k in range(12))}
    for name, scales in timm_by_layer.items():
        assert scales == {round(optimizer.layer_scale(name), 12)}, name


def test_the_config_round_trips():
    model = small("MLPMixer")
    schedule = keras.optimizers.schedules.CosineDecay(0.0, 100, warmup_target=1e-3, warmup_steps=10)
    optimizer = layer_decay_optimizer(
        model, 0.65, learning_rate=schedule, weight_decay=0.05, global_clipnorm=1.0, use_ema=True, ema_momentum=0.999
    )
    config = optimizer.get_config()
    json.dumps(config, default=str)  # plain values only, but the schedule's dict
    assert (config["layer_decay"], config["num_layers"], config["weight_decay"]) == (0.65, 2, 0.05)
    assert config["layer_ids"] == layer_ids(model) and type(config["layer_ids"]) is dict
    back = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(optimizer))))
    assert type(back) is LayerDecayAdamW and back.get_config() == config  # the schedule's config too
    assert back.weight_decay is None  # Keras's own, unscaled decay stays off
    assert (back.use_ema, back.ema_momentum, back.global_clipnorm) == (True, 0.999, 1.0)


def test_a_compiled_model_saves_and_reloads_with_the_optimizer(tmp_path):
    model = small("ConvMixer")
    optimizer = layer_decay_optimizer(model, 0.7, learning_rate=1e-3, use_ema=True)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 16, 16, 3), "float32"), np.arange(4), batch_size=4, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is LayerDecayAdamW
    assert (loaded.optimizer.layer_decay, loaded.optimizer.num_layers) == (0.7, 2)
    assert loaded.optimizer.get_config()["layer_ids"] == layer_ids(model)
    for saved, back in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(back))
    loaded.fit(np.zeros((4, 16, 16, 3), "float32"), np.arange(4), batch_size=4, verbose=0)  # trains on


@pytest.mark.parametrize("value", [0, 0.0, -0.5, 1.5, True, "0.7", None, float("nan")])
def test_a_layer_decay_outside_0_1_is_named(value):
    with pytest.raises(ValueError, match=rf"layer_decay={value!r}".replace("(", r"\(").replace(".", r"\.")):
        LayerDecayAdamW({"head": 1}, layer_decay=value)


def test_a_variable_of_no_named_layer_is_refused():
    model = small("ViT")
    optimizer = LayerDecayAdamW({"block_0": 1, "block_1": 2, "head": 3}, layer_decay=0.75)
    with pytest.raises(ValueError, match=r"'patch_embedding/class_token'"):
        optimizer.build(model.trainable_variables)


def test_bad_maps_and_models_are_named():
    with pytest.raises(ValueError, match=r"num_layers=1, largest id 3"):
        LayerDecayAdamW({"stem": 0, "head": 3}, num_layers=1)
    with pytest.raises(ValueError, match=r"'head': -1"):
        LayerDecayAdamW({"head": -1})
    with pytest.raises(TypeError, match=r"layer_ids=\[\]"):
        LayerDecayAdamW([])
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    with pytest.raises(ValueError, match=r"has none.*'dense'"):
        layer_ids(plain)


def test_a_map_of_several_blocks_reads_the_depth_from_the_head():
    optimizer = LayerDecayAdamW({"stem": 0, "block_0": 1, "block_1": 2, "head": 3}, layer_decay=0.5)
    assert optimizer.num_layers == 2
    assert [optimizer.layer_scale(n) for n in ("stem", "block_0", "block_1", "head")] == [0.125, 0.25, 0.5, 1.0]


TWO_REPLICAS = r"""
import json, os
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_vitmix import applications, distribution, optimizers

rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
y = (np.arange(8) % 10).astype("int32")

def build():
    model = applications.MLPMixer(patch_size=4, hidden_dim=32, num_layers=2, input_shape=(16, 16, 3), classes=10)
    optimizer = optimizers.layer_decay_optimizer(model, 0.5, learning_rate=1e-2, weight_decay=0.05)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=False)
    return model

single = build()
weights = single.get_weights()
single.train_on_batch(x, y)
with distribution.distribution_scope("data_parallel"):
    parallel = build()
parallel.set_weights(weights)
parallel.train_on_batch(x, y)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), parallel.get_weights()))
moved = {v.path: float(np.max(np.abs(v.numpy() - w))) for v, w in zip(parallel.weights, weights)}
replicas = parallel.distribute_strategy.num_replicas_in_sync
print("REPORT" + json.dumps(dict(diff=diff, replicas=replicas, stem=moved["patch_embedding/projection/kernel"],
                                 head=moved["head/kernel"])))
"""


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="only tf.distribute hands update_step each replica's copy of a variable; JAX's data parallel "
    "updates the keras.Variable itself, as on one device, and torch has none",
)
def test_one_step_on_two_replicas_matches_one_device():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", TWO_REPLICAS], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("REPORT"))[6:])
    assert report["replicas"] == 2 and report["diff"] < 1e-4, report  # test_distribution's bound for AdamW
    # Adam's first step moves a weight by about its rate: 0.5 ** 3 of the head's for the stem (L = 2).
    assert 0.1 < report["stem"] / report["head"] < 0.15, report


def test_the_module_is_registered_by_the_package():
    import keras_vitmix

    assert keras_vitmix.optimizers is optimizers
    assert keras.saving.get_registered_object("keras_vitmix>LayerDecayAdamW") is LayerDecayAdamW
