"""The Pillow charts (pipeline/figures.py): any history and any counts draw, and the same numbers
give the same bytes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline import figures


@pytest.mark.parametrize(
    "loss",
    [[], [0.7], [2.4, 0.1], [0.0, 0.0, 0.0], [1e6, 3e5, 1.0], list(np.linspace(3e-7, 1e-7, 300))],
    ids=["none", "one epoch", "two", "all zero", "huge", "tiny"],
)
def test_curves_draw_any_history_the_same_way_twice(tmp_path, loss):
    step, loss = np.arange(1, len(loss) + 1), np.array(loss)
    accuracy = np.linspace(0.3, 1.0, len(loss))
    for name in ("a.png", "b.png"):
        figures.curves(tmp_path / name, step, loss, accuracy, "bce")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == (800, 300)


@pytest.mark.parametrize("counts", [np.zeros((3, 3), int), np.diag([100, 100, 100]), np.arange(9).reshape(3, 3)])
def test_the_confusion_chart_draws_any_counts(tmp_path, counts):
    figures.confusion(tmp_path / "c.png", counts, ("A", "B", "C"))
    with Image.open(tmp_path / "c.png") as image:
        assert image.getpixel((70 + 32, 40 + 32)) != image.getpixel((70 + 96, 40 + 32)) or counts[0, 0] == counts[0, 1]


def test_ticks_are_round_and_cover_the_range():
    assert figures.ticks(0.0, 300.0) == [0.0, 100.0, 200.0, 300.0]
    assert [figures.label(v) for v in figures.ticks(0.0, 1.0)] == ["0", "0.2", "0.4", "0.6", "0.8", "1"]
    assert [figures.label(v) for v in figures.ticks(0.0, 2.5)] == ["0", "0.5", "1", "1.5", "2", "2.5"]
