"""Stage make_dataset: the training glyphs (plus shifted and noisy copies) and a noisy held-out test set.

    python -m pipeline.make_dataset

Reads `dataset.*` from params.yaml and writes data/{x,y}_{train,test}.npy. The training set is the
tutorial's three glyphs A, B, C; then, with `dataset.shift` > 0, every placement of them moved by up
to that many rows and columns that keeps the ink inside the frame; then `dataset.train_per_class`
noisy copies per letter, cycling through the letter's placements. With the defaults (0 and 0) it is
exactly the tutorial's three glyphs.
"""

from __future__ import annotations

import argparse

import numpy as np

from pipeline import paths
from pipeline.errors import exit_on_error
from pipeline.glyphs import clean_glyphs, noisy_copies, shifted_copies
from pipeline.params import DatasetParams, load_params, unchanged
from pipeline.writing import save_npy, together


def make_dataset(p: DatasetParams) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (X, y), 'test': (X, y)}; X : (N, 30) uint8, y : (N,) uint8."""
    clean = clean_glyphs()
    labels = np.arange(len(clean), dtype=np.uint8)
    x_moved, y_moved = shifted_copies(clean, p.shift)
    per_letter = [np.vstack([clean[c], x_moved[y_moved == c]]) for c in labels]
    # Independent streams: changing train_per_class or shift leaves the test set as it was.
    train_rng, test_rng = np.random.default_rng(p.seed).spawn(2)
    x_noisy, y_noisy = noisy_copies(per_letter, p.train_per_class, p.noise, train_rng)
    x_train = np.concatenate([clean, x_moved, x_noisy])
    y_train = np.concatenate([labels, y_moved, y_noisy])
    return {"train": (x_train, y_train), "test": noisy_copies(clean, p.test_per_class, p.noise, test_rng)}


def main() -> None:
    argparse.ArgumentParser(prog="python -m pipeline.make_dataset", description=__doc__.splitlines()[0]).parse_args()
    params = load_params()
    with together():  # glyphs and labels of one run, or the old ones
        for split, arrays in make_dataset(params.dataset).items():
            for path, array in zip(paths.split(split), arrays):
                save_npy(path, array)
        unchanged(params, "make_dataset")  # last in the block: the arrays land only if params.yaml held still


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
