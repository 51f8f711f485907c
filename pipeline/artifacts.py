"""The pipeline's own files between stages, loaded and checked: the data sets and the training history.

The primitives are in `writing` (atomic, deterministic files) and `reading` (hardened .npy and .npz
readers); this module knows what make_dataset and train write (and how many snapshots the trace holds at most).
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.errors import first_line
from pipeline.glyphs import CLASSES, PIXELS
from pipeline.reading import check_regular, load_npy, missing, stale

TRACE_POINTS = 300  # epochs train keeps in models/trace.npz at most: every epoch of the default run, about 400 kB


def digest(*arrays: np.ndarray) -> str:
    """A short fingerprint of arrays' dtypes, shapes and bytes: the same arrays give the same string."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """X : (N, 30) uint8 of 0/1 and y : (N,) uint8 labels of `split`, checked."""
    x_path, y_path = paths.split(split)
    X = load_npy(x_path, np.uint8, (None, PIXELS), "make_dataset")
    if len(X) == 0:  # make_dataset writes the three clean glyphs and at least one test glyph per letter
        raise stale(x_path, "expected at least one glyph, found none", "make_dataset")
    y = load_npy(y_path, np.uint8, (len(X),), "make_dataset")
    if len(X) and X.max() > 1:
        raise stale(x_path, f"expected pixels 0 or 1, found {X.max()}", "make_dataset")
    if len(y) and y.max() >= len(CLASSES):
        raise stale(y_path, f"expected labels 0..{len(CLASSES) - 1}, found {y.max()}", "make_dataset")
    return X, y


def load_history(path: Path = paths.HISTORY) -> dict[str, np.ndarray]:
    """The per-epoch history train wrote: columns step (int), loss and accuracy (float)."""
    columns = ["step", "loss", "accuracy"]
    check_regular(path, "train")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise missing(path, "train") from None
    except (OSError, UnicodeDecodeError) as err:
        raise stale(path, f"unreadable ({first_line(err)})", "train") from None
    # No message quotes the file's text beyond numbers and column names: a link could make it any file.
    header = lines[0].split("\t") if lines else []
    if header != columns:
        names = len(header) <= 6 and all(re.fullmatch(r"[A-Za-z_]{1,20}", cell) for cell in header)
        raise stale(
            path,
            f"expected the header step, loss, accuracy, found {header if names else 'another first line'}",
            "train",
        )
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            rows.append([float(cell) for cell in cells])
        except ValueError:
            raise stale(
                path, f"line {lineno}: expected 3 numbers, found a cell that is not a number", "train"
            ) from None
        if len(rows[-1]) != len(columns):
            raise stale(path, f"line {lineno}: expected 3 numbers, found {len(cells)}", "train")
        if not all(map(math.isfinite, rows[-1])):  # a NaN would reach the explorer's JSON.parse and the curves
            found = ", ".join(f"{value:g}" for value in rows[-1])
            raise stale(path, f"line {lineno}: expected finite numbers, found {found}", "train")
        if rows[-1][0] != lineno - 1:  # train writes epochs 1, 2, ... in order
            raise stale(path, f"line {lineno}: expected step {lineno - 1}, found {rows[-1][0]:g}", "train")
    table = np.array(rows, dtype=np.float64).reshape(-1, len(columns))
    return {"step": table[:, 0].astype(np.int64), "loss": table[:, 1], "accuracy": table[:, 2]}
