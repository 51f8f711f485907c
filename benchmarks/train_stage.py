"""The train stage as a user runs it, against scikit-learn and the tutorial's loop on the same samples.

    python benchmarks/train_stage.py [--rounds 2]

In a clone of this repository's HEAD (a temporary folder), `make_dataset` writes 300,000 noisy training
glyphs (`dataset.train_per_class: 100000`); then, for each (batch, epochs) of the engine issue's targets,
`python -m pipeline.train` runs as a whole process, engine `auto`, its start-up and the engine's load
counted (the engine made ready beforehand, once per machine: `python -m pipeline.compiled`). Beside each
run: scikit-learn's fit of the same number of epochs (`bench.sklearn`, one epoch timed and multiplied) and
the tutorial's loop (`bench.tutorial`, timed on 30,000 samples and scaled). Best of `--rounds` each.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parents[1]
RUNS = ((1024, 30, "scikit-learn", 6), (64, 10, "scikit-learn", 15), (1, 10, "tutorial loop", 60))


def set_params(project: Path, **values: int) -> None:
    path = project / "params.yaml"
    text = path.read_text()
    for key, value in values.items():
        text, found = re.subn(rf"^(  {key}: )\S+", rf"\g<1>{value}", text, flags=re.M)
        assert found == 1, key
    path.write_text(text)


def stage_seconds(project: Path, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=project, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
        set_params(project, train_per_class=100_000)
        subprocess.run([sys.executable, "-m", "pipeline.make_dataset"], cwd=project, check=True)
        X, y = bench.data(300_000)
        tutorial_epoch = min(bench.tutorial(X[:30_000], y[:30_000]) for _ in range(args.rounds)) * 10
        for batch, epochs, against, target in RUNS:
            set_params(project, batch_size=batch, epochs=epochs)
            ours = stage_seconds(project, args.rounds)
            if against == "scikit-learn":
                theirs = min(bench.sklearn(X, y, batch) for _ in range(args.rounds)) * epochs
            else:
                theirs = tutorial_epoch * epochs
            print(
                f"batch {batch:4}, {epochs} epochs: train stage {ours:.2f} s, {against} {theirs:.2f} s: "
                f"{theirs / ours:.1f}x (target {target}x: {'met' if theirs / ours >= target else 'missed'})",
                flush=True,
            )


if __name__ == "__main__":
    main()
