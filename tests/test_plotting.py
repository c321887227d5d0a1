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
CLASS_TOKEN_NAMES = ["class_attention.png"]  # models with a class token


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
    assert len(fig.axes) == 3  # the image, the heat map over it, its colour bar
    left, right, _ = fig.axes
    np.testing.assert_allclose(drawn(left), img / 255.0, atol=1e-6)  # in full, colours kept
    gray = img @ np.array([0.299, 0.587, 0.114]) / 255.0
    np.testing.assert_allclose(drawn(right, 0), gray, atol=1e-5)  # under the heat map in gray
    expected = s[0, :, 1 + 6, 1:].mean(0).reshape(4, 4)  # query patch 6 = (1, 2), patch keys
    np.testing.assert_allclose(drawn(right), np.kron(expected, np.ones((4, 4))), atol=1e-6)
    assert right.images[-1].get_clim() == pytest.approx((expected.min(), expected.max()))
    for ax in (left, right):
        box = ax.patches[0]
        assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (7.5, 3.5, 4, 4)
    fig = plotting.query_attention(img, s[:, :, 1:, 1:], 15, (4, 4), head=0)  # no class token
    np.testing.assert_allclose(drawn(fig.axes[1])[12:, 12:], s[0, 0, 16, 16], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 15\].*Received: query=16"):
        plotting.query_attention(img, s, 16, (4, 4), num_prefix_tokens=1)
    with pytest.raises(ValueError, match="N=17, grid_shape=\\(4, 4\\), num_prefix_tokens=0"):
        plotting.query_attention(img, s, 0, (4, 4))
    with pytest.raises(ValueError, match=r"\[0, 255\]. Received: range \[-1.0, 1.0\]"):
        plotting.query_attention(np.linspace(-1, 1, 64).reshape(8, 8), s, 0, (4, 4), num_prefix_tokens=1)


def test_attention_heads():
    s = scores(heads=5)
    fig = plotting.attention_heads(image(), s, 3, (4, 4), num_prefix_tokens=1)
    assert len(fig.axes) == 7  # the image, 5 heads, one colour bar
    np.testing.assert_allclose(drawn(fig.axes[0]), image() / 255.0, atol=1e-6)
    for h, ax in enumerate(fig.axes[1:6]):
        np.testing.assert_allclose(drawn(ax)[::4, ::4], s[0, h, 4, 1:].reshape(4, 4), atol=1e-6)
        # one scale for every head: a colour is the same weight in each
        assert ax.images[-1].get_clim() == pytest.approx((s[0, :, 4, 1:].min(), s[0, :, 4, 1:].max()))


def test_rollout_overlay():
    rollout = scores(heads=1)[:, 0]  # (2, 17, 17)
    fig = plotting.rollout_overlay(image(), rollout, (4, 4))
    assert len(fig.axes) == 3  # the image, the rollout over it, its colour bar
    np.testing.assert_allclose(drawn(fig.axes[1])[::4, ::4], rollout[0, 0, 1:].reshape(4, 4), atol=1e-6)
    assert fig.axes[2].get_ylabel() == "rollout, class token's row"
    fig = plotting.rollout_overlay(image(), rollout[1, 1:, 1:], (4, 4))  # no class token: mean of rows
    np.testing.assert_allclose(drawn(fig.axes[1])[::4, ::4], rollout[1, 1:, 1:].mean(0).reshape(4, 4), atol=1e-6)
    assert fig.axes[2].get_ylabel() == "rollout, mean over queries"
    with pytest.raises(ValueError, match=r"shape \(17, 17\), grid_shape=\(3, 3\)"):
        plotting.rollout_overlay(image(), rollout[0], (3, 3))
    broken = rollout[0].copy()
    broken[0, 5] = np.nan  # a hole in the drawn row
    with pytest.raises(ValueError, match="non-finite values. Received: 1 NaN or infinite of 16"):
        plotting.rollout_overlay(image(), broken, (4, 4))


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
    assert len(fig.axes) == 65  # 64 tiles, one colour bar
    # each tile on its own scale, said on the colour bar
    np.testing.assert_allclose(drawn(fig.axes[10]), weights[10] / np.abs(weights[10]).max(), atol=1e-6)
    assert fig.axes[10].images[0].get_clim() == (-1, 1)
    assert fig.axes[-1].get_ylabel() == "weight / the tile's max |weight|"
    assert len(plotting.token_mixing_tiles(weights[:5]).axes) == 6
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
    assert written(paths) == sorted(PATCH_NAMES + ATTENTION_NAMES + CLASS_TOKEN_NAMES + ["query_attention.gif"])
    assert all(os.path.isfile(p) for p in paths)
    assert PIL.open(tmp_path / "query_attention.png").size == (210, 102)  # 7 x 3.4 inches at 30 dpi
    gif = PIL.open(tmp_path / "query_attention.gif")
    assert gif.n_frames == 16  # one frame per patch
    assert gif.size == (144, 76)  # the image, the heat map and its colour bar: 6 x 3.2 inches at 24 dpi


