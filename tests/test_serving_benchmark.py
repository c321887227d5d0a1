"""benchmarks/serving.py: an export with attention is timed against the same export
without it (issue #35), and its table says so; no model is built here."""

import numpy as np
import pytest

from tests.benchmark_utils import benchmark_script


def test_attention_runners_are_compared_with_their_export_without_attention(monkeypatch):
    with benchmark_script("serving") as serving:
        # Fake times per call: Keras 10 s, the exports 5 and 4 s, with attention 6 and 8 s.
        seconds = {"keras": 10.0, "saved_model": 5.0, "onnx": 4.0, "saved_model_attention": 6.0, "onnx_attention": 8.0}
        monkeypatch.setattr(serving, "alternate", lambda functions, repeats: {
            name: [seconds[name]] * repeats for name in functions
        })
        probabilities = np.full((1, 3), 1 / 3)
        run = {name: (lambda x: probabilities) for name in seconds}
        medians, ratios = serving.measure(run, np.zeros((1, 4, 4, 3), np.uint8), repeats=5)
        assert ratios["saved_model"] == pytest.approx(0.5)  # ÷ Keras
        assert ratios["saved_model_attention"] == pytest.approx(1.2)  # ÷ the SavedModel without
        assert ratios["onnx_attention"] == pytest.approx(2.0)
        table = serving.format_attention_table([("vit_tiny_patch16_224", 1, medians, ratios)])
        header, rule, row = table.splitlines()
        assert header.split("|")[3:9] == [
            " SavedModel ", " SavedModel + attention ", " ÷ without ", " ONNX ", " ONNX + attention ", " ÷ without ",
        ]
        assert row == "| `vit_tiny_patch16_224` | 1 | 5000.0 ms | 6000.0 ms | 1.20× | 4000.0 ms | 8000.0 ms | 2.00× |"
        wrong = {**run, "onnx_attention": lambda x: probabilities + 0.1}
        with pytest.raises(AssertionError, match="onnx_attention disagrees with Keras"):
            serving.measure(wrong, np.zeros((1, 4, 4, 3), np.uint8), repeats=1)
