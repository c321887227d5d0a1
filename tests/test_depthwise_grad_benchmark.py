"""benchmarks/depthwise_grad.py on a tiny layer: every form of the kernel gradient agrees
with a NumPy reference, and the table lists each form."""

import numpy as np
import pytest

from tests.benchmark_utils import benchmark_script


@pytest.fixture(scope="module")
def script():
    with benchmark_script("depthwise_grad") as module:
        yield module


def kernel_gradient(x, g, k):
    """sum over (b, h, w) of the padded input's shifted window times g, per tap."""
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0)))
    h, w = x.shape[1:3]
    return np.stack([(xp[:, i : i + h, j : j + w] * g).sum(axis=(0, 1, 2)) for i in range(k) for j in range(k)])


def test_every_form_computes_the_kernel_gradient(script):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    g = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    expected = kernel_gradient(x.astype("float64"), g.astype("float64"), 3)
    forms = {**script.tensorflow_forms(x, g, 3), **script.jax_forms(x, g, 3)}
    checked = [name for name in forms if "input gradient" not in name]
    assert len(checked) == 7
    for name in checked:
        np.testing.assert_allclose(np.asarray(forms[name]()), expected, rtol=1e-4, atol=1e-4, err_msg=name)


def test_prints_one_row_per_form(script, capsys):
    script.main(["--shape", "2", "4", "4", "3", "--kernel-size", "3", "--repeats", "1", "--no-record"])
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| ")]
    assert len(lines) == 1 + 8  # header + eight forms
    assert any(l.startswith("| JAX, fori_loop |") and l.endswith("| 1.00× |") for l in lines)
