"""Register tokens (Darcet et al., 2024) are prefix tokens to every inspection function:
patch_grid counts them, the scores hold them, rollout and distance leave them out of the
patch grid, and `write_attention_figures` draws them apart from the maps."""

import keras
import numpy as np
import pytest

from keras_vitmix import inspection, visualize
from keras_vitmix.applications import ViT
from keras_vitmix.plotting.attention import class_token_attention, layer_heads, query_maps

SMALL = dict(patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, input_shape=(16, 16, 3), classes=3)
GRID, PATCHES = (4, 4), 16


@pytest.fixture(scope="module")
def dinov2_like():
    """A class token, 4 registers, positions on the patches only (timm's reg4_dinov2)."""
    keras.utils.set_random_seed(7)
    return ViT(**SMALL, num_register_tokens=4, use_prefix_positions=False, layer_scale_init=0.1)


@pytest.fixture(scope="module")
def gap_like():
    """4 registers and no class token, average pooling (timm's reg4_gap)."""
    keras.utils.set_random_seed(8)
    return ViT(**SMALL, use_class_token=False, pooling="avg", use_fc_norm=True, num_register_tokens=4)


def images(count=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, 16, 16, 3)).astype("float32")


@pytest.mark.parametrize("fixture, prefix", [("dinov2_like", 5), ("gap_like", 4)])
def test_scores_rollout_and_distance_count_the_registers(fixture, prefix, request):
    model = request.getfixturevalue(fixture)
    grid = inspection.patch_grid(model)
    assert (grid.grid_shape, grid.num_prefix_tokens) == (GRID, prefix)
    scores = inspection.attention_model(model).predict(images(), verbose=0)
    for s in scores.values():
        assert s.shape == (2, 2, prefix + PATCHES, prefix + PATCHES)
        np.testing.assert_allclose(s.sum(-1), 1.0, atol=1e-5)  # rows over patches and prefix
    rollout = inspection.attention_rollout(scores)
    assert rollout.shape == (2, prefix + PATCHES, prefix + PATCHES)
    # The patch map of a query: h * w entries, the prefix columns (registers) left out.
    assert rollout[0, 0, prefix:].reshape(GRID).shape == GRID
    maps = query_maps(layer_heads(scores, "block_1"), GRID, prefix)
    assert maps.shape == (2, PATCHES, *GRID)
    distances = inspection.mean_attention_distance(scores, GRID, 4, prefix)
    patches_only = {k: v[..., prefix:, prefix:] for k, v in scores.items()}  # what a model without them would give
    np.testing.assert_allclose(distances, inspection.mean_attention_distance(patches_only, GRID, 4), atol=1e-6)
    with pytest.raises(ValueError, match=rf"N={prefix + PATCHES}, grid_shape=\(4, 4\), num_prefix_tokens=1"):
        inspection.mean_attention_distance(scores, GRID, 4, 1)  # a class token only: the registers miscounted


def test_write_attention_figures_draws_the_registers_apart(dinov2_like, tmp_path):
    assert visualize.prefix_token_names(dinov2_like) == ["class"] + [f"register {i}" for i in range(4)]
    paths = visualize.write_attention_figures(dinov2_like, images(1)[0], tmp_path, dpi=20)
    assert (tmp_path / "class_attention.png").is_file() and len(paths) == 7
    scores = inspection.attention_model(dinov2_like).predict(images(1), verbose=0)
    maps, prefix = class_token_attention(layer_heads(scores, "block_1"), GRID, 5)
    assert maps.shape == (2, *GRID) and prefix.shape == (2, 5)
    np.testing.assert_allclose(maps.sum((1, 2)) + prefix.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps.reshape(2, -1), scores["block_1"][0, :, 0, 5:], atol=1e-7)


def test_write_attention_figures_without_a_class_token(gap_like, tmp_path):
    assert visualize.prefix_token_names(gap_like) == [f"register {i}" for i in range(4)]
    paths = visualize.write_attention_figures(gap_like, images(1)[0], tmp_path, dpi=20)
    assert not (tmp_path / "class_attention.png").exists() and len(paths) == 6  # no class token to draw
