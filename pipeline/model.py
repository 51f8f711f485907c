"""The network's math: init, forward, losses, backward, SGD step, predict. Pure NumPy, no I/O.

One example a row. Shapes use n = batch size, H = hidden units, K = classes (3):
X : (n, 30) pixels, y : (n,) class indices, W1 : (30, H), W2 : (H, K), b1 : (H,), b2 : (K,).

Losses, each trained with its own gradient:
- bce : binary cross-entropy summed over the K outputs, averaged over the batch. Its gradient with
        respect to Z2 is (A2 - Y) / n, which at n = 1 is the tutorial's update `a2 - y`.
- mse : squared error averaged over the n * K outputs (the tutorial's reported "loss"). Its
        gradient with respect to Z2 is 2 (A2 - Y) A2 (1 - A2) / (n K).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.glyphs import CLASSES, PIXELS

LOSSES = ("bce", "mse")
ACTIVATION = "sigmoid"


@dataclass(frozen=True)
class Network:
    """Weights (trained in place) and what is needed to use them without params.yaml."""
    w1: np.ndarray               # (30, H)
    w2: np.ndarray               # (H, K)
    b1: np.ndarray | None        # (H,) or None when biases are off
    b2: np.ndarray | None        # (K,) or None
    loss: str
    classes: tuple[str, ...] = CLASSES

    @property
    def sizes(self) -> tuple[int, int, int]:
        return (self.w1.shape[0], self.w1.shape[1], self.w2.shape[1])

    @property
    def bias(self) -> bool:
        return self.b1 is not None


def init_network(rng: np.random.Generator, hidden: int, loss: str, bias: bool,
                 dtype: np.dtype | type = np.float64) -> Network:
    """Standard-normal weights, as in the tutorial; zero biases. Drawn in float64 so every dtype starts alike."""
    k = len(CLASSES)
    w1 = rng.standard_normal((PIXELS, hidden)).astype(dtype)
    w2 = rng.standard_normal((hidden, k)).astype(dtype)
    b1, b2 = (np.zeros(hidden, dtype), np.zeros(k, dtype)) if bias else (None, None)
    return Network(w1, w2, b1, b2, loss)


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + exp(-z)) computed as (1 + tanh(z / 2)) / 2, which never overflows."""
    z = np.asarray(z)
    if out is None:
        out = np.empty(z.shape, np.result_type(z.dtype, np.float16))  # floats keep their precision
    np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def one_hot(y: np.ndarray, k: int, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """y : (n,) class indices -> (n, k) rows of 0/1."""
    return np.eye(k, dtype=dtype)[y]


def forward(net: Network, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (A1, Z2, A2); Z2 are the output logits."""
    Z1 = X @ net.w1                      # (n, 30) @ (30, H) -> (n, H)
    if net.b1 is not None:
        Z1 = Z1 + net.b1
    A1 = sigmoid(Z1)
    Z2 = A1 @ net.w2                     # (n, H) @ (H, K) -> (n, K)
    if net.b2 is not None:
        Z2 = Z2 + net.b2
    return A1, Z2, sigmoid(Z2)


def loss_value(loss: str, Z2: np.ndarray, y: np.ndarray) -> float:
    """The loss of logits Z2 : (n, K) against labels y : (n,), stable for any |Z2|."""
    n, k = Z2.shape
    picked = np.take_along_axis(Z2, y.reshape(-1, 1).astype(np.intp), axis=1)  # (n, 1): Z2[i, y_i]
    if loss == "bce":
        # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z, with softplus(z) = max(z, 0) + log1p(exp(-|z|))
        softplus = np.maximum(Z2, 0) + np.log1p(np.exp(-np.abs(Z2)))
        return float((softplus.sum() - picked.sum()) / n)
    if loss == "mse":
        A2 = sigmoid(Z2)
        # sum (A - Y)^2 = sum A^2 - 2 sum A[i, y_i] + n, for one-hot Y
        return float((np.square(A2).sum() - 2 * sigmoid(picked).sum() + n) / (n * k))
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def output_delta(loss: str, A2: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """dLoss/dZ2 : (n, K) for outputs A2 and one-hot targets Y."""
    n, k = A2.shape
    if loss == "bce":
        return (A2 - Y) / n
    if loss == "mse":
        return 2.0 * (A2 - Y) * A2 * (1.0 - A2) / (n * k)
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def backward(net: Network, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of `loss_value(net.loss, ...)` with respect to every weight, keyed dW1, dW2, db1, db2."""
    A1, _, A2 = forward(net, X)
    dZ2 = output_delta(net.loss, A2, one_hot(y, A2.shape[1], A2.dtype))  # (n, K)
    dA1 = dZ2 @ net.w2.T                 # (n, K) @ (K, H) -> (n, H)
    dZ1 = dA1 * A1 * (1.0 - A1)          # (n, H)
    grads = {"dW1": X.T @ dZ1,           # (30, n) @ (n, H) -> (30, H)
             "dW2": A1.T @ dZ2}          # (H, n) @ (n, K) -> (H, K)
    if net.bias:
        grads["db1"], grads["db2"] = dZ1.sum(axis=0), dZ2.sum(axis=0)
    return grads


def sgd_step(net: Network, X: np.ndarray, y: np.ndarray, lr: float) -> None:
    """One plain gradient-descent step on the batch (X, y), in place. The readable reference."""
    grads = backward(net, X, y)
    weights = {"dW1": net.w1, "dW2": net.w2, "db1": net.b1, "db2": net.b2}
    for name, grad in grads.items():
        weights[name] -= lr * grad  # in place: the arrays are shared with `net`


def logits(net: Network, X: np.ndarray, block: int = 65536) -> np.ndarray:
    """Z2 : (n, K) for X : (n, 30) of any numeric dtype, converting `block` rows to float at a time."""
    Z2 = np.empty((len(X), net.sizes[2]), dtype=net.w1.dtype)
    for start in range(0, len(X), block):
        rows = slice(start, start + block)
        Z2[rows] = forward(net, X[rows].astype(net.w1.dtype))[1]
    return Z2


def accuracy(Z2: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose largest logit is the label."""
    return float(np.mean(np.argmax(Z2, axis=1) == y))
