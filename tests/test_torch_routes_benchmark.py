"""benchmarks/torch_routes.py on a small model: the twins predict alike, the table has one
row per route, model and batch size with ratios computed from its times, and the switch
that runs a copy without the route restores it afterwards."""

import re

import keras
import pytest

from tests.benchmark_utils import benchmark_script


@pytest.fixture(scope="module")
def script():
    with benchmark_script("torch_routes") as module:
        yield module


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the script runs its own torch worker process "
                    "whatever the backend: once, in the torch job of `make test`")
def test_table_row_per_model_and_batch_with_its_ratios(script, capsys):
    rows = script.main([
        "--models", "hybrid_mixer_vit_cifar_patch4_32", "--batch-sizes", "1", "4", "--repeats", "2",
        "--overrides", '{"hidden_dim": 32, "num_heads": 2, "mixer_depth": 1, "attention_depth": 1}', "--no-record",
    ])
    assert [(row["route"], row["batch"]) for row in rows] == [("direct_sublayer_calls", 1), ("direct_sublayer_calls", 4)]
    for row in rows:
        assert row["max_diff"] < 1e-6  # the same weights and computations, called another way
        for task in ("infer", "train"):
            times = row[task]
            assert times["route"] > 0 and times["without"] > 0
            assert 0.2 < times["ratio"] < 5
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| `")]
    assert len(lines) == 2
    for line, row in zip(lines, rows):
        ratios = re.findall(r"\| ([0-9.]+)× \|", line)
        assert [float(r) for r in ratios] == [round(row["infer"]["ratio"], 2), round(row["train"]["ratio"], 2)]


def test_without_switches_the_route_off_and_back(script):
    from keras_vitmix.layers import _platform

    assert _platform.DIRECT_SUBLAYER_CALLS is True
    with script.without("direct_sublayer_calls"):
        assert _platform.DIRECT_SUBLAYER_CALLS is False
    assert _platform.DIRECT_SUBLAYER_CALLS is True
