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

from pipeline.model import Network, accuracy, loss_value, sigmoid

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
    """Buffers for one batch of up to `size` rows and the in-place update that uses them."""

    def __init__(self, net: Network, size: int, lr: float) -> None:
        dtype, (_, hidden, k) = net.w1.dtype, net.sizes
        self.net, self.lr, self.dtype = net, lr, dtype
        self.z1, self.a1, self.t1, self.da1 = (np.empty((size, hidden), dtype) for _ in range(4))
        self.a2, self.dz2, self.t2 = (np.empty((size, k), dtype) for _ in range(3))
        self.dw1, self.dw2 = np.empty_like(net.w1), np.empty_like(net.w2)
        self.db1, self.db2 = np.empty(hidden, dtype), np.empty(k, dtype)
        self.views = {size: self._views(size)}

    def _views(self, m: int) -> tuple[np.ndarray, ...]:
        return self.z1[:m], self.a1[:m], self.t1[:m], self.da1[:m], self.a2[:m], self.dz2[:m], self.t2[:m]

    def __call__(self, x: np.ndarray, y: np.ndarray, z2: np.ndarray) -> None:
        """x : (m, 30), y : (m, K) one-hot; writes the pre-update logits into z2 : (m, K)."""
        net, m = self.net, len(x)
        views = self.views.get(m) or self.views.setdefault(m, self._views(m))
        z1, a1, t1, da1, a2, dz2, t2 = views
        np.matmul(x, net.w1, out=z1)             # (m, 30) @ (30, H) -> (m, H)
        if net.b1 is not None:
            z1 += net.b1
        sigmoid(z1, out=a1)
        np.matmul(a1, net.w2, out=z2)            # (m, H) @ (H, K) -> (m, K)
        if net.b2 is not None:
            z2 += net.b2
        sigmoid(z2, out=a2)
        np.subtract(a2, y, out=dz2)              # dZ2, scaled by lr below so the updates need no multiply
        if net.loss == "mse":
            np.subtract(1.0, a2, out=t2)
            dz2 *= a2
            dz2 *= t2
            dz2 *= self.dtype.type(2.0 * self.lr / (m * a2.shape[1]))
        else:
            dz2 *= self.dtype.type(self.lr / m)
        np.matmul(dz2, net.w2.T, out=da1)        # (m, K) @ (K, H) -> (m, H), with W2 before its update
        np.matmul(a1.T, dz2, out=self.dw2)       # (H, m) @ (m, K) -> (H, K)
        np.subtract(net.w2, self.dw2, out=net.w2)
        np.subtract(1.0, a1, out=t1)
        da1 *= a1
        da1 *= t1                                # dZ1 = dA1 * A1 * (1 - A1)
        np.matmul(x.T, da1, out=self.dw1)        # (30, m) @ (m, H) -> (30, H)
        np.subtract(net.w1, self.dw1, out=net.w1)
        if net.b1 is not None:
            np.subtract(net.b1, np.sum(da1, axis=0, out=self.db1), out=net.b1)
            np.subtract(net.b2, np.sum(dz2, axis=0, out=self.db2), out=net.b2)


def fit(net: Network, X: np.ndarray, y: np.ndarray, *, lr: float, epochs: int, batch_size: int,
        shuffle: bool, rng: np.random.Generator,
        on_epoch: Callable[[int, float, float], None] | None = None) -> History:
    """Train `net` in place on X : (N, 30) uint8 and y : (N,) labels; raise Diverged on a non-finite loss.

    `on_epoch(epoch, loss, accuracy)` is called after every epoch (for progress display).
    """
    run = _Epoch(net, X, y, lr, batch_size)
    history = History(np.arange(1, epochs + 1), np.zeros(epochs), np.zeros(epochs))
    with np.errstate(over="ignore", invalid="ignore"):  # a runaway loss is reported once, as Diverged
        for i in range(epochs):
            order = rng.permutation(len(X)) if shuffle else None
            z2, labels = run(order)
            history.loss[i], history.accuracy[i] = loss_value(net.loss, z2, labels), accuracy(z2, labels)
            if not np.isfinite(history.loss[i]):
                raise Diverged(i + 1, history.loss[i])
            if on_epoch is not None:
                on_epoch(i + 1, history.loss[i], history.accuracy[i])
    return history


class _Epoch:
    """One pass over the data in a given order, converting a block of rows to floats at a time."""

    def __init__(self, net: Network, X: np.ndarray, y: np.ndarray, lr: float, batch_size: int) -> None:
        n, k, dtype = len(X), net.sizes[2], net.w1.dtype
        self.X, self.y, self.batch_size = X, y, batch_size
        self.step = _Step(net, min(batch_size, n), lr)
        self.block = max(1, BLOCK_ROWS // batch_size) * batch_size  # whole batches only
        rows = min(self.block, n)
        self.xf, self.yf = np.empty((rows, X.shape[1]), dtype), np.empty((rows, k), dtype)
        self.eye = np.eye(k, dtype=dtype)
        self.z2 = np.empty((n, k), dtype)  # every example's logits just before its update

    def __call__(self, order: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Train one epoch; return the pre-update logits (N, K) and the labels in visiting order."""
        n, bs = len(self.X), self.batch_size
        for start in range(0, n, self.block):
            rows = slice(start, min(start + self.block, n))
            m = rows.stop - rows.start
            idx = rows if order is None else order[rows]
            np.copyto(self.xf[:m], self.X[idx])
            np.take(self.eye, self.y[idx], axis=0, out=self.yf[:m])
            for b in range(0, m, bs):
                e = min(b + bs, m)  # the last batch may be short
                self.step(self.xf[b:e], self.yf[b:e], self.z2[start + b:start + e])
        return self.z2, self.y if order is None else self.y[order]
