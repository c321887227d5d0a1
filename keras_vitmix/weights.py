"""timm checkpoints -> keras_vitmix models: ViT, DeiT, MLP-Mixer and ConvMixer.

timm (Wightman, https://github.com/huggingface/pytorch-image-models) publishes the
ImageNet checkpoints of these networks as PyTorch state dicts. Every tensor maps onto a
variable by rule: the fused `qkv` projection and every Linear transpose into Dense
kernels (the output layout, (3, heads, head_dim), is the same), OIHW convolutions become
HWIO (depthwise: (h, w, C, 1)), LayerNorm and BatchNorm affine parameters and running
statistics keep their values, class and distillation tokens are copied, and a position
embedding made for another grid is resampled as timm resamples it. Nothing is assigned
unless every tensor maps and every variable is filled with a tensor of its shape.

`create_model(name, weights="timm")` fetches the checkpoint through timm and
huggingface_hub (this module registers the "timm" weights source with the registry);
`load_timm_weights(model, source)` loads a timm model, a state dict or a `.safetensors`
/ `.pth` / `.bin` file (read by `keras_vitmix.checkpoints`) into a model built here.
"""

import difflib
import importlib.util
import re
import sys
import warnings
from collections.abc import Mapping

import numpy as np

from keras_vitmix import checkpoints
from keras_vitmix.applications import ConvMixer, MLPMixer, ViT
from keras_vitmix.applications._common import NORMALIZATIONS
from keras_vitmix.applications.registry import create_model as _create_model
from keras_vitmix.applications.registry import model_info, register_weights_source
from keras_vitmix.layers import resample_position_embedding

