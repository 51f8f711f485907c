"""The training loop: mini-batch SGD over uint8 pixels, one `model.sgd_step` per batch.

uint8 pixels become floats one block of rows at a time, so memory stays near the size of the uint8
data. An epoch's loss and accuracy are those of each example's forward pass just before its update
(as the tutorial records them): the logits each step computed on the way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.model import Network, accuracy, loss_value, sgd_step
from pipeline.portable import exp_limit

BLOCK_ROWS = 8192  # rows converted to float at once: (8192, 30) float64 is 2 MiB, cache-sized


class Diverged(ArithmeticError):
    """The loss became NaN or infinite, or the logits left the range where exp is computed."""

    def __init__(self, epoch: int, loss: float, largest: float, limit: float) -> None:
        if np.isfinite(loss):
            super().__init__(f"logits reached {largest:.3g} at epoch {epoch}, beyond exp's range ±{limit:g}")
        else:
            super().__init__(f"loss became {loss} at epoch {epoch}")
        self.epoch, self.loss = epoch, loss


@dataclass
class History:
    step: np.ndarray  # (epochs,) 1, 2, ...
    loss: np.ndarray  # (epochs,)
    accuracy: np.ndarray  # (epochs,)


def fit(
    net: Network,
    X: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> History:
    """Train `net` in place on X : (N, 30) uint8 and y : (N,) labels; raise Diverged on a non-finite loss.

    `on_epoch(epoch, loss, accuracy)` is called after every epoch (for progress display).
    """
    limit = exp_limit(net.w1.dtype)  # beyond it sigmoid and softplus clip: the run has blown up
    history = History(np.arange(1, epochs + 1), np.zeros(epochs), np.zeros(epochs))
    Z2 = np.empty((len(X), net.sizes[2]), net.w1.dtype)  # each example's logits just before its update
    with np.errstate(over="ignore", invalid="ignore"):  # a runaway loss is reported once, as Diverged
        for i in range(epochs):
            order = rng.permutation(len(X)) if shuffle else np.arange(len(X))
            train_epoch(net, X, y, order, lr, batch_size, Z2)
            visited = y[order]
            history.loss[i], history.accuracy[i] = loss_value(net.loss, Z2, visited), accuracy(Z2, visited)
            largest = float(np.max(np.abs(Z2), initial=0.0))
            if not np.isfinite(history.loss[i]) or largest > limit:
                raise Diverged(i + 1, history.loss[i], largest, limit)
            if on_epoch is not None:
                on_epoch(i + 1, history.loss[i], history.accuracy[i])
    return history


def train_epoch(
    net: Network, X: np.ndarray, y: np.ndarray, order: np.ndarray, lr: float, batch_size: int, Z2: np.ndarray
) -> None:
    """One pass over the examples in `order`, batch by batch; Z2[i] gets the i-th visited example's logits."""
    block = max(1, BLOCK_ROWS // batch_size) * batch_size  # whole batches only
    for start in range(0, len(order), block):
        visit = order[start : start + block]
        pixels, labels = X[visit].astype(np.float64), y[visit]
        for first in range(0, len(visit), batch_size):
            rows = slice(first, first + batch_size)
            Z2[start + first : start + first + len(labels[rows])] = sgd_step(net, pixels[rows], labels[rows], lr)
