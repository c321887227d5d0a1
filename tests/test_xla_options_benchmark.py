"""benchmarks/xla_options.py on a small model: both copies predict alike, and the table
has one row per model with ratios computed from its times."""

import re

import keras
import pytest

from tests.benchmark_utils import benchmark_script


@pytest.fixture(scope="module")
def script():
    with benchmark_script("xla_options") as module:
        yield module


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the script runs its own JAX worker process "
                    "whatever the backend: once, in the jax job of `make test`")
def test_table_row_per_model_with_its_ratios(script, capsys):
    rows = script.main([
        "--models", "hybrid_mixer_vit_cifar_patch4_32", "--batch-size", "4", "--repeats", "2",
        "--overrides", '{"hidden_dim": 32, "num_heads": 2, "mixer_depth": 1, "attention_depth": 1}', "--no-record",
    ])
    assert len(rows) == 1
    row = rows[0]
    # The same weights: predictions agree (the options change how products run, not what).
    assert row["max_diff"] < 1e-5
    for task in ("infer", "train"):
        times = row[task]
        assert times["options"] > 0 and times["defaults"] > 0
        # Two copies of one program: their times stay within a factor of a few of each other.
        assert 0.2 < times["ratio"] < 5
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| `hybrid")]
    assert len(lines) == 1
    ratios = re.findall(r"\| ([0-9.]+)× \|", lines[0])
    assert [float(r) for r in ratios] == [round(row["infer"]["ratio"], 2), round(row["train"]["ratio"], 2)]


@pytest.mark.parametrize("balanced, rounds", [(False, "ab ab ab"), (True, "ab ba ab")])
def test_balanced_rounds_reverse_the_order(balanced, rounds):
    calls = []
    with benchmark_script("_timing") as timing:
        times = timing.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=1, balanced=balanced)
    assert "".join(calls) == "ab" + rounds.replace(" ", "")  # the warmup, then three rounds
    assert [len(t) for t in times.values()] == [3, 3]