# Per family: (our variable's layer path, as a regex) -> timm's module (or tensor) name
# [, "depthwise" for a grouped convolution, whose kernel layout differs].
_MODULES = {
    ViT: (
        (r"patch_embedding/projection", "patch_embed.proj"),
        (r"patch_embedding/class_token", "cls_token"),
        (r"patch_embedding/distillation_token", "dist_token"),
        (r"patch_embedding/register_tokens", "reg_token"),
        (r"patch_embedding/position_embeddings", "pos_embed"),
        (r"block_(\d+)/attention/(qkv|proj)", r"blocks.\1.attn.\2"),
        (r"block_(\d+)/mlp/(fc1|fc2)", r"blocks.\1.mlp.\2"),
        (r"block_(\d+)/(norm1|norm2)", r"blocks.\1.\2"),
        (r"block_(\d+)/layer_scale(1|2)", r"blocks.\1.ls\2.gamma"),
        (r"(norm|fc_norm|head|head_dist)", r"\1"),
    ),
    MLPMixer: (
        (r"patch_embedding/projection", "stem.proj"),
        (r"block_(\d+)/token_mixing/(fc1|fc2)", r"blocks.\1.mlp_tokens.\2"),
        (r"block_(\d+)/channel_mixing/(fc1|fc2)", r"blocks.\1.mlp_channels.\2"),
        (r"block_(\d+)/(norm1|norm2)", r"blocks.\1.\2"),
        (r"(norm|head)", r"\1"),
    ),
    ConvMixer: (
        (r"patch_embedding/projection", "stem.0"),
        (r"stem_norm", "stem.2"),
        (r"block_(\d+)/depthwise", r"blocks.\1.0.fn.0", "depthwise"),
        (r"block_(\d+)/depthwise_norm", r"blocks.\1.0.fn.2"),
        (r"block_(\d+)/pointwise", r"blocks.\1.1"),
        (r"block_(\d+)/pointwise_norm", r"blocks.\1.3"),
        (r"head", "head"),
    ),
}
# Keras variable name -> PyTorch parameter name (Dense, Conv2D, LayerNorm, BatchNorm).
_LEAVES = {
    "kernel": "weight",
    "depthwise_kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
HEADS = ("head", "head_dist")
# BatchNorm's update counter: PyTorch state, no value of the model.
_IGNORED_SUFFIX = ".num_batches_tracked"
_MAX_LISTED = 40


def load_timm_weights(model, source, load_head=None):
    """Loads a timm checkpoint into a ViT (DeiT), MLPMixer or ConvMixer, tensor for tensor.

    Every tensor of the checkpoint must map onto a variable of `model` and every
    variable must be filled, with matching shapes; otherwise a `ValueError` lists the
    unmapped keys, the unfilled variables and the mismatched shapes, and nothing is
    assigned. A ViT built at another image size gets the position embedding resampled
    (bicubic, the entries of class, distillation and register tokens kept), as timm's
    `img_size=` does; an MLPMixer refuses another size, its token-mixing MLPs being
    sized to the patch count.

    Args:
        model: a `ViT`, `MLPMixer` or `ConvMixer` from `keras_vitmix.applications`.
        source: a timm model (`torch.nn.Module`), a state dict (name -> array or
            tensor), or the path to a `.safetensors`, `.pth`, `.pt` or `.bin` file.
        load_head: None loads the classifier when the model has one (`include_top`)
            and leaves the checkpoint's out when it has not; False never loads it (a
            new head, e.g. for fine-tuning on other classes); True requires it.

    Returns:
        `model`, with its weights assigned.

    Example:

    >>> import timm
    >>> from keras_vitmix.applications import create_model
    >>> model = create_model("vit_tiny_patch16_224", classifier_activation=None)
    >>> load_timm_weights(model, timm.create_model("vit_tiny_patch16_224"))
    """
    family = _family(model)
    state = checkpoints.state_dict(source)
    _check_normalization(model, getattr(source, "pretrained_cfg", None))
    variables = {v.path: v for v in model.weights}
    has_head = any(path.split("/")[0] in HEADS for path in variables)
    if load_head and not has_head:
        raise ValueError(
            f"`load_head=True` but model '{model.name}' has no classification head "
            "(include_top=False). Received: load_head=True"
        )
    if load_head is False or not has_head:
        state = {k: v for k, v in state.items() if k.split(".")[0] not in HEADS}
        variables = {p: v for p, v in variables.items() if p.split("/")[0] not in HEADS}
    if model.get_config().get("use_fc_norm") and not any(p.startswith("fc_norm/") for p in variables):
        # timm's norm of the pooled features is part of its pre-logits: a model that
        # returns tokens (pooling=None) has none to fill.
        state = {k: v for k, v in state.items() if not k.startswith("fc_norm.")}
    if family is MLPMixer:
        _check_mixer_tokens(model, state)
    assignments, unfilled, mismatched = [], [], []
    used = set()
    for path, variable in variables.items():
        key, layout = _timm_key(_MODULES[family], path)
        if key is None or key not in state:
            unfilled.append(f"{path} (from {key})" if key else path)
            continue
        used.add(key)
        value = _convert(path, state[key], layout, model)
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(f"{key} {tuple(state[key].shape)} -> {path} {tuple(variable.shape)}")
            continue
        assignments.append((variable, value))
    unmapped = sorted(k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIX))
    _raise_on_problems(model, unmapped, unfilled, mismatched)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return model


def _family(model):
    for family in _MODULES:
        if isinstance(model, family):
            return family
    raise ValueError(
        "timm checkpoints load into ViT (DeiT), MLPMixer and ConvMixer models. Received: "
        f"model '{getattr(model, 'name', model)}' of type {type(model).__name__}"
    )


def _timm_key(rules, path):
    """Our variable path -> (timm's tensor name, layout), or (None, None)."""
    layer, _, leaf = path.rpartition("/")
    for pattern, replacement, *layout in rules:
        match = re.fullmatch(pattern, path)  # a whole tensor: tokens, positions, LayerScale
        if match:
            return match.expand(replacement), None
        match = re.fullmatch(pattern, layer)  # a layer's kernel, bias, gamma, ...
        if match and leaf in _LEAVES:
            return f"{match.expand(replacement)}.{_LEAVES[leaf]}", (layout or [None])[0]
    return None, None


