"""benchmarks/jax_cpu_routes.py on a small model: each route's twin predicts alike, the
table has one row per route and model with ratios computed from its times, and the
switch that traces a copy without a route restores the layers' route afterwards."""

import re

import keras
import pytest

from tests.benchmark_utils import benchmark_script


@pytest.fixture(scope="module")
def script():
    with benchmark_script("jax_cpu_routes") as module:
        yield module


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the script runs its own JAX worker process "
                    "whatever the backend: once, in the jax job of `make test`")
def test_table_row_per_route_with_its_ratios(script, capsys):
    rows = script.main([
        "--models", "hybrid_mixer_vit_cifar_patch4_32", "--batch-size", "4", "--repeats", "2",
        "--overrides", '{"hidden_dim": 32, "num_heads": 2, "mixer_depth": 1, "attention_depth": 1}', "--no-record",
    ])
    assert [row["route"] for row in rows] == ["attention_slices", "gelu_erf", "layer_norm_vjp"]
    for row in rows:
        # The same weights: predictions agree (a route changes how values are computed, not which).
        assert row["max_diff"] < 1e-5
        for task in ("infer", "train"):
            times = row[task]
            assert times["route"] > 0 and times["without"] > 0
            # Two forms of one model: their times stay within a factor of a few of each other.
            assert 0.2 < times["ratio"] < 5
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| `")]
    assert len(lines) == 3
    for line, row in zip(lines, rows):
        ratios = re.findall(r"\| ([0-9.]+)× \|", line)
        assert [float(r) for r in ratios] == [round(row["infer"]["ratio"], 2), round(row["train"]["ratio"], 2)]


@pytest.mark.parametrize("route", ["attention_slices", "gelu_erf", "layer_norm_vjp"])
def test_without_switches_the_route_off_and_back(script, route):
    from keras_vitmix.layers import attention, linear, normalization

    module, name, off = {
        "attention_slices": (attention, "_cpu_threads", lambda value: value() == 1),
        "gelu_erf": (linear, "gelu", lambda value: value is keras.activations.gelu),
        "layer_norm_vjp": (normalization, "_jax_on_cpu", lambda value: value() is False),
    }[route]
    original = getattr(module, name)
    with script.without(route):
        assert getattr(module, name) is not original and off(getattr(module, name))
    assert getattr(module, name) is original
