"""benchmarks/torch_overhead.py: its twins are the same graphs as timm's (parameter
counts equal, and the same logits once timm's weights are copied in is left to the
weight-loading tests), its table says what the rows hold, and it refuses to time a
backend other than torch."""

import importlib.util

import keras
import pytest

from tests.benchmark_utils import benchmark_script

if importlib.util.find_spec("timm") is None:  # pytest.importorskip would import it before TensorFlow's fix
    pytest.skip("timm is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def script():
    with benchmark_script("torch_overhead") as module:
        yield module


@pytest.mark.parametrize("name, expected", [("vit_tiny_patch16_224", 32_206), ("mixer_s16_224", 21_174)])
def test_twins_have_timms_parameter_count(script, name, expected):
    ours, theirs = script.twins(name)
    assert ours.count_params() == sum(p.numel() for p in theirs.parameters()) == expected
    assert not theirs.training  # timm's side runs in inference mode
    assert ours.input_shape == (None, script.IMAGE, script.IMAGE, 3)


def test_table_rows(script):
    row = dict(model="m", policy="float32", params=10, timm_params=10, ours_ms=2.0, timm_ms=1.0, ratio=1.9)
    assert script.format_table([row]).splitlines()[2] == "| `m` | float32 | 10 / 10 | 2.00 | 1.00 | **1.90×** |"


def test_main_times_the_torch_backend_only(script, tmp_path):
    args = ["--models", "mixer_s16_224", "--policies", "mixed_bfloat16", "--repeats", "2", "--no-record"]
    if keras.backend.backend() != "torch":
        with pytest.raises(SystemExit, match="measures the torch backend"):
            script.main(args)
        return
    (row,) = script.main(args)
    assert (row["model"], row["policy"], row["params"], row["timm_params"]) == ("mixer_s16_224", "mixed_bfloat16", 21_174, 21_174)
    assert row["ours_ms"] > 0 and row["timm_ms"] > 0 and 0.1 < row["ratio"] < 20
    assert keras.config.dtype_policy().name == "float32"  # the policy is put back
