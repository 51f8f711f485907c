"""Where one training step's time goes: model.sgd_step and each of its pieces, timed alone.

    python benchmarks/profile_step.py [--batch 1024] [--dtype float64] [--loss bce]

Times the real functions (pipeline.model and pipeline.portable), each on the arrays the step gives
it, as medians of 5 repeats, and NumPy's own exp beside the portable one. Use it to see what bounds
the trainer: at batch 1 the number of NumPy calls (each costs about half a microsecond however small
its array), at large batches the passes over the arrays.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import numpy as np

from pipeline import portable
from pipeline.glyphs import CLASSES, PIXELS
from pipeline.model import LOSSES, backward, forward, init_network, one_hot, sgd_step


def pieces(m: int, dtype: str, loss: str) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    net = init_network(rng, PIXELS, 5, CLASSES, loss, False, np.dtype(dtype))
    X = rng.integers(0, 2, (m, 30)).astype(np.float64)
    y = rng.integers(0, 3, m).astype(np.uint8)
    A1, Z2, A2 = activations = forward(net, X)
    Z1 = portable.pixels_matmul(X, net.w1)
    dZ2 = LOSSES[loss].delta(A2, one_hot(y, 3, A2.dtype))
    dA1 = portable.matmul(dZ2, net.w2.T)
    dZ1 = dA1 * A1 * (1 - A1)
    return {
        "sgd_step (all of it)": lambda: sgd_step(net, X, y, 1e-30),  # a learning rate too small to drift
        "forward": lambda: forward(net, X),
        "  pixels_matmul  X W1       (m,30)@(30,5)": lambda: portable.pixels_matmul(X, net.w1),
        "  sigmoid        hidden     (m,5)": lambda: portable.sigmoid(Z1),
        "  matmul         A1 W2      (m,5)@(5,3)": lambda: portable.matmul(A1, net.w2),
        "  sigmoid        output     (m,3)": lambda: portable.sigmoid(Z2),
        "backward (given forward's outputs)": lambda: backward(net, X, y, activations),
        "  one_hot, loss delta       (m,3)": lambda: LOSSES[loss].delta(A2, one_hot(y, 3, A2.dtype)),
        "  matmul         dZ2 W2^T   (m,3)@(3,5)": lambda: portable.matmul(dZ2, net.w2.T),
        "  dA1 A1 (1 - A1)           (m,5)": lambda: dA1 * A1 * (1 - A1),
        "  pixels_matmul  X^T dZ1    (30,m)@(m,5)": lambda: portable.pixels_matmul(X.T, dZ1),
        "  outer_sum      A1^T dZ2   (5,m)@(m,3)": lambda: portable.outer_sum(A1, dZ2),
        "portable.exp     hidden     (m,5)": lambda: portable.exp(Z1),
        "np.exp (not portable)       (m,5)": lambda: np.exp(Z1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--loss", default="bce", choices=["bce", "mse"])
    args = parser.parse_args()
    number = max(20, 100_000 // args.batch)
    times = {
        label: np.median(timeit.repeat(call, number=number, repeat=5)) / number
        for label, call in pieces(args.batch, args.dtype, args.loss).items()
    }
    step = times["sgd_step (all of it)"]
    print(
        f"one {args.loss} step at batch {args.batch}, {args.dtype}: {step * 1e6:.1f} us, "
        f"{args.batch / step:,.0f} samples/s"
    )
    for label, t in times.items():
        print(f"  {label:40s} {t * 1e6:9.2f} us  {100 * t / step:5.1f}% of the step")


if __name__ == "__main__":
    main()
