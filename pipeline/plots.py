"""Matplotlib figures, written as deterministic PNGs. Imported only by the stages that draw."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display: must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.artifacts import write_atomic  # noqa: E402
from pipeline.glyphs import COLS, ROWS  # noqa: E402

PNG_METADATA = {"Software": None}  # no version string: the bytes depend on the pixels only
RIGHT, WRONG = "#1a7f37", "#cf222e"


def glyph_grid(path: Path, glyphs: np.ndarray, titles: Sequence[str], wrong: Sequence[bool],
               columns: int, heading: str) -> None:
    """Draw glyphs : (n, 30) in rows of `columns`, each titled, wrong ones in red, to a PNG at `path`."""
    rows = -(-len(glyphs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.25 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, glyph, title, bad in zip(axes.flat, glyphs, titles, wrong):
        ax.imshow(glyph.reshape(ROWS, COLS), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8, color=WRONG if bad else RIGHT)
    fig.suptitle(heading, fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=80, metadata=PNG_METADATA))
    plt.close(fig)
