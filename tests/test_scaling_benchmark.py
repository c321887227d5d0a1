"""benchmarks/scaling.py on tiny models: the sweep's checks, one point's rows, the report."""

import collections
import math

import keras
import pytest

from keras_vitmix import layers, plotting
from tests.benchmark_utils import benchmark_script

TINY = ["--hidden-dim", "16", "--depth", "2", "--batch-size", "2", "--repeats", "1", "--fit-last", "2",
        "--image-sizes", "8", "16", "--patch-sizes", "4"]


@pytest.fixture(scope="module")
def scaling():
    with benchmark_script("scaling") as module:
        yield module
    plotting.pyplot().close("all")


def test_sweep_orders_points_by_patches_and_rejects_bad_ones(scaling):
    assert scaling.sweep([32], [4, 16, 8]) == [(32, 16), (32, 8), (32, 4)]
    assert scaling.sweep([64, 32], [8]) == [(32, 8), (64, 8)]
    with pytest.raises(ValueError, match=r"patch_size=5, image size=\(32, 32\)"):
        scaling.sweep([32, 64], [5])
    with pytest.raises(ValueError, match="not both"):
        scaling.sweep([32, 64], [4, 8])
    with pytest.raises(ValueError, match="two or more patch counts"):
        scaling.sweep([32], [8])
    with pytest.raises(ValueError, match="patch_size=8, image size=\\(30, 30\\)"):
        scaling.parse(["--image-sizes", "30", "60", "--patch-sizes", "8"])
    with pytest.raises(ValueError, match="reference='mixer'"):
        scaling.parse(["--models", "vit", "convmixer"])
    with pytest.raises(ValueError, match="depth=1"):
        scaling.parse([*TINY, "--depth", "1"])


def test_every_family_at_one_width_and_depth(scaling):
    args = scaling.parse(TINY)
    kinds = {"vit": {"TransformerBlock": 2}, "mixer": {"MixerBlock": 2}, "convmixer": {"ConvMixerBlock": 2},
             "mixer_vit": {"MixerBlock": 1, "TransformerBlock": 1},
             "convmixer_mixer": {"ConvMixerBlock": 1, "MixerBlock": 1}}
    for key, expected in kinds.items():
        model = scaling.build(key, 16, 4, args)
        blocks = [layer for layer in model.layers if isinstance(layer, (layers.TransformerBlock, layers.MixerBlock,
                                                                        layers.ConvMixerBlock))]
        assert collections.Counter(type(block).__name__ for block in blocks) == expected, key
        assert model.get_config()["hidden_dim"] == 16 and model.output_shape == (None, scaling.CLASSES)


def test_two_points_measured_tabulated_fitted_and_drawn(scaling, tmp_path):
    args = scaling.parse([*TINY, "--models", "convmixer", "mixer", "--output", str(tmp_path / "scaling.png"),
                          "--results", str(tmp_path / "RESULTS.md")])
    rows = [row for image, patch in args.points for row in scaling.measure_point(image, patch, args)]
    expected = [("convmixer", 4), ("mixer", 4), ("convmixer", 16), ("mixer", 16)]  # the cheapest to compile
    assert [(row["model"], row["tokens"]) for row in rows] == expected
    for row in rows:
        assert row["backend"] == keras.backend.backend()
        assert row["infer_s"] > 0 and row["train_s"] > 0 and row["flops"] > 0
        assert row["infer_mb"] >= 0 and row["train_mb"] >= 0
    assert [row["infer_ratio"] for row in rows if row["model"] == "mixer"] == [1.0, 1.0]  # the reference
    summary = scaling.summarize(rows, args)
    assert [s["model"] for s in summary] == ["convmixer", "mixer"]
    for s in summary:
        assert all(math.isfinite(s["fit"][name]) for name in ("flops", "infer_s", "train_s"))
        assert len(s["local"]) == 1 and s["tokens"] == 16 and s["gflop_s"] > 0
    mixer = summary[1]
    assert 0.8 < mixer["fit"]["flops"] < 1.2 and mixer["gflop_s_ratio"] == 1.0  # linear; itself
    table, fits = scaling.format_rows(rows, args), scaling.format_summary(summary, args)
    assert len(table.splitlines()) == 2 + 4 and len(fits.splitlines()) == 2 + 2
    fig = scaling.figure(rows, args)
    assert len(fig.axes) == 3 and (tmp_path / "scaling.png").stat().st_size > 1000
    scaling.record(args, ["--backends", "jax"], [table, fits])
    scaling.record(args, ["--backends", "jax", "--repeats", "1"], [table, fits])  # replaces the first
    recorded = (tmp_path / "RESULTS.md").read_text()
    assert recorded.count("## Scaling with the number of patches") == 1 and recorded.count(table) == 1
    assert "Command: `python benchmarks/scaling.py --backends jax --repeats 1`" in recorded
