"""benchmarks/vit_parts.py on a tiny block: the JAX and PyTorch forms of every part
compute the same numbers, and the table lists every part."""

import keras
import numpy as np
import pytest

from tests.benchmark_utils import benchmark_script


@pytest.fixture(scope="module")
def script():
    with benchmark_script("vit_parts") as module:
        yield module


def test_jax_and_pytorch_forms_agree(script):
    data = script.arrays(batch=2, tokens=9, dim=12, heads=3, mlp_dim=24, seed=3)
    forms = script.forms(data)
    assert set(forms) == set(script.PARTS)
    script.check_agreement(forms)  # raises on any part whose results differ
    # The agreement is not vacuous: the flattened MLP's input gradient equals a NumPy one.
    x, w1, w2 = (data[n].astype("float64") for n in ("x", "fc1", "fc2"))
    from scipy.special import erf

    h = x @ w1
    gelu = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    dy = 2 * (gelu @ w2)
    dgelu = 0.5 * (1 + erf(h / np.sqrt(2))) + h * np.exp(-0.5 * h**2) / np.sqrt(2 * np.pi)
    expected = ((dy @ w2.T) * dgelu) @ w1.T
    got = np.asarray(forms["MLP, tokens flattened to a matrix"]["jax"]()[0])
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)


def test_prints_one_row_per_part(script, capsys):
    script.main(["--batch", "2", "--tokens", "9", "--dim", "12", "--heads", "3", "--mlp-dim", "24", "--repeats", "1", "--no-record"])
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| ")]
    with_layer = keras.backend.backend() == "jax"  # our TransformerBlock's row needs Keras on JAX
    assert len(lines) == 1 + len(script.PARTS) + with_layer
    assert all(l.endswith("× |") for l in lines[1:])
    assert any(l.startswith("| our TransformerBlock") for l in lines) == with_layer
