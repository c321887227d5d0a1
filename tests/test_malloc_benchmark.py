"""benchmarks/malloc_reuse.py on a small model under this job's backend: the workers
took the side they were given, and the table shows the ratios of their times."""

import re

import keras
import pytest

from keras_vitmix import _malloc
from tests.benchmark_utils import benchmark_script


@pytest.mark.skipif(_malloc.glibc() is None, reason="mallopt is glibc's (Linux)")
def test_one_row_per_model_from_both_sides(capsys):
    backend = keras.backend.backend()
    with benchmark_script("malloc_reuse") as script:
        rows = script.main([
            "--backends", backend, "--models", "seed_mixer", "--rounds", "1", "--steps", "3",
            "--overrides", '{"dropout_rate": 0}', "--no-record",
        ])
    assert len(rows) == 1
    row = rows[0]
    assert (row["backend"], row["model"], row["batch"]) == (backend, "seed_mixer", 64)
    assert row["tuned"] == [True]  # the reuse worker's import applied every setting
    for task in ("infer", "train"):
        assert row[f"{task}_ratio"] == pytest.approx(row[f"{task}_reuse"] / row[f"{task}_system"])
    if backend == "jax":
        # XLA:CPU's 76 MB training-step buffer: mapped afresh each step under glibc's
        # defaults, reused (the median of three steps) with keras_vitmix's settings.
        assert row["train_faults_system"] > 10_000
        assert row["train_faults_reuse"] < 0.25 * row["train_faults_system"]
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith(f"| {backend} | `seed_mixer`")][-1]
    ratios = re.findall(r"\| ([0-9.]+)× \|", line)
    assert [float(r) for r in ratios] == [round(row["infer_ratio"], 2), round(row["train_ratio"], 2)]
