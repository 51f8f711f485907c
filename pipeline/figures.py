"""Charts drawn with matplotlib: the training curves and the confusion matrix as PNGs. Used by evaluate.

matplotlib is the field's plotting library, the one a reader restyles a figure in. It costs about a
second to import, so only the function that draws imports it (`evaluate.draw`), and it uses `Figure`
with the Agg canvas directly rather than pyplot (no backend chosen from the environment, no global
state). The PNGs carry no software version or date (`metadata`), at a fixed size and dpi, so their bytes
depend only on the numbers drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.writing import write_atomic

DPI = 100  # 800 x 300 pixels for the curves' 8 x 3 inches
PNG_METADATA = {"Software": None}  # matplotlib writes its version there otherwise; a PNG has no date
LOSS_COLOR, ACCURACY_COLOR = "#cf222e", "#1a7f37"  # the red and green of pictures' captions


def save(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)  # the Agg canvas, whatever backend the environment would choose
    fig.savefig(buffer, format="png", dpi=DPI, metadata=PNG_METADATA)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def curves(path: Path, step: np.ndarray, loss: np.ndarray, accuracy: np.ndarray, loss_name: str) -> None:
    """Loss and accuracy per epoch, side by side."""
    fig = Figure(figsize=(8, 3), dpi=DPI)  # fixed margins: a layout engine would double the drawing time
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.9, wspace=0.25)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(step, loss, color=LOSS_COLOR)
    ax_loss.set(xlabel="epoch", ylabel=f"{loss_name} loss", title="Training loss")
    ax_acc.plot(step, accuracy, color=ACCURACY_COLOR)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Training accuracy", ylim=(-0.02, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    save(fig, path)


def confusion(path: Path, counts: np.ndarray, classes: Sequence[str]) -> None:
    """counts : (K, K), rows actual, columns predicted, each cell shaded by and labelled with its count."""
    fig = Figure(figsize=(3.6, 3.2), dpi=DPI)
    fig.subplots_adjust(left=0.18, right=0.95, bottom=0.15, top=0.9)
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(int(counts.max()), 1))
    ticks = np.arange(len(classes))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="actual",
        title="Test confusion",
    )
    threshold = counts.max() / 2
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > threshold else "black")
    save(fig, path)
