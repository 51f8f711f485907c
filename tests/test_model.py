"""The math: gradients against finite differences of the reported loss, stability, the training loop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipeline import sgd
from pipeline.glyphs import CLASSES, PIXELS, clean_glyphs, noisy_copies
from pipeline.model import backward, forward, init_network, loss_value, sgd_step, sigmoid
from pipeline.sgd import Diverged, fit


def batch(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, (n, 30)).astype(np.float64), rng.integers(0, 3, n).astype(np.uint8)


def numeric_gradient(net, X, y, weight: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the reported loss with respect to every entry of `weight` (in place)."""
    grad = np.zeros_like(weight)
    for i in np.ndindex(weight.shape):
        saved = weight[i]
        weight[i] = saved + eps
        up = loss_value(net.loss, forward(net, X)[1], y)
        weight[i] = saved - eps
        down = loss_value(net.loss, forward(net, X)[1], y)
        weight[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("loss", ["bce", "mse"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("n", [1, 3])
def test_backward_matches_finite_differences_of_the_reported_loss(loss, bias, n):
    net = init_network(np.random.default_rng(7), PIXELS, hidden=4, classes=CLASSES, loss=loss, bias=bias)
    if bias:  # non-zero biases, so their gradients are exercised away from the trivial point
        net.b1[:] = np.linspace(-0.5, 0.5, 4)
        net.b2[:] = [0.3, -0.2, 0.1]
    X, y = batch(n)
    grads = backward(net, X, y)
    weights = {"dW1": net.w1, "dW2": net.w2} | ({"db1": net.b1, "db2": net.b2} if bias else {})
    assert set(grads) == set(weights)
    for name, weight in weights.items():
        np.testing.assert_allclose(grads[name], numeric_gradient(net, X, y, weight), rtol=1e-6, atol=1e-9, err_msg=name)


def test_bce_update_is_the_tutorials_a2_minus_y_at_batch_size_1():
    net = init_network(np.random.default_rng(0), PIXELS, hidden=5, classes=CLASSES, loss="bce", bias=False)
    X, y = clean_glyphs()[1:2].astype(float), np.array([1])
    A1, _, A2 = forward(net, X)
    d2 = A2 - np.array([[0.0, 1.0, 0.0]])
    d1 = (net.w2 @ d2.T).T * A1 * (1 - A1)  # the tutorial's formulas, written independently
    grads = backward(net, X, y)
    np.testing.assert_allclose(grads["dW2"], A1.T @ d2)
    np.testing.assert_allclose(grads["dW1"], X.T @ d1)


def test_sigmoid_and_losses_are_finite_and_silent_at_large_logits():
    z = np.array([[-1000.0, 0.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = sigmoid(z)
        values = [loss_value(loss, z, np.array([label])) for loss in ("bce", "mse") for label in (0, 1, 2)]
    assert 0 < a[0, 0] < 1e-307 and a[0, 1] == 0.5 and a[0, 2] == 1.0  # e^-1000 is clipped to e^-707
    assert np.all(np.isfinite(values))
    assert values[0] == pytest.approx(1000 + np.log(2) + 1000)  # label A: -log s(-1000) dominates


def test_sigmoid_matches_the_textbook_formula_where_that_is_safe():
    z = np.linspace(-30, 30, 601)
    np.testing.assert_allclose(sigmoid(z), 1 / (1 + np.exp(-z)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss", ["bce", "mse"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("batch_size,shuffle", [(1, False), (2, False), (4, False), (3, True), (64, True)])
@pytest.mark.parametrize("block_rows", [8192, 7])
def test_the_training_loop_is_sgd_step_batch_by_batch_to_the_last_bit(
    loss, bias, batch_size, shuffle, block_rows, monkeypatch
):
    monkeypatch.setattr(sgd, "BLOCK_ROWS", block_rows)  # 7: blocks and batches that end mid-data
    rng_data = np.random.default_rng(3)
    X = rng_data.integers(0, 2, (10, 30)).astype(np.uint8)
    y = rng_data.integers(0, 3, 10).astype(np.uint8)
    fast = init_network(np.random.default_rng(5), PIXELS, hidden=5, classes=CLASSES, loss=loss, bias=bias)
    history = fit(fast, X, y, lr=0.3, epochs=4, batch_size=batch_size, shuffle=shuffle, rng=np.random.default_rng(9))

    ref = init_network(np.random.default_rng(5), PIXELS, hidden=5, classes=CLASSES, loss=loss, bias=bias)
    order_rng, losses = np.random.default_rng(9), []
    for _ in range(4):
        order = order_rng.permutation(10) if shuffle else np.arange(10)
        z_epoch = []
        for start in range(0, 10, batch_size):
            idx = order[start : start + batch_size]
            z_epoch.append(forward(ref, X[idx].astype(float))[1])
            sgd_step(ref, X[idx].astype(float), y[idx], 0.3)
        losses.append(loss_value(loss, np.vstack(z_epoch), y[order]))
    for name in ("w1", "w2") + (("b1", "b2") if bias else ()):
        np.testing.assert_array_equal(getattr(fast, name), getattr(ref, name), err_msg=name)
    np.testing.assert_array_equal(history.loss, losses)
    np.testing.assert_array_equal(history.step, [1, 2, 3, 4])


def test_training_learns_the_three_glyphs():
    net = init_network(np.random.default_rng(0), PIXELS, hidden=5, classes=CLASSES, loss="bce", bias=False)
    X, y = clean_glyphs(), np.arange(3, dtype=np.uint8)
    history = fit(net, X, y, lr=0.1, epochs=300, batch_size=1, shuffle=False, rng=np.random.default_rng(0))
    assert history.accuracy[-1] == 1.0
    assert history.loss[-1] < history.loss[0] / 5


def test_a_diverging_loss_stops_training_naming_the_epoch():
    net = init_network(np.random.default_rng(0), PIXELS, hidden=5, classes=CLASSES, loss="bce", bias=True)
    X, y = clean_glyphs(), np.arange(3, dtype=np.uint8)
    net.w1[0, 0] = np.inf  # what a runaway learning rate produces; inf - inf then gives NaN
    with pytest.raises(Diverged) as err:
        fit(net, X, y, lr=0.1, epochs=5, batch_size=1, shuffle=False, rng=np.random.default_rng(0))
    assert err.value.epoch == 1
    assert "nan" in str(err.value)


@pytest.mark.parametrize("loss", ["bce", "mse"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("n", [1, 3])
def test_float32_gradients_match_the_checked_float64_ones(loss, bias, n):
    net64 = init_network(np.random.default_rng(7), PIXELS, hidden=4, classes=CLASSES, loss=loss, bias=bias)
    net32 = init_network(
        np.random.default_rng(7), PIXELS, hidden=4, classes=CLASSES, loss=loss, bias=bias, dtype=np.float32
    )
    X, y = batch(n)
    g64, g32 = backward(net64, X, y), backward(net32, X.astype(np.float32), y)
    for name in g64:
        assert g32[name].dtype == np.float32
        np.testing.assert_allclose(g32[name], g64[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_float32_training_follows_float64_and_repeats_exactly(batch_size):
    rng_data = np.random.default_rng(3)
    X = rng_data.integers(0, 2, (200, 30)).astype(np.uint8)
    y = rng_data.integers(0, 3, 200).astype(np.uint8)
    nets = []
    for dtype in (np.float64, np.float32, np.float32):
        net = init_network(
            np.random.default_rng(5), PIXELS, hidden=5, classes=CLASSES, loss="bce", bias=True, dtype=dtype
        )
        fit(net, X, y, lr=0.1, epochs=3, batch_size=batch_size, shuffle=True, rng=np.random.default_rng(1))
        nets.append(net)
    assert nets[1].w1.dtype == np.float32
    np.testing.assert_allclose(nets[1].w1, nets[0].w1, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(nets[1].w1, nets[2].w1)


def test_training_with_huge_logits_is_silent_and_finite():
    net = init_network(np.random.default_rng(0), PIXELS, hidden=5, classes=CLASSES, loss="bce", bias=True)
    np.multiply(net.w1, 20, out=net.w1)  # pre-activations in the hundreds: every sigmoid saturated
    np.multiply(net.w2, 20, out=net.w2)
    X, y = clean_glyphs(), np.arange(3, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = fit(net, X, y, lr=0.1, epochs=3, batch_size=1, shuffle=False, rng=np.random.default_rng(0))
    assert np.all(np.isfinite(history.loss)) and np.all(np.isfinite(net.w1))


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_training_memory_stays_near_the_uint8_data(engine, monkeypatch):
    import tracemalloc

    monkeypatch.setenv("PIPELINE_ENGINE", engine)
    X, y = noisy_copies(clean_glyphs(), 100_000, 0.1, np.random.default_rng(0))  # 300,000 samples
    net = init_network(np.random.default_rng(0), PIXELS, hidden=5, classes=CLASSES, loss="bce", bias=False)
    fit(net, X[:9], y[:9], lr=0.1, epochs=1, batch_size=1024, shuffle=True, rng=np.random.default_rng(0))  # compiled
    tracemalloc.start()
    try:
        fit(net, X, y, lr=0.1, epochs=1, batch_size=1024, shuffle=True, rng=np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    as_float = X.size * 8  # what converting the whole set to float64 at once would take: 72 MB
    assert peak < as_float / 2, f"peak {peak / 2**20:.1f} MiB"
