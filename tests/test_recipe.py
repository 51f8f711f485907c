"""The README's robust recipe: its very command line, trained here, meets the README's figures and reads
the hand-drawn samples as the README's table says; so does the committed baseline.

Training is the same bytes on every machine, so these are exact checks of one run, not statistics.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex

import numpy as np
import pytest
import yaml

from pipeline.checkpoint import distinct_glyphs
from pipeline.evaluate import moved_glyphs, scores
from pipeline.glyph_files import read_glyph
from pipeline.make_dataset import make_dataset
from pipeline.model import logits, sigmoid
from pipeline.params import Params, load_params
from pipeline.train import train
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def recipe_overrides() -> dict[str, dict[str, object]]:
    """The `-S section.key=value` pairs of the README's recipe command line, by section."""
    line = next(line for line in README.splitlines() if "dvc exp run -S dataset.train_per_class=" in line)
    reset, line = line.split(" && ")  # from the committed params.yaml, whatever ran before
    assert reset == "git checkout params.yaml", reset
    words = shlex.split(line)
    overrides: dict[str, dict[str, object]] = {}
    for flag, assignment in zip(words[3::2], words[4::2]):
        assert flag == "-S", line
        key, value = assignment.split("=", 1)
        section, name = key.split(".")
        overrides.setdefault(section, {})[name] = yaml.safe_load(value)  # as dvc exp run -S parses it
    return overrides


def readings_table() -> dict[str, tuple[str, str]]:
    """file -> (baseline letter, robust letter), from the README's table of the samples."""
    rows = re.findall(r"^\| `(\w+\.txt)` \| \**([ABC]) \(.*?\| \**([ABC]) \(", README, flags=re.M)
    return {name: (baseline, robust) for name, baseline, robust in rows}


@pytest.fixture(scope="module")
def robust() -> tuple[Params, object, dict, object]:
    committed = load_params(ROOT / "params.yaml")
    overrides = recipe_overrides()
    params = dataclasses.replace(
        committed,
        **{
            section: dataclasses.replace(getattr(committed, section), **values) for section, values in overrides.items()
        },
    )
    data = make_dataset(params.dataset)
    net, _, _ = train(params.train, *data["train"])
    return params, net, data, overrides


def test_the_recipe_keeps_the_default_architecture_and_changes_what_the_readme_says(robust):
    _, net, _, overrides = robust
    assert net.sizes == (30, 5, 3)
    assert overrides == {
        "dataset": {"train_per_class": 2000, "shift": 1},
        "train": {"shuffle": True, "bias": True, "batch_size": 64, "lr": 0.3, "epochs": 100},
    }


def test_the_recipe_meets_its_targets(robust):
    params, net, data, _ = robust
    test, _ = scores(net, *data["test"])
    moved = moved_glyphs(net, params.evaluate, params.dataset.noise)
    assert params.dataset.noise == 0.1
    assert test["accuracy"] >= 0.985 and round(test["accuracy"], 3) == 0.990  # the README's figure
    assert np.mean(np.argmax(moved.Z2, axis=1) == moved.y) >= 0.99
    assert round(float(np.mean(moved.noisy)), 2) == 0.98


def test_the_samples_read_as_the_readme_says_under_the_recipe_and_the_baseline(robust):
    _, net, _, _ = robust
    table = readings_table()
    samples = sorted((ROOT / "data/samples").glob("*.txt"))
    assert sorted(table) == [path.name for path in samples] and len(samples) >= 18
    robust_read = np.argmax(logits(net, np.array([read_glyph(path) for path in samples])), axis=1)
    assert {path.name: "ABC"[r] for path, r in zip(samples, robust_read)} == {n: r for n, (_, r) in table.items()}
    committed = json.loads((ROOT / "metrics/predictions.json").read_text())  # the baseline, as dvc repro wrote it
    assert {row["file"].split("/")[-1]: row["letter"] for row in committed} == {n: b for n, (b, _) in table.items()}
    right = sum(name[0].upper() == "ABC"[r] for name, r in zip((p.name for p in samples), robust_read))
    assert right == len(samples) - 2  # the two narrow A's read as B: the README explains why


def test_the_recipe_model_keeps_as_many_distinct_training_glyphs_as_the_readme_says(robust):
    _, _, data, _ = robust
    kept = distinct_glyphs(*data["train"])
    assert kept is not None and f"{len(kept[0]):,} for the robust recipe" in README


def test_the_robust_model_is_confident_on_what_it_reads_right(robust):
    _, net, _, _ = robust
    glyphs = np.array([read_glyph(ROOT / "data/samples" / name) for name in ("a.txt", "b.txt", "c.txt")])
    assert np.all(np.max(sigmoid(logits(net, glyphs)), axis=1) > 0.95)