def test_written_attention_map_of_near_uniform_attention(tmp_path):
    # the demo's case: every weight near 1/17, which a colour scale from 0 drew as one colour
    keras.utils.set_random_seed(3)
    model = ViT(**SMALL, num_layers=1, num_heads=2)
    for variable in model.get_layer("block_0").weights:
        if variable.path.endswith("qkv/kernel"):
            variable.assign(variable * 0.2)  # queries and keys 5x smaller: logits 25x smaller
    visualize.write_attention_figures(model, image(), tmp_path, dpi=30)
    pixels = plt.imread(tmp_path / "attention_map.png")[:, :100, :3]  # left of the colour bar
    position = colour_map_positions(pixels, "viridis", tolerance=0.02)
    assert np.percentile(position, 95) - np.percentile(position, 5) > 0.3  # 0.04 with the scale from 0


def test_write_attention_figures_resizes_with_a_warning(vit, tmp_path):
    with pytest.warns(UserWarning, match=r"from \(20, 20\) to the model's input size \(16, 16\)"):
        paths = visualize.write_attention_figures(vit, image(20).astype(np.float32), tmp_path / "new", dpi=20)
    assert written(paths) == sorted(PATCH_NAMES + ATTENTION_NAMES + CLASS_TOKEN_NAMES)


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


def rendered(fig, drawn_image, path):
    """The RGB of `drawn_image` (an AxesImage of `fig`) in the saved PNG, read back at the
    centre of each of its data pixels: what a reader of the file sees."""
    fig.savefig(path, dpi=fig.dpi)
    pixels = plt.imread(path)[..., :3]
    box = drawn_image.get_window_extent()  # display pixels, from the bottom left
    rows, cols = drawn_image.get_array().shape[:2]
    ys = box.ymax - (np.arange(rows) + 0.5) * box.height / rows  # row 0 at the top
    xs = box.xmin + (np.arange(cols) + 0.5) * box.width / cols
    return pixels[(pixels.shape[0] - ys).astype(int)][:, xs.astype(int)]


def colour_map_positions(pixels, cmap, tolerance=1.0):
    """Where each RGB pixel sits on the colour map `cmap`, in [0, 1], read back from its
    colour; pixels further than `tolerance` (L1) from every colour of the map are dropped."""
    lut = plt.get_cmap(cmap)(np.linspace(0, 1, 256))[:, :3]
    distance = np.abs(np.reshape(pixels, (-1, 1, 3)) - lut).sum(-1)
    return distance.argmin(-1)[distance.min(-1) < tolerance] / 255.0


