"""The network's math: init, forward, losses, backward, SGD step, predict. Pure NumPy, no I/O.

One example a row. Shapes use n = batch size, H = hidden units, K = classes (3):
X : (n, 30) pixels, y : (n,) class indices, W1 : (30, H), W2 : (H, K), b1 : (H,), b2 : (K,).

Each loss is one entry of LOSSES: its value and its gradient side by side (as scikit-learn's
`LOSS_FUNCTIONS` and `DERIVATIVES`), so each is trained with its own true gradient:
- bce : binary cross-entropy summed over the K outputs, averaged over the batch. Its gradient with
        respect to Z2 is (A2 - Y) / n, which at n = 1 is the tutorial's update `a2 - y`.
- mse : squared error averaged over the n * K outputs (the tutorial's reported "loss"). Its
        gradient with respect to Z2 is 2 (A2 - Y) A2 (1 - A2) / (n K).
`compiled.py` computes the same losses in Numba; a test keeps its table's names equal to these.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.portable import column_sum, matmul, outer_sum, pixels_matmul, sigmoid, softplus, total

ACTIVATION = "sigmoid"


@dataclass(frozen=True)
class Loss:
    """A loss: each output's value, how many outputs the reported loss averages over, its gradient."""

    outputs: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (Z2, Y) : (n, K) -> (n, K) each output's loss
    count: Callable[[int, int], int]  # (n, K) -> what the summed loss is divided by
    delta: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (A2, Y) : (n, K) -> dLoss/dZ2 : (n, K)


LOSSES = {
    "bce": Loss(
        outputs=lambda Z2, Y: softplus(Z2 * (1 - 2 * Y)),  # -log s(z) = softplus(-z) if y = 1, softplus(z) if 0
        count=lambda n, k: n,
        delta=lambda A2, Y: (A2 - Y) / len(A2),
    ),
    "mse": Loss(
        outputs=lambda Z2, Y: np.square(sigmoid(Z2) - Y),
        count=lambda n, k: n * k,
        delta=lambda A2, Y: 2 * (A2 - Y) * A2 * (1 - A2) / A2.size,
    ),
}


# The network's parameters by name, the one list of them: the model file, the trace, training's copies,
# the explorer page (its embedded data carries this list to its JavaScript) all read it.
WEIGHTS = ("w1", "w2")
BIASES = ("b1", "b2")  # None when biases are off
PARAMETERS = WEIGHTS + BIASES
# Hidden units at most, in params.yaml (train.hidden) and in any model file a stage reads: the pictures draw a
# map per hidden unit (512: about 340 kB of PNG), and the explorer carries its weights.
MAX_HIDDEN = 512


@dataclass(eq=False)
class Network:
    """Weights and what is needed to use them without params.yaml. Not frozen: training moves
    w1, w2, b1 and b2 in place (`sgd_step`, `compiled.train_epoch`), and copies are taken explicitly."""

    w1: np.ndarray  # (30, H)
    w2: np.ndarray  # (H, K)
    b1: np.ndarray | None  # (H,) or None when biases are off
    b2: np.ndarray | None  # (K,) or None
    loss: str  # a key of LOSSES
    classes: tuple[str, ...]  # (K,) the names of the outputs
    trained_on: str = ""  # digest of the training set (artifacts.digest), "" if unknown

    @property
    def sizes(self) -> tuple[int, int, int]:
        return (self.w1.shape[0], self.w1.shape[1], self.w2.shape[1])

    @property
    def bias(self) -> bool:
        return self.b1 is not None

    def parameters(self) -> dict[str, np.ndarray]:
        """The network's arrays by name (PARAMETERS' order), the biases only when it has them."""
        return {name: getattr(self, name) for name in PARAMETERS if getattr(self, name) is not None}


def init_network(
    rng: np.random.Generator,
    inputs: int,
    hidden: int,
    classes: tuple[str, ...],
    loss: str,
    bias: bool,
    dtype: np.dtype | type = np.float64,
) -> Network:
    """An inputs-hidden-K network for K = len(classes): standard-normal weights, as in the tutorial, and
    zero biases. Drawn in float64 so every dtype starts alike."""
    k = len(classes)
    w1 = rng.standard_normal((inputs, hidden)).astype(dtype)
    w2 = rng.standard_normal((hidden, k)).astype(dtype)
    b1, b2 = (np.zeros(hidden, dtype), np.zeros(k, dtype)) if bias else (None, None)
    return Network(w1, w2, b1, b2, loss, tuple(classes))


