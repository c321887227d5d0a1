"""benchmarks/gpu.py without a GPU: the peak lookup, the table arithmetic, and one
worker pass over two models with CUDA stubbed out (each row must run under the
requested dtype policy, and flash attention on a CPU must be a named failure)."""

import json

import keras
import pytest

from tests.benchmark_utils import benchmark_script


@pytest.fixture(scope="module")
def script():
    with benchmark_script("gpu") as module:
        yield module


@pytest.mark.parametrize(
    "name, peak",
    [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4),
     ("NVIDIA H20", 148.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("Tesla T4", None)],
)
def test_bf16_peak_by_device_name(script, name, peak):
    assert script.bf16_peak(name) == peak


def test_table_arithmetic(script):
    row = dict(kind="speed", backend="jax", device="d", peak=1000.0, model="m", policy="mixed_bfloat16", depth=8,
               params=1234, flops=2e9, peak_mb=10.0, infer=0.5, infer_timm=0.8, train=1.0, train_timm=None)
    flash = dict(kind="flash", backend="jax", model="m", kernel="k", infer=0.7, train=1.0, max_gap=1e-3, same_top1=1.0)
    failed = dict(kind="failed", backend="torch", model="m", error="OutOfMemoryError: full")
    speed_table, flash_table = script.format_tables([row, flash, failed], batch=100)
    cells = speed_table.splitlines()[2].split(" | ")
    # 100 images in 0.5 s = 200 img/s; 200 x 2 GFLOP = 0.4 TFLOP/s = 0.04% of 1000 TFLOP/s;
    # training: 100 img/s x 3 x 2 GFLOP = 0.6 TFLOP/s = 0.06%.
    assert cells[1] == "`m` (depth 8)" and cells[5:11] == ["200", "0.80×", "0.0%", "100", "–", "0.1%"]
    assert "failed: OutOfMemoryError: full" in speed_table.splitlines()[3]
    assert "| 0.70× | 1.00× | 1.00e-03 | 100% |" in flash_table


def test_worker_keeps_the_policy_across_models(script, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    for name in ("reset_peak_memory_stats", "empty_cache", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(script, "peak_gpu_mb", lambda: 0.0)
    monkeypatch.setattr(script, "device_and_peak", lambda args: ("cpu", None))
    previous = keras.config.dtype_policy()
    try:
        args = script.parse(["--worker", keras.backend.backend(), "--batch-size", "2", "--repeats", "1", "--models",
                             "hybrid_convmixer_mixer_cifar_patch2_32", "hybrid_mixer_vit_cifar_patch4_32"])
        script.worker(args)
    finally:
        keras.config.set_dtype_policy(previous)
    rows = [json.loads(line[3:]) for line in capsys.readouterr().out.splitlines() if line.startswith("ROW")]
    assert [(r["kind"], r["model"]) for r in rows] == [
        ("speed", "hybrid_convmixer_mixer_cifar_patch2_32"),
        ("speed", "hybrid_mixer_vit_cifar_patch4_32"),
        ("flash", "hybrid_mixer_vit_cifar_patch4_32"),
    ]
    assert [r["policy"] for r in rows[:2]] == ["mixed_bfloat16", "mixed_bfloat16"]  # after clear_session too
    assert rows[1]["params"] == 629_514 and rows[1]["infer"] > 0 and rows[1]["train"] > 0
    assert (rows[0]["batch"], rows[0]["repeats"]) == (2, 1) and rows[0]["host"] == script.this_machine()
    assert "flash_attention=True" in rows[2]["error"] and "\x1b" not in rows[2]["error"]


def test_saved_rows_are_recorded_with_the_workers_settings(script, tmp_path):
    """Rows rendered later (`--rows`, on another machine) keep the batch, repeats and
    machine they were measured with, not the rendering command's defaults."""
    row = dict(kind="speed", backend="jax", device="NVIDIA H100 80GB HBM3", peak=989.4, model="m",
               policy="mixed_bfloat16", depth=None, params=1, flops=1e9, peak_mb=1.0, infer=0.5, infer_timm=None,
               train=1.0, train_timm=None, batch=64, repeats=7, host="x86_64, 16 cores")
    rows = tmp_path / "jax.rows"
    rows.write_text("noise\nROW" + json.dumps(row) + "\n")
    results = tmp_path / "RESULTS.md"
    script.main(["--rows", str(rows), "--results", str(results)])
    text = results.read_text()
    assert "## GPU throughput\n" in text and "Machine: x86_64, 16 cores, NVIDIA H100 80GB HBM3." in text
    assert "batch 64," in text and "medians of 7 alternating runs" in text
    assert "| 128 | – |" in text  # 64 images in 0.5 s, not the default batch's 256 / 0.5
    assert script.recorded([row, dict(row, repeats=15)], "repeats", 3) == "7 / 15"
    assert script.recorded([dict(kind="flash")], "repeats", 3) == 3


def test_rows_without_a_batch_use_the_default_after_rows_with_one(script):
    old = dict(kind="speed", backend="jax", device="d", peak=None, model="old", policy="float32", depth=None,
               params=1, flops=1e9, peak_mb=1.0, infer=0.5, infer_timm=None, train=1.0, train_timm=None)
    new = dict(old, model="new", batch=64)
    (table,) = script.format_tables([new, old], batch=100)
    assert [line.split(" | ")[5] for line in table.splitlines()[2:]] == ["128", "200"]  # 64 / 0.5, 100 / 0.5
