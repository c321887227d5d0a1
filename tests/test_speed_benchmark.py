"""benchmarks/speed.py without the `[benchmarks]` extra: a missing reference's columns are
left empty, said in one line, instead of the run dying on its import."""

import json
import sys

import pytest

from tests.benchmark_utils import benchmark_script


@pytest.fixture(scope="module")
def speed():
    with benchmark_script("speed") as module:
        yield module


def test_a_missing_package_is_one_line_naming_the_empty_columns(speed, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if not installed
    assert "keras-hub" in speed.missing_references()
    assert speed.missing_note(["keras-hub"]) == (
        "speed.py: keras_hub is not installed, so the ÷keras-hub columns are left empty (–); "
        "pip install -e '.[benchmarks]' adds them."
    )
    assert speed.missing_note(["timm", "keras-hub"]).startswith(
        "speed.py: timm and keras_hub are not installed, so the ÷timm and ÷keras-hub columns")
    assert speed.missing_note([]) is None


@pytest.mark.slow
def test_a_vit_row_without_keras_hub_has_an_empty_column(speed, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    monkeypatch.setattr(speed, "MODELS", {"vit_cifar_patch4_32": (None, {"num_layers": 1})})  # a ViT: keras-hub's row
    args = speed.parse(["--models", "vit_cifar_patch4_32", "--batch-size", "2", "--repeats", "1", "--no-record"])
    speed.worker(args)
    rows = [json.loads(line[3:]) for line in capsys.readouterr().out.splitlines() if line.startswith("ROW")]
    assert [row["model"] for row in rows] == ["vit_cifar_patch4_32"]
    assert all(rows[0][task]["ratios"] == {} for task in ("infer1", "infer", "train"))
    cells = speed.format_table(rows, 2).splitlines()[2].split(" | ")
    assert (cells[8], cells[11]) == ("–", "–")  # ÷keras-hub, inference and training