def test_attention_map_colours_span_a_small_spread(tmp_path):
    # softmax weights of 64 tokens: 0.015 +- 0.001; a colour scale from 0 drew them as one colour
    s = 0.015 + 0.001 * np.random.default_rng(0).standard_normal((1, 2, 17, 17))
    fig = plotting.attention_map(s)
    heat = fig.axes[0].images[0]
    assert heat.get_clim() == pytest.approx((s[0].mean(0).min(), s[0].mean(0).max()))
    pixels = rendered(fig, heat, tmp_path / "map.png")
    position = colour_map_positions(pixels, heat.cmap.name)
    assert position.max() - position.min() > 0.95  # 0.26 with the scale from 0
    assert position.std() > 0.12  # 0.04 with the scale from 0
    flat = plotting.attention_map(np.full((5, 5), 0.2))  # one value: one colour, the value on the bar
    low, high = flat.axes[0].images[0].get_clim()
    assert low < 0.2 < high and high - low == pytest.approx(4e-4)


def test_overlay_keeps_the_image_visible(tmp_path):
    img = image(seed=1)[..., 0]  # gray, so the rendered pixels compare with it directly
    heat = scores(batch=1, heads=1) ** 3  # a strong spread in the heat map
    fig = plotting.query_attention(img, heat, (0, 0), (4, 4), num_prefix_tokens=1)
    left, right = fig.axes[:2]
    # the image panel is the image itself, pixel for pixel (8-bit PNG)
    np.testing.assert_allclose(rendered(fig, left.images[0], tmp_path / "q.png")[..., 0], img / 255.0, atol=0.01)
    # under the heat map, each patch has one heat colour: what varies within a patch is the
    # image, at (1 - alpha) of its contrast
    over = rendered(fig, right.images[-1], tmp_path / "q.png").mean(-1)
    patches = lambda a: a.reshape(4, 4, 4, 4).transpose(0, 2, 1, 3).reshape(16, 16)  # noqa: E731
    seen, source = patches(over), patches(img / 255.0)
    seen, source = seen - seen.mean(1, keepdims=True), source - source.mean(1, keepdims=True)
    assert np.corrcoef(seen.ravel(), source.ravel())[0, 1] > 0.95
    assert np.linalg.lstsq(source.reshape(-1, 1), seen.ravel(), rcond=None)[0][0] > 0.45  # 0.4 under alpha 0.6


def heat_figures():
    s, img = scores(), image()
    labels = np.random.default_rng(0).integers(0, 30, 300)
    return {
        "attention_map": lambda: plotting.attention_map(s),
        "query_attention": lambda: plotting.query_attention(img, s, 5, (4, 4), num_prefix_tokens=1),
        "attention_heads": lambda: plotting.attention_heads(img, s, 5, (4, 4), num_prefix_tokens=1),
        "rollout_overlay": lambda: plotting.rollout_overlay(img, s[:, 0], (4, 4)),
        "class_attention": lambda: plotting.class_attention(img, s, (4, 4), 1),
        "token_mixing_tiles": lambda: plotting.token_mixing_tiles(s[0, :, 1:, 1:].reshape(-1, 4, 4)),
        "confusion_matrix": lambda: plotting.confusion_matrix(labels, labels[::-1], [str(i) for i in range(30)]),
    }


@pytest.mark.parametrize("name", sorted(heat_figures()))
def test_every_heat_map_has_a_colour_bar(name):
    fig = heat_figures()[name]()
    bars = [im.colorbar for ax in fig.axes for im in ax.images if im.colorbar is not None]
    assert len(bars) == 1 and bars[0].ax in fig.axes and bars[0].ax.get_ylabel()
    heat_maps = [im for ax in fig.axes for im in ax.images if im.cmap.name != "gray"]
    assert heat_maps
    for im in heat_maps:  # every heat map reads off that bar: same colours, same range
        assert (im.cmap.name, im.get_clim()) == (bars[0].mappable.cmap.name, bars[0].mappable.get_clim())


