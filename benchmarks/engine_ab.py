"""The compiled engine of this working tree against an earlier revision's: its compile, then its speed.

    python benchmarks/engine_ab.py REV [--compiles 3] [--rounds 21] [--dtype float64]

REV is cloned into a temporary folder. Each round, each side runs `python -m pipeline.compiled DTYPE` as
a whole process into an empty cache of its own, the two in turn (so a drift of the machine's speed hits
both): the wall seconds of each, their medians and the median of the pairwise ratios. Then the two
entries are linked into this one process (`native.load_file`, as a run loads them) and each trains one
epoch of 40,000 noisy glyphs at batches 1, 64 and 1024, in turn, `--rounds` times: the best samples/s
of each and the median of the pairwise speed-ups; then this tree's with all the cores' threads
(batch 1024 only: smaller batches run in one thread). Both sides run with this checkout's Python.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import native, sgd  # noqa: E402
from pipeline.glyphs import CLASSES, PIXELS, clean_glyphs, noisy_copies  # noqa: E402
from pipeline.model import init_network  # noqa: E402


def compile_seconds(project: Path, cache: Path, dtype: str) -> float:
    """Wall seconds of `python -m pipeline.compiled dtype` in `project`, into the empty folder `cache`."""
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    env = os.environ | {"PIPELINE_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.compiled", dtype], cwd=project, env=env, check=True)
    return time.perf_counter() - start


def entry(cache: Path, dtype: str):
    """The C function of the one entry in `cache`, linked into this process."""
    (path,) = cache.glob(f"epoch-{dtype}-*.o")
    return native.load_file(path, dtype)


def native_of(project: Path):
    """`project`'s own pipeline/native.py, whose workspace layout and epoch call its entry expects (another
    revision's layout, given this tree's buffers, would have its entry write past their ends)."""
    if project == ROOT:
        return native
    spec = importlib.util.spec_from_file_location("native_of_" + project.name, project / "pipeline" / "native.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--compiles", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    args = parser.parse_args()
    if args.compiles < 1 or args.rounds < 1:  # each side's entry is the one its first compile writes
        parser.error("--compiles and --rounds: expected 1 or more")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp / "base")], check=True)
        subprocess.run(["git", "checkout", "-q", args.rev], cwd=tmp / "base", check=True)
        sides = {"this tree": (ROOT, tmp / "ours"), args.rev: (tmp / "base", tmp / "theirs")}
        seconds = {name: [] for name in sides}
        for _ in range(args.compiles):
            for name, (project, cache) in sides.items():
                seconds[name].append(compile_seconds(project, cache, args.dtype))
        ours, theirs = seconds.values()
        ratio = statistics.median(a / b for a, b in zip(ours, theirs))
        print(
            f"compile, {args.dtype}, empty cache, {args.compiles} rounds: this tree {statistics.median(ours):.1f} s, "
            f"{args.rev} {statistics.median(theirs):.1f} s, ratio {ratio:.2f}"
        )
        functions = [entry(cache, args.dtype) for _, cache in sides.values()]
        natives = [native_of(project) for project, _ in sides.values()]
        X, y = noisy_copies(clean_glyphs(), 40_000 // 3, 0.1, np.random.default_rng(0))
        y, dtype = y.astype(np.int64), np.dtype(args.dtype)
        T, none = native.tables(dtype), np.empty(0, dtype)
        cores = sgd.threads_wanted()
        for batch in (1, 64, 1024):
            shape = (len(X), batch, 5, len(CLASSES), X.shape[1], dtype)
            sides = [(function, own, own.workspace(*shape), 1) for function, own in zip(functions, natives)]
            if batch == 1024 and cores > 1:  # this tree's engine again, on all cores
                sides.append((functions[0], native, native.workspace(*shape, cores), cores))
            times = [[] for _ in sides]
            for _ in range(args.rounds):
                for side, (function, own, scratch, threads) in enumerate(sides):
                    net = init_network(np.random.default_rng(0), PIXELS, 5, CLASSES, "bce", False, dtype)
                    Z2 = np.empty((len(X), len(CLASSES)), dtype)
                    start = time.perf_counter()
                    order = np.arange(len(X))
                    args_ = (X, y, order, 0.1, batch, 0, net.w1, net.w2, none, none, Z2, T, scratch)
                    own.epoch(function, *args_, *([threads] if threads > 1 else []))
                    times[side].append(time.perf_counter() - start)
            speedup = statistics.median(b / a for a, b in zip(times[0], times[1]))
            line = (
                f"batch {batch:4}: this tree {len(X) / min(times[0]) / 1e6:.2f}M samples/s, {args.rev} "
                f"{len(X) / min(times[1]) / 1e6:.2f}M/s, speed-up {speedup:.3f} (median of {args.rounds} pairs)"
            )
            if len(sides) > 2:
                threaded = statistics.median(a / b for a, b in zip(times[0], times[2]))
                line += f"; {cores} threads {len(X) / min(times[2]) / 1e6:.2f}M/s, {threaded:.2f}x one thread"
            print(line, flush=True)


if __name__ == "__main__":
    main()
