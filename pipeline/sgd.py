"""The fast training loop: mini-batch SGD with preallocated buffers, for any batch size.

It computes exactly what `model.sgd_step` computes, without allocating per step. uint8 pixels are
converted to floats one block of rows at a time, so memory stays near the size of the uint8 data.
The loss and accuracy of an epoch are those of each example's forward pass just before its update
(as the tutorial records them), taken from the logits the step computes anyway.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.model import Network, accuracy, loss_value

BLOCK_ROWS = 8192  # rows converted to float at once: (8192, 30) float64 is 2 MiB, cache-sized


class Diverged(ArithmeticError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"loss became {value} at epoch {epoch}")
        self.epoch, self.value = epoch, value


@dataclass
class History:
    step: np.ndarray      # (epochs,) 1, 2, ...
    loss: np.ndarray      # (epochs,)
    accuracy: np.ndarray  # (epochs,)


class _Step:
    """The in-place SGD update for batches of exactly `m` rows, with every buffer preallocated.

    At batch size 1 the cost is the number of NumPy calls, so each one counts:
    - the step works on negated parameters (-W1, -W2, -b1, -b2), so the layers produce -Z directly
      and the sigmoid 1 / (1 + exp(-Z)) needs no negation;
    - constants are 0-d arrays of the training dtype; lr and 1/m are folded into dZ2 once;
    - for bce the output sigmoid is folded into dZ2:
          dZ2 = s (A2 - Y) = s / (1 + exp(-Z2)) - s Y,   s = lr / m,
      whose second term (`target`) is prepared for a whole block of rows at once.
    At large batch sizes the cost is exp (half the price of tanh in float64 here). exp(-z) overflows
    to inf for z < -709, which gives the correctly rounded sigmoid 0; `fit` silences that warning.
    """

    def __init__(self, neg: Network, m: int, lr: float) -> None:
        k, dtype = neg.sizes[2], neg.w1.dtype
        self.bce = neg.loss == "bce"
        self.scale = np.array(lr / m if self.bce else 2.0 * lr / (m * k), dtype)
        self.run = _update(neg, m, self.scale)

    def target(self, Y: np.ndarray) -> None:
        """Turn one-hot rows Y : (r, K), r a multiple of m, into this step's target, in place."""
        if self.bce:
            np.multiply(Y, -self.scale, out=Y)


def _update(neg: Network, m: int, scale: np.ndarray) -> Callable[..., None]:
    """A closure run(x, target, nz2, u2) that trains the negated parameters `neg` on x : (m, 30).

    It writes the pre-update -Z2 into nz2 and 1 + exp(-Z2) into u2 : (m, K); the epoch's loss comes
    from those without another exp.
    """
    (_, hidden, k), dtype = neg.sizes, neg.w1.dtype
    nw1, nw2, nb1, nb2 = neg.w1, neg.w2, neg.b1, neg.b2
    one, bce = np.array(1.0, dtype), neg.loss == "bce"
    e1, a1, t1, da1 = (np.empty((m, hidden), dtype) for _ in range(4))
    a2, dz2 = np.empty((m, k), dtype), np.empty((m, k), dtype)
    dw1, dw2, db1, db2 = np.empty_like(nw1), np.empty_like(nw2), np.empty(hidden, dtype), np.empty(k, dtype)
    a1T, nw2T = a1.T, nw2.T  # transposes are views: they follow the in-place updates
    dot, add, sub, mul, div, exp = np.dot, np.add, np.subtract, np.multiply, np.divide, np.exp

    def run(x: np.ndarray, target: np.ndarray, nz2: np.ndarray, u2: np.ndarray) -> None:
        dot(x, nw1, out=e1)                  # -Z1 = X (-W1) : (m, 30) @ (30, H) -> (m, H)
        if nb1 is not None:
            add(e1, nb1, out=e1)
        exp(e1, out=e1)
        add(e1, one, out=a1)
        div(one, a1, out=a1)                 # A1 = 1 / (1 + exp(-Z1))
        dot(a1, nw2, out=nz2)                # -Z2 = A1 (-W2) : (m, H) @ (H, K) -> (m, K)
        if nb2 is not None:
            add(nz2, nb2, out=nz2)
        exp(nz2, out=u2)
        add(u2, one, out=u2)                 # 1 + exp(-Z2) = 1 / A2
        if bce:                              # dZ2 = s A2 - s Y
            div(scale, u2, out=dz2)
            add(dz2, target, out=dz2)
        else:                                # dZ2 = s (A2 - Y) A2 (1 - A2), with target = Y
            div(one, u2, out=a2)
            sub(a2, target, out=dz2)
            mul(dz2, a2, out=dz2)
            sub(one, a2, out=a2)
            mul(dz2, a2, out=dz2)
            mul(dz2, scale, out=dz2)
        dot(dz2, nw2T, out=da1)              # -dA1 = dZ2 (-W2)^T : (m, K) @ (K, H) -> (m, H), before W2 moves
        dot(a1T, dz2, out=dw2)               # dW2 = A1^T dZ2 : (H, m) @ (m, K) -> (H, K)
        add(nw2, dw2, out=nw2)               # -(W2 - dW2)
        mul(a1, a1, out=t1)
        sub(a1, t1, out=t1)                  # A1 (1 - A1)
        mul(da1, t1, out=da1)                # -dZ1
        dot(x.T, da1, out=dw1)               # -dW1 : (30, m) @ (m, H) -> (30, H)
        sub(nw1, dw1, out=nw1)               # -(W1 - dW1)
        if nb1 is not None:
            sub(nb1, np.sum(da1, axis=0, out=db1), out=nb1)
            add(nb2, np.sum(dz2, axis=0, out=db2), out=nb2)

    return run


