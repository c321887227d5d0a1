"""Named training recipes: the hyperparameters a dataset's size calls for, per family.

A recipe is a name ("small", "cifar", "deit", "finetune") and a table of training
arguments with one row per model family. Small datasets, CIFAR-size images and
ImageNet-size images want different schedules and regularization: a ViT on 1,797 digits
overfits under DeiT's 300 epochs of MixUp, and ConvMixer on CIFAR trains best with the
large learning rate and batch of its own reference repository, not with a ViT's.
`choose_recipe` picks the name from the dataset's size ("finetune" is never chosen by
size: it is the recipe for adapting pretrained weights, which `keras_vitmix.training`
picks when it is given them), `get_recipe` returns the row for a family, and arguments a
user passes explicitly win over the recipe's. docs/recipes.md shows `describe()`'s
tables, and a test keeps the two equal.

The optimizer of every recipe is AdamW (decoupled weight decay) with a linear warmup to
the peak learning rate, then cosine decay to 0 (`keras_vitmix.training`); "finetune"
adds BEiT's layer-wise learning-rate decay (`Recipe.layer_decay`,
`keras_vitmix.optimizers.LayerDecayAdamW`), which every other recipe leaves off (1.0).

Augmentation strengths (`Recipe.augment`, one of `AUGMENTATIONS`):

- "none": the images as they are.
- "light": a random crop of the image zero-padded by side/8 on each edge (per image),
  then a horizontal flip where flips keep labels (not for digits or text).
- "medium": "light", then RandAugment with 2 ops (`keras.layers.RandAugment`), then
  random erasing with probability 0.25 (`keras.layers.RandomErasing`).
- "strong": "medium", then MixUp or CutMix, one of the two per batch.

This module imports only the standard library, so the CLI and docs tools read recipes
without starting a backend.

References:
- ConvMixer on CIFAR-10: https://github.com/locuslab/convmixer-cifar10
- ViT on CIFAR: https://github.com/omihub777/ViT-CIFAR
- MLP-Mixer on CIFAR: https://github.com/omihub777/MLP-Mixer-CIFAR
- Compact Transformers: https://github.com/SHI-Labs/Compact-Transformers
- airbench94: https://github.com/KellerJordan/cifar10-airbench
- DeiT: Touvron et al., 2021, "Training data-efficient image transformers & distillation
  through attention", https://arxiv.org/abs/2012.12877
- BEiT: Bao et al., 2021, "BEiT: BERT Pre-Training of Image Transformers",
  https://arxiv.org/abs/2106.08254 (layer-wise learning-rate decay)
- MAE: He et al., 2021, "Masked Autoencoders Are Scalable Vision Learners",
  https://arxiv.org/abs/2111.06377, fine-tuning recipe in facebookresearch/mae FINETUNE.md
"""

import dataclasses
import difflib
import numbers

RECIPES = ("small", "cifar", "deit", "finetune")
FAMILIES = ("ViT", "MLPMixer", "ConvMixer", "HybridMixerViT", "HybridConvMixerMixer")
AUGMENTATIONS = ("none", "light", "medium", "strong")
DEFAULT_FAMILY = "default"

