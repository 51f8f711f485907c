"""The same grid two ways: a sweep on Dask (pipeline/sweep/) and DVC's experiment queue.

    python benchmarks/sweep_vs_queue.py [--rev REV] [--workers 2]

In a temporary clone of this repository at REV (HEAD by default; after its `dvc repro`, not timed), it runs a
24-setting grid (lr x batch size x loss x biases, on params.yaml's data set) as
1. `python -m pipeline.sweep` on a LocalCluster of `--workers` processes, keeping none: the whole command,
   the cluster's start and stop included;
2. `dvc exp run --queue --name q-N -S ...` for each setting, then `dvc queue start -j WORKERS`, until the
   24 experiments are done (their refs counted with git, which costs DVC nothing);
then prints both wall times and their ratio, and checks that each experiment's metrics/metrics.json is the
sweep's trial, byte for byte. The clone is removed afterwards; this repository is not touched.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = {
    "train.lr": [0.1, 0.3, 1.0],
    "train.batch_size": [1, 3],
    "train.loss": ["bce", "mse"],
    "train.bias": [False, True],
}


def run(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True, **kwargs)


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd)


def value(v: object) -> str:
    """As YAML and `dvc exp run -S` read it: true, 0.3, bce."""
    return v if isinstance(v, str) else json.dumps(v)


def setting_args(setting: dict[str, object]) -> list[str]:
    return [a for key, v in setting.items() for a in ("-S", f"{key}={value(v)}")]


def time_sweep(clone: Path, workers: int) -> float:
    lines = "".join(f"  {key}: [{', '.join(value(v) for v in values)}]\n" for key, values in GRID.items())
    (clone / "sweeps/bench.yaml").write_text(f"metric: test.accuracy\ngoal: max\nkeep: 0\ngrid:\n{lines}")
    start = time.monotonic()
    run([sys.executable, "-m", "pipeline.sweep", "sweeps/bench.yaml", "--workers", str(workers)], clone)
    return time.monotonic() - start


def time_queue(clone: Path, settings: list[dict[str, object]], workers: int) -> tuple[float, float]:
    """(seconds to queue them, seconds from there until all are done)."""
    start = time.monotonic()
    for i, setting in enumerate(settings, start=1):
        dvc(clone, "exp", "run", "--queue", "--name", f"q-{i}", *setting_args(setting))
    queued = time.monotonic()
    dvc(clone, "queue", "start", "-j", str(workers))
    while len(experiment_refs(clone)) < len(settings):
        time.sleep(0.5)
    done = time.monotonic()
    return queued - start, done - queued


def experiment_refs(clone: Path) -> dict[str, str]:
    out = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], clone).stdout.split()
    return {ref.rsplit("/", 1)[1]: ref for ref in out if ref.rsplit("/", 1)[1].startswith("q-")}


def same_bytes(clone: Path, n: int) -> int:
    """How many queued experiments wrote exactly a sweep trial's metrics.json (trial order = queue order)."""
    texts = {p.name: json.loads(p.read_text())["metrics"] for p in (clone / ".sweep-cache").glob("*.json")}
    refs = experiment_refs(clone)
    found = [run(["git", "show", f"{refs[f'q-{i}']}:metrics/metrics.json"], clone).stdout for i in range(1, n + 1)]
    return sum(text in texts.values() for text in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    settings = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    with tempfile.TemporaryDirectory(prefix="sweep-vs-queue-") as tmp:
        clone = Path(tmp) / "clone"
        run(["git", "clone", "-q", str(ROOT), str(clone)], ROOT)
        run(["git", "checkout", "-q", args.rev], clone)
        dvc(clone, "repro")  # both start from a built workspace
        sweep = time_sweep(clone, args.workers)
        queueing, running = time_queue(clone, settings, args.workers)
        dvc(clone, "queue", "stop")
        matching = same_bytes(clone, len(settings))
    total = queueing + running
    print(f"{len(settings)} settings, {args.workers} workers, at {args.rev}")
    print(f"sweep (python -m pipeline.sweep, LocalCluster):  {sweep:7.1f} s")
    print(f"DVC queue (--queue each, queue start -j {args.workers}):    {total:7.1f} s  ({queueing:.1f} s queueing)")
    print(f"ratio: the sweep is {total / sweep:.1f}x faster")
    print(f"{matching} of {len(settings)} experiments wrote one of the sweep's metrics files, byte for byte")


if __name__ == "__main__":
    main()