def _convert(path, value, layout, model):
    """A timm tensor in our layout: transposed Dense kernels, HWIO convolutions."""
    leaf = path.rpartition("/")[2]
    if leaf in ("kernel", "depthwise_kernel") and value.ndim == 4:
        if layout == "depthwise":
            return value.transpose(2, 3, 0, 1)  # (C, 1, h, w) -> (h, w, C, 1)
        return value.transpose(2, 3, 1, 0)  # (out, in, h, w) -> (h, w, in, out)
    if leaf == "kernel" and value.ndim == 2:
        return value.T  # (out, in) -> (in, out)
    if leaf == "position_embeddings" and value.ndim == 3:
        return resampled_positions(value, model.get_layer("patch_embedding"))
    return value


def resampled_positions(value, embedding):
    """A checkpoint's (square) position grid resized to the model's, the prefix tokens'
    entries kept (none where the embedding covers the patches only, no_embed_class)."""
    prefix = embedding.num_prefix_positions
    side = int(round(max(value.shape[1] - prefix, 0) ** 0.5))
    if side * side + prefix != value.shape[1] or (side, side) == tuple(embedding.grid_size):
        return value  # the same grid, or one the shape check will report
    return resample_position_embedding(value, embedding.grid_size, (side, side), prefix)


def _check_mixer_tokens(model, state):
    key = "blocks.0.mlp_tokens.fc1.weight"
    if key not in state:
        return
    tokens = model.get_layer("block_0").num_tokens
    if state[key].shape[1] != tokens:
        raise ValueError(
            f"An MLP-Mixer checkpoint loads only at the image size it was trained at: its "
            f"token-mixing MLPs are sized to the patch count. Received: a checkpoint for "
            f"{state[key].shape[1]} patches, model '{model.name}' with {tokens} patches "
            f"(input_shape={tuple(model.input_shape[1:])}). Build the model at the "
            "checkpoint's size (224 px for timm's Mixers)."
        )


def _check_normalization(model, pretrained_cfg):
    """A timm model says which mean and std its weights expect; refuse any other."""
    config = model.get_config()
    if not config.get("include_preprocessing") or not pretrained_cfg:
        return
    cfg = pretrained_cfg if isinstance(pretrained_cfg, Mapping) else vars(pretrained_cfg)
    if "mean" not in cfg or "std" not in cfg:
        return
    expected = normalization_of(cfg["mean"], cfg["std"])
    if expected != config.get("normalization"):
        raise ValueError(
            f"The checkpoint expects inputs normalized with mean={tuple(cfg['mean'])}, "
            f"std={tuple(cfg['std'])}"
            + (f" (normalization={expected!r})" if expected else "")
            + f"; model '{model.name}' normalizes with normalization="
            f"{config.get('normalization')!r}. Build it with the checkpoint's normalization, "
            "or with include_preprocessing=False and normalize the inputs yourself."
        )


def normalization_of(mean, std):
    """The name in `NORMALIZATIONS` of a (mean, std) pair, or None."""
    for name, (our_mean, our_std) in NORMALIZATIONS.items():
        if np.allclose(mean, our_mean, atol=1e-4) and np.allclose(std, our_std, atol=1e-4):
            return name
    return None


def _raise_on_problems(model, unmapped, unfilled, mismatched):
    problems = [
        ("checkpoint tensors with no variable in the model", unmapped),
        ("model variables the checkpoint does not fill", unfilled),
        ("shape mismatches (checkpoint -> model)", mismatched),
    ]
    lines = []
    for title, keys in problems:
        if keys:
            shown = ", ".join(keys[:_MAX_LISTED])
            more = f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
            lines.append(f"{len(keys)} {title}: {shown}{more}")
    keys = [key for _, listed in problems for key in listed]
    if any(re.split(r"[/.]", key)[0] in HEADS for key in keys):
        lines.append("load_head=False leaves the model's own head (a new one for other classes).")
    if lines:
        raise ValueError(
            f"The timm checkpoint does not match model '{model.name}'; nothing was loaded.\n"
            + "\n".join(lines)
        )