# choose_recipe's thresholds: below SMALL_DATASET images "small"; up to CIFAR_SIDE px "cifar".
SMALL_DATASET = 10_000
# 96, not 64: the side is that of the images as trained, and the course trains CIFAR-10
# upscaled to 72 px (tutorial 3); STL-10's 96 px images are small data too.
CIFAR_SIDE = 96


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One recipe's training arguments for one model family.

    Args:
        name: the recipe, one of `RECIPES`.
        family: the model family the row is for, one of `FAMILIES` or "default".
        epochs: int >= 1.
        batch_size: int >= 1.
        learning_rate: float > 0, AdamW's peak rate (linear warmup, then cosine to 0).
        weight_decay: float >= 0, AdamW's decoupled weight decay.
        warmup_epochs: int in [0, epochs).
        label_smoothing: float in [0, 1).
        augment: one of `AUGMENTATIONS` (see the module docstring).
        drop_path_rate: float in [0, 1), for families that take `drop_path_rate`
            (ConvMixer has none, so its rows say 0.0).
        ema_momentum: None, or a float in (0, 1): evaluate an exponential moving
            average of the weights.
        test_time_flip: bool, the final evaluation averages each image's prediction
            with its mirror's (only on datasets whose labels survive a flip).
        clipnorm: None, or a float > 0: the global gradient norm is clipped to it.
        layer_decay: float in (0, 1]: each layer's learning rate is the peak times
            `layer_decay ** (L + 1 - layer id)` (BEiT's rule, `keras_vitmix.optimizers`);
            1.0 is off, as in every recipe but "finetune".

    Example:
    >>> get_recipe("cifar", "ConvMixer").batch_size
    512
    """

    name: str
    family: str
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_epochs: int
    label_smoothing: float
    augment: str
    drop_path_rate: float
    ema_momentum: float | None
    test_time_flip: bool
    clipnorm: float | None
    layer_decay: float

    def __post_init__(self):
        # A hand-built or `dataclasses.replace`d recipe fails here, not epochs into a run.
        checks = {
            "epochs": _is_int(self.epochs) and self.epochs >= 1,
            "batch_size": _is_int(self.batch_size) and self.batch_size >= 1,
            "learning_rate": _is_real(self.learning_rate) and self.learning_rate > 0,
            "weight_decay": _is_real(self.weight_decay) and self.weight_decay >= 0,
            "warmup_epochs": _is_int(self.warmup_epochs) and 0 <= self.warmup_epochs < self.epochs,
            "label_smoothing": _is_real(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            "augment": self.augment in AUGMENTATIONS,
            "drop_path_rate": _is_real(self.drop_path_rate) and 0 <= self.drop_path_rate < 1,
            "ema_momentum": self.ema_momentum is None
            or (_is_real(self.ema_momentum) and 0 < self.ema_momentum < 1),
            "test_time_flip": isinstance(self.test_time_flip, bool),
            "clipnorm": self.clipnorm is None or (_is_real(self.clipnorm) and self.clipnorm > 0),
            "layer_decay": _is_real(self.layer_decay) and 0 < self.layer_decay <= 1,
        }
        bad = [field for field, ok in checks.items() if not ok]
        if bad:
            received = ", ".join(f"{field}={getattr(self, field)!r}" for field in bad)
            raise ValueError(
                f"Recipe {self.name!r} for {self.family!r} has values out of range (see the Recipe "
                f"docstring; augment must be one of {AUGMENTATIONS}). Received: {received}"
            )

    def as_dict(self):
        """The training arguments (every field but `name` and `family`), as keyword
        arguments for `keras_vitmix.training.train`."""
        values = dataclasses.asdict(self)
        del values["name"], values["family"]
        return values


# The values, each written once: a recipe's base row, then what a family changes.
# The lead engineer tunes "small" on digits; change its numbers here.
_BASE = {
    # Digits-size data (the default of `keras_vitmix.training.train()` on digits): a short
    # DeiT-style run; provisional, to be tuned on digits.
    "small": dict(
        epochs=15, batch_size=64, learning_rate=2e-3, weight_decay=0.05, warmup_epochs=1,
        label_smoothing=0.1, augment="light", drop_path_rate=0.0, ema_momentum=None,
        test_time_flip=True, clipnorm=1.0, layer_decay=1.0,
    ),
    # omihub777/ViT-CIFAR: 200 epochs, batch 128, lr 1e-3, warmup 5, label smoothing 0.1;
    # its AutoAugment becomes RandAugment, plus DeiT's MixUp/CutMix ("strong"), drop path
    # and AdamW weight decay 0.05.
    "cifar": dict(
        epochs=200, batch_size=128, learning_rate=1e-3, weight_decay=0.05, warmup_epochs=5,
        label_smoothing=0.1, augment="strong", drop_path_rate=0.1, ema_momentum=None,
        test_time_flip=True, clipnorm=1.0, layer_decay=1.0,
    ),
    # DeiT (arXiv 2012.12877) at batch 256 instead of 1024, its lr rule 5e-4 * batch/512;
    # EMA off as in DeiT's repository (its 0.99996 is opt-in); no clipping, no test-time flip.
    "deit": dict(
        epochs=300, batch_size=256, learning_rate=5e-4 * 256 / 512, weight_decay=0.05, warmup_epochs=5,
        label_smoothing=0.1, augment="strong", drop_path_rate=0.1, ema_momentum=None,
        test_time_flip=False, clipnorm=None, layer_decay=1.0,
    ),
    # Adapting pretrained weights (training.py chooses it when weights are given), scaled
    # to CPU-size runs on small data. The anchors fine-tune ImageNet ViT-B with AdamW,
    # weight decay 0.05, label smoothing 0.1, drop path 0.1 and layer decay: MAE
    # (FINETUNE.md) lr 5e-4 x batch / 256, layer decay 0.65 (0.75 for ViT-L/H), 100
    # epochs, warmup 5; BEiT lr 4e-3 at batch 1024, layer decay 0.65; DeiT at 384 px lr
    # 5e-6 x batch / 512, 30 epochs. Here MAE's rate rule at batch 64, 0.75 (the gentler
    # decay, for the shorter schedule and the new head), 10 epochs with 1 of warmup, the
    # "light" augmentation of small data in place of MixUp/CutMix and RandAugment, and
    # the clipping and test-time flip of "small".
    "finetune": dict(
        epochs=10, batch_size=64, learning_rate=5e-4 * 64 / 256, weight_decay=0.05, warmup_epochs=1,
        label_smoothing=0.1, augment="light", drop_path_rate=0.1, ema_momentum=None,
        test_time_flip=True, clipnorm=1.0, layer_decay=0.75,
    ),
}

# locuslab/convmixer-cifar10: AdamW lr 0.01, wd 0.01, batch 512, RandAugment n=2 m=12,
# random erasing 0.25 ("medium"), no label smoothing, 100-200 epochs (100 here).
_CONVMIXER_CIFAR = dict(
    epochs=100, batch_size=512, learning_rate=1e-2, weight_decay=0.01, label_smoothing=0.0,
    augment="medium", drop_path_rate=0.0,
)

# ConvMixer (BatchNorm and convolutions) trains at a higher rate per image than a ViT: in
# "cifar", locuslab's 1e-2 at batch 512 against omihub777's ViT at 1e-3 at batch 128,
# 2.5 times per image. Its fine-tuning rate is the ViT row's times that ratio.
_CONVMIXER_FINETUNE = dict(learning_rate=5e-4 * 64 / 256 * 2.5, drop_path_rate=0.0)

# Each family's changes to the base row; a family not named reads the base row as is.
_FAMILY_OVERRIDES = {
    "small": {},  # one row for every family until digits says otherwise
    "cifar": {
        "ViT": {},  # the base row (omihub777/ViT-CIFAR)
        # omihub777/MLP-Mixer-CIFAR trains 300 epochs with CutMix and AutoAugment; ViT's
        # 200 epochs and "strong" here.
        "MLPMixer": {},
        "ConvMixer": _CONVMIXER_CIFAR,
        "HybridMixerViT": {},  # attention blocks: ViT's row
        # ConvMixer's recipe for its convolutional stem, drop path for its Mixer blocks.
        "HybridConvMixerMixer": {**_CONVMIXER_CIFAR, "drop_path_rate": 0.1},
    },
    "deit": {
        "ConvMixer": {"drop_path_rate": 0.0},  # DeiT's values; ConvMixer takes no drop_path_rate
    },
    "finetune": {
        "ConvMixer": _CONVMIXER_FINETUNE,
        # ConvMixer's rate for its convolutional stem, as in "cifar"; drop path for its Mixer blocks.
        "HybridConvMixerMixer": {**_CONVMIXER_FINETUNE, "drop_path_rate": 0.1},
    },
}

# Recipe fields -> describe()'s column headers, in the tables' order.
COLUMNS = {
    "epochs": "epochs",
    "batch_size": "batch size",
    "learning_rate": "learning rate",
    "weight_decay": "weight decay",
    "warmup_epochs": "warmup epochs",
    "label_smoothing": "label smoothing",
    "augment": "augment",
    "drop_path_rate": "drop path",
    "ema_momentum": "EMA",
    "test_time_flip": "test-time flip",
    "clipnorm": "clip norm",
    "layer_decay": "layer decay",
}

_ABOUT = {
    "small": f"Fewer than {SMALL_DATASET:,} training images (digits-size data).",
    "cifar": f"{SMALL_DATASET:,} or more training images, at most {CIFAR_SIDE} px a side (CIFAR-size data).",
    "deit": f"{SMALL_DATASET:,} or more training images, larger than {CIFAR_SIDE} px a side (DeiT, scaled to one GPU).",
    "finetune": "Pretrained weights adapted to new data, whatever its size (never chosen by size).",
}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _family_name(family):
    """The row `family` reads: a name in `FAMILIES`, else "default".

    A class or instance reads the row of the nearest family it derives from, so a
    user's subclass of `ViT` trains like a ViT and their own `keras.Model` like "default".
    """
    if isinstance(family, str):
        by_lower = {name.lower(): name for name in FAMILIES}
        return by_lower.get(family.lower(), DEFAULT_FAMILY)
    cls = family if isinstance(family, type) else type(family)
    return next((c.__name__ for c in cls.__mro__ if c.__name__ in FAMILIES), DEFAULT_FAMILY)


def get_recipe(name, family=DEFAULT_FAMILY):
    """The recipe `name` for a model family.

    Args:
        name: one of `RECIPES`.
        family: a family name from `FAMILIES` (any case), a model class or a model
            instance. Anything else (a user's own `keras.Model`) gets the recipe's
            "default" row.

    Returns:
        A `Recipe`; `recipe.as_dict()` gives `keras_vitmix.training.train`'s arguments.

    Example:
    >>> get_recipe("deit", "ViT").learning_rate
    0.00025
    """
    if not isinstance(name, str) or name not in RECIPES:
        close = difflib.get_close_matches(str(name), RECIPES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"`name` must be one of {RECIPES}.{hint} Received: name={name!r}")
    row = _family_name(family)
    return Recipe(name=name, family=row, **{**_BASE[name], **_FAMILY_OVERRIDES[name].get(row, {})})


def choose_recipe(num_examples, image_shape):
    """The recipe a dataset's size calls for.

    "small" below 10,000 training images; otherwise "cifar" when the images are at most
    `CIFAR_SIDE` (96) px a side, "deit" when larger. Never "finetune": adapting
    pretrained weights is a choice of the caller, not of the data's size.

    Args:
        num_examples: int >= 1, training images.
        image_shape: an int (a square's side) or (height, width[, channels]).

    Returns:
        A name from `RECIPES`.

    Example:
    >>> choose_recipe(50_000, (32, 32, 3))
    'cifar'
    """
    if not _is_int(num_examples) or num_examples < 1:
        raise ValueError(f"`num_examples` must be an integer >= 1. Received: num_examples={num_examples!r}")
    shape = (image_shape, image_shape) if _is_int(image_shape) else image_shape
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) not in (2, 3)
        or not all(_is_int(side) and side >= 1 for side in shape)
    ):
        raise ValueError(
            "`image_shape` must be an int or (height, width[, channels]) of positive ints. "
            f"Received: image_shape={image_shape!r}"
        )
    if num_examples < SMALL_DATASET:
        return "small"
    return "cifar" if max(shape[:2]) <= CIFAR_SIDE else "deit"


def _cell(value):
    """A table cell that reads back exactly (`repr` is a float's shortest exact form)."""
    if value is None:
        return "off"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return repr(value) if isinstance(value, float) else str(value)


def describe(name=None):
    """Markdown: for `name` (default: every recipe) a heading, when it is chosen, and a
    table with one row per family and "default", one column per training argument.

    docs/recipes.md shows this text; `python -m keras_vitmix.recipes` prints it.
    """
    names = RECIPES if name is None else (get_recipe(name).name,)
    sections = []
    for recipe in names:
        lines = [
            f"### {recipe}",
            "",
            _ABOUT[recipe],
            "",
            "| family | " + " | ".join(COLUMNS.values()) + " |",
            "|---" * (len(COLUMNS) + 1) + "|",
        ]
        for family in FAMILIES + (DEFAULT_FAMILY,):
            values = get_recipe(recipe, family).as_dict()
            lines.append(f"| {family} | " + " | ".join(_cell(values[field]) for field in COLUMNS) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    print(describe(), end="")
