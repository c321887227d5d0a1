"""keras_vitmix.plotting attention and token-mixing figures: axes, the arrays drawn,
saved file sizes, and `write_attention_figures` end to end."""

import os

import keras
import numpy as np
import pytest

from keras_vitmix import plotting, visualize
from keras_vitmix.applications import ConvMixer, HybridMixerViT, MLPMixer, ViT

PIL = pytest.importorskip("PIL.Image")
plt = plotting.pyplot()
SMALL = {"patch_size": 4, "hidden_dim": 16, "input_shape": (16, 16, 3), "classes": 3}
PATCH_NAMES = ["patches.png"]
ATTENTION_NAMES = ["attention_map.png", "query_attention.png", "attention_heads.png", "rollout.png",
                   "attention_distance.png"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def vit():
    keras.utils.set_random_seed(3)
    return ViT(**SMALL, num_layers=2, num_heads=2)


def image(size=16, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)


def scores(batch=2, heads=3, tokens=17, seed=0):
    a = np.random.default_rng(seed).uniform(size=(batch, heads, tokens, tokens))
    return a / a.sum(-1, keepdims=True)


def drawn(ax, index=-1):
    return np.asarray(ax.images[index].get_array())


def test_image_patches():
    img = image()
    fig = plotting.image_patches(img, 4)
    assert len(fig.axes) == 16
    np.testing.assert_allclose(drawn(fig.axes[6]), img[4:8, 8:12] / 255.0, atol=1e-6)  # row 1, col 2
    fig = plotting.image_patches(img[..., 0], (8, 4))  # a grayscale image, tall patches
    assert len(fig.axes) == 8 and drawn(fig.axes[0]).shape == (8, 4)
    with pytest.raises(ValueError, match=r"patch_size=5, image size=\(16, 16\)"):
        plotting.image_patches(img, 5)


def test_attention_map():
    s = scores()
    fig = plotting.attention_map(s)
    assert len(fig.axes) == 2  # the map and its colorbar
    np.testing.assert_allclose(drawn(fig.axes[0]), s[0].mean(0), atol=1e-6)
    fig = plotting.attention_map({"block_1": s, "block_0": 0 * s}, layer="block_1", head=2, sample=1)
    np.testing.assert_allclose(drawn(fig.axes[0]), s[1, 2], atol=1e-6)
    fig = plotting.attention_map([s, 0 * s], layer=0, head=1)
    np.testing.assert_allclose(drawn(fig.axes[0]), s[0, 1], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 2\]. Received: head=3"):
        plotting.attention_map(s, head=3)
    with pytest.raises(ValueError, match=r"\[-2, 1\]. Received: layer=2"):
        plotting.attention_map([s, s], layer=2)
    with pytest.raises(ValueError, match="Received: layer='block_9'"):
        plotting.attention_map({"block_0": s}, layer="block_9")


def test_query_attention_overlay_and_rectangle():
    img, s = image(), scores()
    fig = plotting.query_attention(img, s, (1, 2), (4, 4), num_prefix_tokens=1)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert drawn(ax, 0).shape == (16, 16, 3)
    expected = s[0, :, 1 + 6, 1:].mean(0).reshape(4, 4)  # query patch 6 = (1, 2), patch keys
    np.testing.assert_allclose(drawn(ax), np.kron(expected, np.ones((4, 4))), atol=1e-6)
    box = ax.patches[0]
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (7.5, 3.5, 4, 4)
    fig = plotting.query_attention(img, s[:, :, 1:, 1:], 15, (4, 4), head=0)  # no class token
    np.testing.assert_allclose(drawn(fig.axes[0])[12:, 12:], s[0, 0, 16, 16], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 15\].*Received: query=16"):
        plotting.query_attention(img, s, 16, (4, 4), num_prefix_tokens=1)
    with pytest.raises(ValueError, match="N=17, grid_shape=\\(4, 4\\), num_prefix_tokens=0"):
        plotting.query_attention(img, s, 0, (4, 4))


def test_attention_heads():
    s = scores(heads=5)
    fig = plotting.attention_heads(image(), s, 3, (4, 4), num_prefix_tokens=1)
    assert len(fig.axes) == 5
    for h, ax in enumerate(fig.axes):
        np.testing.assert_allclose(drawn(ax)[::4, ::4], s[0, h, 4, 1:].reshape(4, 4), atol=1e-6)


def test_rollout_overlay():
    rollout = scores(heads=1)[:, 0]  # (2, 17, 17)
    fig = plotting.rollout_overlay(image(), rollout, (4, 4))
    assert len(fig.axes) == 2
    np.testing.assert_allclose(drawn(fig.axes[1])[::4, ::4], rollout[0, 0, 1:].reshape(4, 4), atol=1e-6)
    fig = plotting.rollout_overlay(image(), rollout[1, 1:, 1:], (4, 4))  # no class token: mean of rows
    np.testing.assert_allclose(drawn(fig.axes[1])[::4, ::4], rollout[1, 1:, 1:].mean(0).reshape(4, 4), atol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(17, 17\), grid_shape=\(3, 3\)"):
        plotting.rollout_overlay(image(), rollout[0], (3, 3))


def test_attention_distance():
    distances = np.arange(12, dtype=float).reshape(3, 4)
    fig = plotting.attention_distance(distances)
    (ax,) = fig.axes
    assert len(ax.collections) == 4
    np.testing.assert_allclose(ax.collections[2].get_offsets(), [[1, 2], [2, 6], [3, 10]])
    assert len(plotting.attention_distance(distances[0]).axes[0].collections) == 4


def test_token_mixing_tiles():
    weights = np.random.default_rng(0).normal(size=(100, 4, 6))
    fig = plotting.token_mixing_tiles(weights)
    assert len(fig.axes) == 64
    np.testing.assert_allclose(drawn(fig.axes[10]), weights[10], atol=1e-6)
    assert len(plotting.token_mixing_tiles(weights[:5]).axes) == 5
    with pytest.raises(ValueError, match=r"Received: shape \(4, 6\)"):
        plotting.token_mixing_tiles(weights[0])


@pytest.mark.parametrize("name", ["attention_map", "query_attention", "image_patches"])
def test_saved_png_size(name, tmp_path):
    figures = {
        "attention_map": lambda: plotting.attention_map(scores()),
        "query_attention": lambda: plotting.query_attention(image(), scores(), 0, (4, 4), num_prefix_tokens=1),
        "image_patches": lambda: plotting.image_patches(image(), 4),
    }
    fig = figures[name]()
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=20)
    width, height = np.round(fig.get_size_inches() * 20).astype(int)
    assert PIL.open(path).size == (width, height)
    assert plt.imread(path).shape[:2] == (height, width)


def written(paths):
    return sorted(os.path.basename(p) for p in paths)


def test_write_attention_figures_vit(vit, tmp_path):
    paths = visualize.write_attention_figures(vit, image(), tmp_path, head=1, query=(0, 3), animate=True, dpi=30)
    assert written(paths) == sorted(PATCH_NAMES + ATTENTION_NAMES + ["query_attention.gif"])
    assert all(os.path.isfile(p) for p in paths)
    assert PIL.open(tmp_path / "query_attention.png").size == (120, 120)  # 4 x 4 inches at 30 dpi
    gif = PIL.open(tmp_path / "query_attention.gif")
    assert gif.n_frames == 16  # one frame per patch


def test_write_attention_figures_resizes_with_a_warning(vit, tmp_path):
    with pytest.warns(UserWarning, match=r"from \(20, 20\) to the model's input size \(16, 16\)"):
        paths = visualize.write_attention_figures(vit, image(20).astype(np.float32), tmp_path / "new", dpi=20)
    assert written(paths) == sorted(PATCH_NAMES + ATTENTION_NAMES)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": image(channels=1)}, r"3-channel images. Received: image of shape \(16, 16, 1\)"),
        ({"image": np.zeros(5)}, r"one image \(height, width, channels\).*shape \(5,\)"),
        ({"image": np.full((16, 16, 3), 300.0)}, r"\[0, 255\]. Received: range \[300.0, 300.0\]"),
        ({"head": 2}, r"\[0, 1\]. Received: head=2"),
        ({"query": 16}, r"\[0, 15\].*Received: query=16"),
        ({"query": (4, 0)}, r"Received: query=\(4, 0\)"),
        ({"layer": "block_5"}, r"\['block_0', 'block_1'\].*Received: layer='block_5'"),
    ],
)
def test_write_attention_figures_bad_input(vit, tmp_path, kwargs, match):
    kwargs = {"image": image(), **kwargs}
    with pytest.raises(ValueError, match=match):
        visualize.write_attention_figures(vit, output_dir=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_write_attention_figures_mixer_and_hybrid(tmp_path):
    mixer = MLPMixer(**SMALL, num_layers=1, token_mlp_dim=8)
    paths = visualize.write_attention_figures(mixer, image(), tmp_path / "mixer", animate=True, dpi=20)
    assert written(paths) == ["patches.png", "token_mixing.png"]
    tiles = plotting.token_mixing_tiles(np.ones((8, 4, 4)))  # 8 units of the 4 x 4 grid
    assert PIL.open(paths[1]).size == tuple(np.round(tiles.get_size_inches() * 20).astype(int))
    with pytest.raises(ValueError, match="'mlp_mixer' has no attention. Received: layer=None, head=0"):
        visualize.write_attention_figures(mixer, image(), tmp_path / "mixer", head=0)
    hybrid = HybridMixerViT(**SMALL, mixer_depth=1, attention_depth=1, num_heads=2)
    paths = visualize.write_attention_figures(hybrid, image(), tmp_path / "hybrid", dpi=20)
    assert written(paths) == sorted(PATCH_NAMES + ATTENTION_NAMES + ["token_mixing.png"])


def test_write_attention_figures_conv_mixer(tmp_path):
    model = ConvMixer(hidden_dim=8, num_layers=1, patch_size=4, kernel_size=3, input_shape=(16, 16, 3), classes=2)
    with pytest.warns(UserWarning, match="no attention and no MixerBlock"):
        paths = visualize.write_attention_figures(model, image(), tmp_path, dpi=20)
    assert written(paths) == ["patches.png"]