def one_hot(y: np.ndarray, k: int, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """y : (n,) class indices -> (n, k) rows of 0/1 (laid out as (k, n) in memory, as the activations)."""
    return _identity(k, np.dtype(dtype)).take(y, axis=1).T


@functools.cache
def _identity(k: int, dtype: np.dtype) -> np.ndarray:
    identity = np.eye(k, dtype=dtype)
    identity.flags.writeable = False  # shared between calls
    return identity


def forward(net: Network, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (A1, Z2, A2) for X : (n, 30) of 0/1 pixels; Z2 are the output logits."""
    Z1 = pixels_matmul(X, net.w1)  # (n, 30) @ (30, H) -> (n, H), the same on every BLAS
    if net.b1 is not None:
        Z1 += net.b1
    A1 = sigmoid(Z1)
    Z2 = matmul(A1, net.w2)  # (n, H) @ (H, K) -> (n, K), summed over H in order
    if net.b2 is not None:
        Z2 += net.b2
    return A1, Z2, sigmoid(Z2)


def loss_value(loss: str, Z2: np.ndarray, y: np.ndarray, block: int = 4096) -> float:
    """The loss of logits Z2 : (n, K) against labels y : (n,), stable for any |Z2|.

    Per-example losses are computed `block` rows at a time (each pass then stays in the CPU cache, and
    memory stays small), then summed.
    """
    n, k = Z2.shape
    per_example = np.empty(n, Z2.dtype)
    for start in range(0, n, block):
        rows = slice(start, start + block)
        per_example[rows] = example_losses(loss, Z2[rows], y[rows])
    return total(per_example) / LOSSES[loss].count(n, k)


def example_losses(loss: str, Z2: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) each example's loss summed over the K outputs."""
    per_output = LOSSES[loss].outputs(Z2, one_hot(y, Z2.shape[1], Z2.dtype))
    return sum(per_output.T)  # the K outputs' columns, added in order


def backward(
    net: Network, X: np.ndarray, y: np.ndarray, activations: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Gradients of `loss_value(net.loss, ...)` with respect to every weight, keyed dW1, dW2, db1, db2.

    `activations` are forward(net, X)'s outputs, when the caller has them already.
    """
    A1, _, A2 = forward(net, X) if activations is None else activations
    dZ2 = LOSSES[net.loss].delta(A2, one_hot(y, A2.shape[1], A2.dtype))  # (n, K)
    dA1 = matmul(dZ2, net.w2.T)  # (n, K) @ (K, H) -> (n, H)
    dZ1 = dA1 * A1 * (1 - A1)  # (n, H)
    grads = {
        "dW1": pixels_matmul(X.T, dZ1),  # (30, n) @ (n, H) -> (30, H), the same on every BLAS
        "dW2": outer_sum(A1, dZ2),
    }  # A1^T dZ2 : (H, n) @ (n, K) -> (H, K)
    if net.bias:
        grads["db1"], grads["db2"] = column_sum(dZ1), column_sum(dZ2)
    return grads


def sgd_step(net: Network, X: np.ndarray, y: np.ndarray, lr: float) -> np.ndarray:
    """One plain gradient-descent step on the batch (X, y), in place; returns the logits Z2 : (n, K)
    the step computed on the way, before it moved the weights."""
    activations = forward(net, X)
    grads = backward(net, X, y, activations)
    net.w1 -= lr * grads["dW1"]  # in place: `-=` on an array writes into it
    net.w2 -= lr * grads["dW2"]
    if net.bias:
        net.b1 -= lr * grads["db1"]
        net.b2 -= lr * grads["db2"]
    return activations[1]


def logits(net: Network, X: np.ndarray, block: int = 4096) -> np.ndarray:
    """Z2 : (n, K) for X : (n, 30) pixels of any numeric dtype, `block` rows at a time (each row's
    logits depend on that row alone, so the block size does not change a bit)."""
    Z2 = np.empty((len(X), net.sizes[2]), dtype=net.w1.dtype)
    for start in range(0, len(X), block):
        rows = slice(start, start + block)
        Z2[rows] = forward(net, X[rows])[1]
    return Z2


def accuracy(Z2: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose largest logit is the label."""
    return float(np.mean(np.argmax(Z2, axis=1) == y))
