"""Where the compiled engine's time goes: each kernel of one training step, and an epoch's loss, timed alone.

    python benchmarks/profile_compiled.py [--batch 1024] [--dtype float64]

Runs pipeline/compiled.py's kernels on the arrays a batch of noisy glyphs gives them (30-5-3, bce, no
biases) and prints nanoseconds per example for each, best of 5 repeats, then the whole step (the sum)
and the rate it implies. A kernel called once per batch costs its time divided by the batch size, so
at batch 1 the fixed costs of each call show. Timings on a shared machine are noisy: compare rows of
one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from pipeline import compiled, native
from pipeline.compiled import from_python
from pipeline.glyphs import CLASSES, PIXELS, clean_glyphs, noisy_copies
from pipeline.model import init_network


def kernels(m: int, dtype: np.dtype) -> dict[str, Callable[[], object]]:
    """The step's kernels in order, each a closure over its own arrays (as `compiled.train_epoch` makes them)."""
    X, y = noisy_copies(clean_glyphs(), max(m, 3000) // 3, 0.1, np.random.default_rng(0))
    net = init_network(np.random.default_rng(0), PIXELS, 5, CLASSES, "bce", False, dtype)
    H, K, T, none = 5, 3, native.tables(dtype), np.empty(0, dtype)
    rows, labels = np.arange(m), y[:m].astype(np.int64)
    bytes_, floats, ints, typed = (
        np.empty(PIXELS * m, np.uint8),
        np.empty(4 * H * m),
        np.empty(2 * H * m, np.int64),
        np.empty(3 * (H + K) * m, dtype),
    )
    P, acc1, acc2, G1, G2, N1, N2, Z1, A1, dZ1, Z2, A2, dZ2 = compiled.batch_arrays(
        bytes_, floats, ints, typed, PIXELS, H, K, m
    )
    S1, S2, dW1 = np.empty((1, PIXELS * H)), np.empty((1, PIXELS * H)), np.empty((PIXELS, H), dtype)
    rows_k = compiled.SUMMARY_ROWS * K
    W, stack = native.scratch_rows(max(m * H, rows_k), dtype), np.empty((3, 64), np.int64)
    values = np.empty(64, dtype)
    z, target, out, per_example = (np.empty(n, dtype) for n in (rows_k, rows_k, rows_k, m))
    counts, scratch = np.array([m, m * K], dtype), np.empty(m, dtype)
    bounds, sums, partials = (
        np.array([0, m], np.int64),
        np.empty((H * K + H + K, 1), dtype),
        np.empty((1, 2, PIXELS, H), np.int64),
    )
    w1_row, zero, one, lr = net.w1.reshape(1, -1), dtype.type(0), dtype.type(1), dtype.type(1e-9)
    Z2_all = np.zeros((m, K), dtype)
    return {
        "pixel_rows (one pixel a row)": lambda: from_python(compiled.pixel_rows)(X, rows, 0, m, P),
        "forward: slices of w1, X W1, sigmoids, A1 W2": lambda: from_python(compiled.forward)(
            P, 0, m, w1_row, net.w2, none, none, S1, S2, acc1, acc2, Z1, A1, Z2, A2, T, W
        ),
        "  of which the two sigmoid passes": lambda: (
            from_python(compiled.sigmoid_row)(Z1.reshape(-1), H * m, A1.reshape(-1), T, W),
            from_python(compiled.sigmoid_row)(Z2.reshape(-1), K * m, A2.reshape(-1), T, W),
        ),
        "loss_gradient": lambda: from_python(compiled.loss_gradient)(0, labels, 0, m, A2, dZ2, counts),
        "hidden_delta": lambda: from_python(compiled.hidden_delta)(net.w2, dZ2, A1, dZ1, 0, m, one),
        "pixel_gradient (X^T dZ1, integer sums)": lambda: from_python(compiled.pixel_gradient)(
            P, dZ1, m, dW1, G1, G2, N1, N2, partials
        ),
        "update (dW2, biases: pairwise sums)": lambda: (
            from_python(compiled.batch_sums)(A1, dZ1, dZ2, bounds, 0, 1, False, scratch, zero, stack, values, sums),
            from_python(compiled.update)(lr, net.w1, net.w2, none, none, dW1, sums, 1, zero),
        ),
        "summarize (the loss and accuracy of the batch)": lambda: from_python(compiled.summarize)(
            0, Z2_all, labels, 0, m, per_example, z, target, out, T, W
        ),
    }


def best(f: Callable[[], object], repeats: int) -> float:
    f()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            f()
        times.append((time.perf_counter() - start) / repeats)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    args = parser.parse_args()
    compiled.compile_ahead()
    m, total = args.batch, 0.0
    print(f"compiled engine, batch {m}, {args.dtype}: ns per example (each kernel timed alone)")
    for name, f in kernels(m, np.dtype(args.dtype)).items():
        ns = best(f, max(1, 20_000 // m)) / m * 1e9
        total += 0.0 if name.startswith("  ") else ns
        print(f"  {name:46s} {ns:8.1f}")
    print(f"  {'a step and its loss, summed':46s} {total:8.1f}  ({1e9 / total:,.0f} examples/s)")


if __name__ == "__main__":
    main()