def create_from_timm(name, weights, **overrides):
    """`create_model(name, weights="timm" | "timm:<timm name>", **overrides)`.

    Fetches the checkpoint through timm (and huggingface_hub) before building the
    model. The model takes the checkpoint's normalization and, unless `classes` is
    given, its classes; a `classes` other than the checkpoint's gets a new head, as
    timm's `num_classes=` does.
    """
    timm_name = name if weights == "timm" else weights[len("timm:") :]
    family = model_info(name)["family"]
    if family not in _MODULES:
        raise ValueError(
            f"timm checkpoints load into ViT (DeiT), MLPMixer and ConvMixer models; {name!r} "
            f"is a {family.__name__}. Received: weights={weights!r}"
        )
    cfg = _pretrained_cfg(timm_name, weights)
    normalization = normalization_of(cfg.mean, cfg.std)
    if normalization is not None:
        overrides.setdefault("normalization", normalization)
    elif overrides.get("include_preprocessing", True):
        raise ValueError(
            f"timm's {timm_name!r} expects inputs normalized with mean={cfg.mean}, std={cfg.std}, "
            f"none of {tuple(NORMALIZATIONS)}: pass include_preprocessing=False and "
            "normalize the inputs yourself."
        )
    # A backbone variant (DINOv2: no classifier) registers include_top=False.
    include_top = overrides.get("include_top", model_info(name)["config"].get("include_top", True))
    if include_top and not cfg.num_classes and "classes" not in overrides:
        raise ValueError(
            f"timm's {timm_name!r} has no classifier: pass include_top=False, or "
            "`classes` for a new head."
        )
    overrides.setdefault("classes", cfg.num_classes or 1000)
    load_head = include_top and overrides["classes"] == cfg.num_classes
    source = _fetch(cfg)
    model = _create_model(name, **overrides)
    load_timm_weights(model, source, load_head=load_head)
    if include_top and not load_head:
        zero_head(model)
    return model


def zero_head(model):
    """Sets the classifier(s) of `model` to zero. A new head starts there (as big_vision's
    and BiT's fine-tuning do, and ANCHORS.md records for timm): every class starts at
    the same probability, so the first steps move the head, not a random projection
    the backbone has to undo."""
    for layer in model.layers:
        if layer.name in HEADS:
            for variable in layer.weights:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))


def import_timm():
    """Imports timm, where TensorFlow was loaded first too."""
    if "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton"):
        # TensorFlow 2.20+ wheels put their LLVM in the global symbol table, and triton
        # (which timm imports through torchvision and torch._dynamo) then crashes the
        # interpreter (tensorflow/tensorflow#124205). Triton only compiles GPU kernels
        # for torch.compile; marked absent, torch runs without it.
        warnings.warn(
            "TensorFlow is loaded, so triton cannot be (tensorflow/tensorflow#124205): "
            "torch runs without it in this process.",
            stacklevel=3,
        )
        sys.modules["triton"] = None
    try:
        import timm
    except ImportError as error:
        raise ImportError("timm checkpoints need timm: pip install 'keras-vitmix[weights]'") from error
    return timm


def _pretrained_cfg(timm_name, weights):
    timm = import_timm()
    arch = timm_name.partition(".")[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"timm has no model named {arch!r}. Received: weights={weights!r}; pass "
            f"weights='timm:<a name from timm.list_pretrained()>'.{hint}"
        )
    try:
        cfg = timm.models.get_pretrained_cfg(timm_name)
    except RuntimeError:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        published = timm.list_pretrained(f"{arch}.*")
        raise ValueError(
            f"timm publishes no checkpoint named {timm_name!r}. Received: weights={weights!r}. "
            f"Checkpoints of {arch}: {', '.join(published) or 'none'}"
        )
    return cfg


def _fetch(cfg):
    timm = import_timm()
    checkpoint = f"{cfg.architecture}.{cfg.tag}"
    try:
        return timm.create_model(checkpoint, pretrained=True)
    except Exception as error:  # huggingface_hub / urllib / torch.hub: no network, no cache
        where = f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else (cfg.url or cfg.file)
        raise OSError(
            f"Could not fetch timm's checkpoint {checkpoint!r} ({where}): "
            f"{type(error).__name__}: {error}. weights='timm' downloads it through timm and "
            "huggingface_hub, which needs the network or a copy in the Hugging Face cache. "
            "Offline, build the model with weights=None and call "
            "keras_vitmix.weights.load_timm_weights(model, path_to_checkpoint)."
        ) from error


register_weights_source("timm", create_from_timm)
