"""Matplotlib figures: training curves and the confusion matrix as PNGs. Imported only by evaluate.

matplotlib costs about a second to import, so only the one stage that needs it does, and it uses
`Figure` with the Agg canvas directly rather than pyplot. PNGs carry no software version.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.artifacts import write_atomic

PNG_METADATA = {"Software": None}


def save(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata=PNG_METADATA)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def curves(path: Path, step: np.ndarray, loss: np.ndarray, accuracy: np.ndarray, loss_name: str) -> None:
    """Loss and accuracy per epoch, side by side."""
    fig = Figure(figsize=(8, 3))  # fixed margins: a layout engine would double the drawing time
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.9, wspace=0.25)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(step, loss, color="#cf222e")
    ax_loss.set(xlabel="epoch", ylabel=f"{loss_name} loss", title="Training loss")
    ax_acc.plot(step, accuracy, color="#1a7f37")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Training accuracy", ylim=(-0.02, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    save(fig, path)


def confusion(path: Path, counts: np.ndarray, classes: tuple[str, ...]) -> None:
    """counts : (K, K), rows actual, columns predicted, each cell labelled with its count."""
    fig = Figure(figsize=(3.6, 3.2))
    fig.subplots_adjust(left=0.18, right=0.95, bottom=0.15, top=0.9)
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues", vmin=0)
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