def test_confusion_matrix_counts_and_refuses_other_labels():
    fig = plotting.confusion_matrix([0, 1, 1, 2], np.array([0.0, 1.0, 2.0, 2.0]), ["a", "b", "c"])
    np.testing.assert_array_equal(fig.matrix, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    assert fig.axes[0].images[0].get_clim() == (0, 1)
    with pytest.raises(ValueError, match=r"`labels` must be class indices in \[0, 2\]. Received: dtype int64, range \[-1, 2\]"):
        plotting.confusion_matrix([-1, 2], [0, 1], ["a", "b", "c"])  # -1 was counted in the last class
    with pytest.raises(ValueError, match=r"`predictions` must be class indices.*range \[0.5, 0.5\]"):
        plotting.confusion_matrix([0], [0.5], ["a", "b", "c"])
    with pytest.raises(ValueError, match="Received: 2 labels, 1 predictions"):
        plotting.confusion_matrix([0, 1], [0], ["a", "b", "c"])


def test_class_attention_keeps_the_registers_apart():
    # The class token, 4 registers (Darcet et al., 2024) and a 4x4 grid: 21 tokens.
    from keras_vitmix.plotting.attention import class_token_attention

    s = scores(heads=3, tokens=21, seed=5)
    s[:, :, 0, 1:5] *= 40  # registers that soak up the class token's attention, as in DINOv2
    s /= s.sum(-1, keepdims=True)
    maps, prefix = class_token_attention(s[0], (4, 4), 5)
    assert maps.shape == (3, 4, 4) and prefix.shape == (3, 5)
    np.testing.assert_allclose(maps.sum((1, 2)) + prefix.sum(1), 1.0, atol=1e-6)  # the whole row
    np.testing.assert_allclose(maps, s[0, :, 0, 5:].reshape(3, 4, 4))  # the patch columns only, in grid order
    np.testing.assert_allclose(prefix, s[0, :, 0, :5])
    names = ["class"] + [f"register {i}" for i in range(4)]
    fig = plotting.class_attention(image(), s, (4, 4), 5, prefix_names=names)
    heads = [ax for ax in fig.axes if ax.get_title().startswith("head")]
    for h, ax in enumerate(heads):
        np.testing.assert_allclose(drawn(ax)[::4, ::4], maps[h], atol=1e-6)
        # the maps' scale spans the patch weights: the registers' large weights are not in it
        assert ax.images[-1].get_clim() == pytest.approx((maps.min(), maps.max()))
    (bars,) = [ax for ax in fig.axes if ax.patches]
    np.testing.assert_allclose([p.get_height() for p in bars.patches], prefix.mean(0), atol=1e-6)
    assert [t.get_text() for t in bars.get_xticklabels()] == names
    with pytest.raises(ValueError, match=r"N=17, grid_shape=\(4, 4\), num_prefix_tokens=0"):
        class_token_attention(scores()[0], (4, 4), 0)  # no class token
    with pytest.raises(ValueError, match=r"name the 5 prefix tokens. Received: prefix_names=\['class'\]"):
        plotting.class_attention(image(), s, (4, 4), 5, prefix_names=["class"])


def test_rollout_overlay_with_registers():
    rollout = scores(heads=1, tokens=21, seed=6)[:, 0]  # (2, 21, 21): a prefix of 5 and a 4x4 grid
    fig = plotting.rollout_overlay(image(), rollout, (4, 4), num_prefix_tokens=5)
    np.testing.assert_allclose(drawn(fig.axes[1])[::4, ::4], rollout[0, 0, 5:].reshape(4, 4), atol=1e-6)
    # registers without a class token (timm's reg4_gap): the mean of the patch queries' rows
    fig = plotting.rollout_overlay(image(), rollout[1, 1:, 1:], (4, 4), num_prefix_tokens=4, use_class_token=False)
    expected = rollout[1, 5:, 5:].mean(0).reshape(4, 4)
    np.testing.assert_allclose(drawn(fig.axes[1])[::4, ::4], expected, atol=1e-6)
    assert fig.axes[2].get_ylabel() == "rollout, mean over queries"
    with pytest.raises(ValueError, match=r"N = num_prefix_tokens \+ h \* w.*num_prefix_tokens=4"):
        plotting.rollout_overlay(image(), rollout, (4, 4), num_prefix_tokens=4)
