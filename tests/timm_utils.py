"""timm references for the weight-loading tests: random timm models, real images, logits.

Each timm model is created once per process (`reference`), with random weights
(`pretrained=False`, no network) at reduced depth, then every tensor is perturbed so
that no LayerNorm is an identity and no BatchNorm statistic is 0 or 1: a mapping that
swapped or dropped any of them would change the logits.
"""

import functools
import importlib.util
import pathlib
import tarfile

import keras
import numpy as np
import pytest

from keras_vitmix.applications import create_model
from keras_vitmix.applications._common import NORMALIZATIONS
from keras_vitmix.weights import import_timm

if importlib.util.find_spec("timm") is None:  # pytest.importorskip would import it first
    pytest.skip("timm is not installed", allow_module_level=True)
timm = import_timm()  # after TensorFlow too (see import_timm)
torch = pytest.importorskip("torch")

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
DEPTH = 2  # blocks kept of every network: the mapping is per block, the time is not
BATCH = 4
ATOL = 1e-4


def timm_model(name, **kwargs):
    """A random (seeded) timm model `name` with its first DEPTH blocks."""
    torch.manual_seed(0)  # timm initializes from torch's global generator
    if name.startswith(("vit_", "deit_")):
        return timm.create_model(name, pretrained=False, depth=DEPTH, **kwargs)
    # timm's Mixer and ConvMixer entry points fix their depth: keep the first blocks.
    model = timm.create_model(name, pretrained=False, **kwargs)
    model.blocks = model.blocks[:DEPTH]
    return model


def perturb(model, seed=0):
    """Adds seeded noise to every float tensor (scaled to it), in place; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.mul_(0.5 + torch.rand(value.shape, generator=generator))
            else:
                scale = max(0.5 * float(value.std()) if value.numel() > 1 else 0.0, 0.05)
                value.add_(scale * torch.randn(value.shape, generator=generator))
    return model.eval()


@functools.lru_cache(maxsize=None)
def reference(name):
    """The perturbed, reduced-depth timm model `name` (created once per process)."""
    return perturb(timm_model(name))


def ours(name, **overrides):
    """Our model `name` at the reference's depth, returning logits."""
    return create_model(name, num_layers=DEPTH, classifier_activation=None, **overrides)


@functools.lru_cache(maxsize=None)
def cifar_images(size=224, count=BATCH):
    """`count` CIFAR-10 training JPEGs of different classes, resized (bicubic) to
    `size`: float32 pixel values in [0, 255], (count, size, size, 3)."""
    from PIL import Image

    if not SHARED.exists():
        pytest.skip(f"{SHARED} is missing")
    found = {}
    with tarfile.open(SHARED) as archive:
        for member in archive:  # classes come one after another: stop at `count`
            parts = pathlib.PurePosixPath(member.name).parts
            if member.isfile() and parts[-1].endswith(".jpg") and parts[-2] not in found:
                image = Image.open(archive.extractfile(member)).convert("RGB")
                found[parts[-2]] = np.asarray(image.resize((size, size), Image.BICUBIC))
                if len(found) == count:
                    break
    return np.stack(list(found.values())).astype("float32")


def timm_outputs(model, images, normalization, pre_logits=False):
    """timm's logits (or pre-logits features) for pixel `images` (B, H, W, 3)."""
    mean, std = NORMALIZATIONS[normalization]
    x = (images / 255.0 - np.asarray(mean)) / np.asarray(std)
    x = torch.from_numpy(x.astype("float32")).permute(0, 3, 1, 2)
    with torch.no_grad():
        if pre_logits:
            return model.forward_head(model.forward_features(x), pre_logits=True).numpy()
        return model(x).numpy()


def our_outputs(model, images):
    return keras.ops.convert_to_numpy(model(images))


def assert_same_logits(ours_out, timm_out, label):
    """Max abs difference <= ATOL and the same top-1; returns the difference."""
    difference = float(np.max(np.abs(ours_out - timm_out)))
    print(f"{label}: max |ours - timm| = {difference:.2e} (logits up to {np.abs(timm_out).max():.1f})")
    assert ours_out.shape == timm_out.shape
    assert difference <= ATOL, label
    np.testing.assert_array_equal(ours_out.argmax(-1), timm_out.argmax(-1))
    return difference
