"""The test suite's wall time at a git revision and in the working tree, measured one after the other.

    python benchmarks/suite_time.py --before REV [--rounds 1]

Each round runs `python -m pytest` (the README's test command, in this environment) in a temporary
git worktree of REV, then in this working tree, and prints both wall times and their ratio. The worktree
sits beside this one, so that tests which look for the workplace's tools at ../shared find them in
both. Timings on a shared machine are noisy: compare the ratio of times measured side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def suite(cwd: Path) -> tuple[float, str]:
    """Wall seconds of `python -m pytest -q` in `cwd`, and its last line (the counts)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
    return seconds, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, metavar="REV", help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    before = ROOT.parent / f".suite-before-{args.before}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-f", str(before), args.before],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        for round_ in range(1, args.rounds + 1):
            old, old_counts = suite(before)
            new, new_counts = suite(ROOT)
            print(
                f"round {round_}: {args.before} {old:.0f} s ({old_counts}) | working tree {new:.0f} s "
                f"({new_counts}) | ratio {new / old:.2f}",
                flush=True,
            )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
