"""keras_vitmix.cost: timing, token counts, power-law fits and the figures' data."""

import keras
import numpy as np
import pytest

from keras_vitmix import cost, plotting
from keras_vitmix.layers import MultiHeadSelfAttention

plt = plotting.pyplot()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_time_forward_times_repeats_after_warmup(monkeypatch):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    calls = []
    monkeypatch.setattr(model, "predict_on_batch", lambda x: calls.append(len(x)))
    seconds = cost.time_forward(model, np.zeros((3, 4), "float32"), repeats=4, warmup=2)
    assert calls == [3] * 6 and isinstance(seconds, float) and seconds >= 0
    with pytest.raises(ValueError, match="repeats=0"):
        cost.time_forward(model, np.zeros((3, 4)), repeats=0)


def test_cost_vs_tokens_counts_patches_and_sequence_lengths(monkeypatch):
    timed = []  # (input shape, repeats) of each timing; timing itself is tested above

    def fake_time_forward(model, inputs, repeats):
        timed.append((inputs.shape, repeats))
        return 0.001 * len(timed)

    monkeypatch.setattr(cost, "time_forward", fake_time_forward)
    vit = cost.cost_vs_tokens("vit_cifar_patch4_32", [16, 32], repeats=3, hidden_dim=16, num_layers=1, num_heads=2)
    assert vit.label == "vit_cifar_patch4_32" and vit.tokens.tolist() == [16, 64]
    assert vit.parameters[1] - vit.parameters[0] == (64 - 16) * 16  # only the position embedding grows
    assert timed == [((1, 16, 16, 3), 3), ((1, 32, 32, 3), 3)]
    np.testing.assert_allclose(vit.seconds, [0.001, 0.002])

    def attention(n):
        return keras.Sequential([keras.Input((n, 8)), MultiHeadSelfAttention(2)])

    layer = cost.cost_vs_tokens(attention, [5, 7], batch_size=2, repeats=1, label="attention")
    assert layer.label == "attention" and layer.tokens.tolist() == [5, 7]
    assert [shape for shape, _ in timed[2:]] == [(2, 5, 8), (2, 7, 8)]
    assert layer.parameters.tolist() == [8 * 24 + 24 + 8 * 8 + 8] * 2  # qkv + proj, whatever N
    with pytest.raises(ValueError, match="registered name"):
        cost.cost_vs_tokens(attention, [5], hidden_dim=4)


def test_power_law_exponent():
    tokens = np.array([16, 64, 256, 1024])
    assert cost.power_law_exponent(tokens, 3e-6 * tokens**2.0) == pytest.approx(2.0)
    assert cost.power_law_exponent(tokens, 5e-4 * tokens) == pytest.approx(1.0)
    flat_then_linear = np.array([1.0, 1.0, 4.0, 16.0])
    assert cost.power_law_exponent(tokens, flat_then_linear, last=2) == pytest.approx(1.0)
    assert cost.power_law_exponent(tokens, flat_then_linear) < 1.0
    with pytest.raises(ValueError, match="one length"):
        cost.power_law_exponent([1, 2, 3], [1, 2])


def test_cost_curves_draw_the_measurements_log_log():
    quadratic = cost.Measurement("ViT", np.array([64, 256, 1024]), np.array([1e-3, 1.6e-2, 2.56e-1]), np.ones(3))
    linear = cost.Measurement("Mixer", np.array([64, 256, 1024]), np.array([1e-3, 4e-3, 1.6e-2]), np.ones(3))
    fig = cost.cost_curves([quadratic, linear])
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    vit_line, mixer_line, slope1, slope2 = ax.get_lines()
    np.testing.assert_allclose(vit_line.get_xdata(), quadratic.tokens)
    np.testing.assert_allclose(vit_line.get_ydata(), quadratic.seconds * 1e3)  # milliseconds
    np.testing.assert_allclose(mixer_line.get_ydata(), linear.seconds * 1e3)
    np.testing.assert_allclose(slope2.get_ydata(), [1.0, 256.0])  # from the first point, 16x the tokens
    np.testing.assert_allclose(slope1.get_ydata(), [1.0, 16.0])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ViT (~N^2.00)", "Mixer (~N^1.00)", "slope 1", "slope 2"]
    assert len(cost.cost_curves(linear).axes[0].get_lines()) == 3  # one Measurement alone


def test_speed_accuracy_places_each_model():
    fig = cost.speed_accuracy({"ViT": (0.02, 0.91), "Mixer": (0.01, 0.885)})
    (ax,) = fig.axes
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_allclose(points, [[20.0, 91.0], [10.0, 88.5]])
    assert [t.get_text() for t in ax.texts] == ["ViT", "Mixer"]


def test_peak_memory_counts_what_a_call_allocates():
    allocated = cost.peak_memory(lambda: np.ones(2**26, "uint8"))  # 64 MiB, touched
    if allocated is None:
        pytest.skip("no resettable resident high-water mark on this OS")
    assert 2**26 * 0.9 <= allocated <= 2**26 * 1.5
    assert cost.peak_memory(lambda: None) < 2**22  # nothing allocated: a few pages at most


def test_cost_curves_into_a_given_axis_with_its_own_unit():
    memory = cost.Measurement("Mixer", np.array([16, 64]), np.array([2.0, 8.0]), np.ones(2))
    fig, (left, right) = plt.subplots(1, 2)
    assert cost.cost_curves(memory, ax=right, scale=1.0, ylabel="peak memory (MB)") is fig
    assert not left.get_lines() and right.get_ylabel() == "peak memory (MB)"
    np.testing.assert_allclose(right.get_lines()[0].get_ydata(), [2.0, 8.0])
    np.testing.assert_allclose(right.get_lines()[1].get_ydata(), [2.0, 8.0])  # slope 1 from the first point
