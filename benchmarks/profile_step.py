"""Where one training step's time goes: every NumPy call of a bce step, timed alone, at a given batch size.

    python benchmarks/profile_step.py [--batch 1024] [--dtype float64]

Prints each call's median time and share, grouped as in pipeline/sgd.py. Use it to see what
bounds the trainer: at batch 1 the per-call overhead, at large batches exp and the skinny matmuls.
"""
from __future__ import annotations

import argparse
import timeit

import numpy as np


def calls() -> dict[str, str]:
    return {
        "dot  X (-W1)          (m,30)@(30,5)": "np.dot(x, nw1, out=e1)",
        "exp  hidden           (m,5)": "np.exp(z1, out=e1)",
        "add  1 + e            (m,5)": "np.add(e1, one, out=a1)",
        "div  1 / (1 + e)      (m,5)": "np.divide(one, a1, out=a1)",
        "dot  A1 (-W2)         (m,5)@(5,3)": "np.dot(a1, nw2, out=nz2)",
        "exp  output           (m,3)": "np.exp(z2, out=u2)",
        "add  1 + e            (m,3)": "np.add(u2, one, out=u2)",
        "div  s / u2           (m,3)": "np.divide(scale, u2, out=dz2)",
        "add  + target         (m,3)": "np.add(dz2, target, out=dz2)",
        "dot  dZ2 (-W2)^T      (m,3)@(3,5)": "np.dot(dz2, nw2T, out=da1)",
        "dot  A1^T dZ2         (5,m)@(m,3)": "np.dot(a1T, dz2, out=dw2)",
        "add  W2 update        (5,3)": "np.add(nw2, dw2, out=nw2)",
        "mul  A1 A1            (m,5)": "np.multiply(a1, a1, out=t1)",
        "sub  A1 - A1^2        (m,5)": "np.subtract(a1, t1, out=t1)",
        "mul  dZ1              (m,5)": "np.multiply(da1, t1, out=da1)",
        "dot  X^T dZ1          (30,m)@(m,5)": "np.dot(x.T, da1, out=dw1)",
        "sub  W1 update        (30,5)": "np.subtract(nw1, dw1, out=nw1)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    args = parser.parse_args()
    m, dt = args.batch, np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    env = {"np": np, "x": rng.integers(0, 2, (m, 30)).astype(dt), "nw1": rng.standard_normal((30, 5)).astype(dt),
           "nw2": rng.standard_normal((5, 3)).astype(dt), "one": np.array(1.0, dt), "scale": np.array(0.1 / m, dt),
           "target": np.zeros((m, 3), dt)}
    for name, shape in {"z1": (m, 5), "z2": (m, 3), "e1": (m, 5), "a1": (m, 5), "t1": (m, 5), "da1": (m, 5), "nz2": (m, 3), "u2": (m, 3),
                        "dz2": (m, 3), "dw1": (30, 5), "dw2": (5, 3)}.items():
        env[name] = np.abs(rng.standard_normal(shape)).astype(dt) + 1
    env["a1T"], env["nw2T"] = env["a1"].T, env["nw2"].T
    number = max(10, 200_000 // m)
    with np.errstate(all="ignore"):  # repeated in-place updates drift; only the time matters here
        times = {label: np.median([timeit.timeit(stmt, globals=env, number=number) / number for _ in range(5)])
                 for label, stmt in calls().items()}
    total = sum(times.values())
    print(f"one bce step at batch {m}, {args.dtype}: {total * 1e6:.1f} us for its NumPy calls "
          f"({m / total:,.0f} samples/s before any Python overhead)")
    for label, t in times.items():
        print(f"  {label:36s} {t * 1e6:8.2f} us  {100 * t / total:5.1f}%")
    for kind in ("dot", "exp", "add", "sub", "mul", "div"):
        share = sum(t for label, t in times.items() if label.startswith(kind)) / total
        print(f"  all {kind}: {100 * share:.0f}%", end="")
    print()


if __name__ == "__main__":
    main()