def fit(net: Network, X: np.ndarray, y: np.ndarray, *, lr: float, epochs: int, batch_size: int,
        shuffle: bool, rng: np.random.Generator,
        on_epoch: Callable[[int, float, float], None] | None = None) -> History:
    """Train `net` in place on X : (N, 30) uint8 and y : (N,) labels; raise Diverged on a non-finite loss.

    `on_epoch(epoch, loss, accuracy)` is called after every epoch (for progress display).
    """
    neg = _negated(net)
    run = _Epoch(neg, X, y, lr, batch_size)
    history = History(np.arange(1, epochs + 1), np.zeros(epochs), np.zeros(epochs))
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a runaway loss is reported once, as Diverged
            for i in range(epochs):
                order = rng.permutation(len(X)) if shuffle else None
                z2, u2, labels = run(order)
                history.loss[i], history.accuracy[i] = epoch_loss(net.loss, z2, u2, labels), accuracy(z2, labels)
                if not np.isfinite(history.loss[i]):
                    raise Diverged(i + 1, history.loss[i])
                if on_epoch is not None:
                    on_epoch(i + 1, history.loss[i], history.accuracy[i])
    finally:
        for mine, negated in zip(_arrays(net), _arrays(neg)):
            np.negative(negated, out=mine)
    return history


def _arrays(net: Network) -> list[np.ndarray]:
    return [a for a in (net.w1, net.w2, net.b1, net.b2) if a is not None]


def _negated(net: Network) -> Network:
    """A copy of `net` with every parameter negated: the form the steps train (see _Step)."""
    b1, b2 = (None, None) if net.b1 is None else (-net.b1, -net.b2)
    return Network(-net.w1, -net.w2, b1, b2, net.loss, net.classes)


def epoch_loss(loss: str, Z2: np.ndarray, U2: np.ndarray, y: np.ndarray) -> float:
    """`model.loss_value(loss, Z2, y)` from U2 = 1 + exp(-Z2) as the steps left it: a log, not an exp and a log1p.

    Where exp(-Z2) overflowed (Z2 < -709) U2 is inf, and the exact loss is taken from Z2 instead.
    """
    n, k = Z2.shape
    if loss == "bce":  # per output: log(1 + exp(-z)) + (1 - y) z
        value = (np.log(U2).sum() + Z2.sum() - _label_sum(Z2, y)) / n
    else:              # sum (A - Y)^2 = sum A^2 - 2 sum A[i, y_i] + n, with A = 1 / U2
        A2 = np.reciprocal(U2)
        value = (np.square(A2).sum() - 2 * _label_sum(A2, y) + n) / (n * k)
    return float(value) if np.isfinite(value) else loss_value(loss, Z2, y)


def _label_sum(M: np.ndarray, y: np.ndarray) -> float:
    """sum_i M[i, y_i] for M : (n, K), by masked column sums (no index arrays the size of M)."""
    return float(sum(np.sum(M[:, c], where=(y == c)) for c in range(M.shape[1])))


class _Epoch:
    """One pass over the data in a given order, converting a block of rows to floats at a time."""

    def __init__(self, neg: Network, X: np.ndarray, y: np.ndarray, lr: float, batch_size: int) -> None:
        n, k, dtype = len(X), neg.sizes[2], neg.w1.dtype
        self.X, self.y, self.bs = X, y, min(batch_size, n)
        self.full = _Step(neg, self.bs, lr) if n else None
        self.last = _Step(neg, n % self.bs, lr) if n and n % self.bs else None  # the short last batch
        self.block = max(1, BLOCK_ROWS // self.bs) * self.bs if n else 1  # whole batches only
        rows = min(self.block, n)
        self.xf, self.tf = np.empty((rows, X.shape[1]), dtype), np.empty((rows, k), dtype)
        self.eye = np.eye(k, dtype=dtype)
        self.z2 = np.empty((n, k), dtype)  # every example's logits just before its update (negated while training)
        self.u2 = np.empty((n, k), dtype)  # and 1 + exp(-z2), for the loss

    def __call__(self, order: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Train one epoch; return the pre-update Z2 and 1 + exp(-Z2) (N, K), and the labels in visiting order."""
        n, bs, k = len(self.X), self.bs, self.eye.shape[0]
        for start in range(0, n, self.block):
            m = min(self.block, n - start)
            idx = slice(start, start + m) if order is None else order[start:start + m]
            x, t, z2, u2 = self.xf[:m], self.tf[:m], self.z2[start:start + m], self.u2[start:start + m]
            np.copyto(x, self.X[idx])
            np.take(self.eye, self.y[idx], axis=0, out=t)
            whole = m // bs * bs
            self.full.target(t[:whole])
            # Iterating 3-d views hands each batch to the step without slicing in Python.
            for xb, tb, zb, ub in zip(x[:whole].reshape(-1, bs, x.shape[1]), t[:whole].reshape(-1, bs, k),
                                      z2[:whole].reshape(-1, bs, k), u2[:whole].reshape(-1, bs, k)):
                self.full.run(xb, tb, zb, ub)
            if whole < m:
                self.last.target(t[whole:])
                self.last.run(x[whole:], t[whole:], z2[whole:], u2[whole:])
        np.negative(self.z2, out=self.z2)  # the steps wrote -Z2
        return self.z2, self.u2, self.y if order is None else self.y[order]
