#!/usr/bin/env python3
"""Writes the figures the docs quote from their one source: metrics/metrics.json, sweeps/*.tsv.

A page holds a figure between two marker lines, `<!-- figures: NAME -->` and `<!-- /figures -->`; this
script replaces what lies between them with RENDER[NAME]'s text, so a figure is never typed by hand.
Run it after `dvc repro` or a sweep changes a source (`--check` only reports; tests/test_docs.py fails
while a page and its source disagree). Regions with no renderer hold tables a test checks cell by cell.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/*.md", "benchmarks/README.md"]
REGION = re.compile(r"^<!-- figures: ([\w-]+) -->\n(.*?)^<!-- /figures -->$", flags=re.M | re.S)


def pages(root: Path = ROOT) -> list[Path]:
    """Every Markdown page of the docs, README first."""
    return [path for pattern in PAGES for path in sorted(root.glob(pattern))]


def regions(root: Path = ROOT) -> dict[str, tuple[Path, str]]:
    """NAME -> (its page, the text between its markers) for every figures region of the docs."""
    found: dict[str, tuple[Path, str]] = {}
    for page in pages(root):
        for name, body in REGION.findall(page.read_text()):
            if name in found:
                raise ValueError(f"{page}: figures region {name!r} is also in {found[name][0]}")
            found[name] = (page, body)
    return found


def table(rows: list[list[str]]) -> str:
    """A Markdown table: the first row is the header."""
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines) + "\n"


def metrics(root: Path) -> str:
    """The committed default model's figures, from metrics/metrics.json (and params.yaml's noise, loss)."""
    m = json.loads((root / "metrics/metrics.json").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    noise, loss = params["dataset"]["noise"], params["train"]["loss"]
    test = f"noisy test set ({noise:.0%} of pixels flipped)"
    scores = table(
        [
            ["", "accuracy", f"loss ({loss})"],
            ["training glyphs", f"{m['train']['accuracy']:.3f}", f"{m['train']['loss']:.3f}"],
            [test, f"{m['test']['accuracy']:.3f}", f"{m['test']['loss']:.3f}"],
            ["moved training glyphs (`moved.clean`)", f"{m['moved']['clean']:.3f}", ""],
            ["their noisy copies (`moved.noisy`)", f"{m['moved']['noisy']:.3f}", ""],
        ]
    )
    levels = [key.removeprefix("noise_").replace("_", ".", 1) for key in m["robustness"]]
    robustness = table([["noise", *levels], ["test accuracy", *(f"{v:.3f}" for v in m["robustness"].values())]])
    return scores + "\n" + robustness


def tsv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def robust_sweep(root: Path) -> str:
    """sweeps/robust.tsv: its three best trials, then each loss's range of test accuracy."""
    rows = [row for row in tsv_rows(root / "sweeps/robust.tsv") if row["status"] == "ok"]
    columns = ["rank", "trial", "train.lr", "train.batch_size", "train.epochs", "test.accuracy", "moved.clean"]
    columns += ["moved.noisy", "robustness.noise_0_2", "experiment"]
    best = sorted(rows, key=lambda row: int(row["rank"]))[:3]
    top = table([columns, *([row[c] for c in columns] for row in best)])
    top_accuracy = max(float(row["test.accuracy"]) for row in rows)
    per_loss = [["train.loss", "trials", "lowest test.accuracy", "highest", "trials at the best"]]
    for loss in sorted({row["train.loss"] for row in rows}):
        accuracy = [float(row["test.accuracy"]) for row in rows if row["train.loss"] == loss]
        at_best = sum(a == top_accuracy for a in accuracy)
        per_loss.append([loss, str(len(accuracy)), f"{min(accuracy):.3f}", f"{max(accuracy):.3f}", str(at_best)])
    return top + "\n" + table(per_loss)


RENDER: dict[str, Callable[[Path], str]] = {"metrics": metrics, "robust-sweep": robust_sweep}


def rewritten(text: str, root: Path = ROOT) -> str:
    """`text` with every figures region that has a renderer written from its source."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in RENDER:
            return match.group(0)
        return f"<!-- figures: {name} -->\n{RENDER[name](root)}<!-- /figures -->"

    return REGION.sub(fill, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the pages that are out of date")
    stale = []
    check = parser.parse_args().check
    for page in pages():
        text = page.read_text()
        if (new := rewritten(text)) != text:
            stale.append(page.relative_to(ROOT))
            if not check:
                page.write_text(new)
    for page in stale:
        print(f"{'out of date' if check else 'wrote'}: {page}", file=sys.stderr)
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
