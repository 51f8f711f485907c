"""The matplotlib charts (pipeline/figures.py): any history and any counts draw, at a fixed size, and the
same numbers give the same bytes, with no software version or date in the file."""

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
        assert "Software" not in image.info and not any(key.lower().startswith("creat") for key in image.info)


@pytest.mark.parametrize("counts", [np.zeros((3, 3), int), np.diag([100, 100, 100]), np.arange(9).reshape(3, 3)])
def test_the_confusion_chart_draws_any_counts_and_shows_them(tmp_path, counts):
    figures.confusion(tmp_path / "c.png", counts, ("A", "B", "C"))
    other = counts.copy()
    other[0, 1] += 7
    figures.confusion(tmp_path / "d.png", other, ("A", "B", "C"))
    assert (tmp_path / "c.png").read_bytes() != (tmp_path / "d.png").read_bytes()
    with Image.open(tmp_path / "c.png") as image:
        assert image.size == (360, 320)
