"""Stage evaluate: accuracy and loss on the training and noisy test sets, the confusion, pictures.

    python -m pipeline.evaluate

Reads models/model.npz and data/*.npy; writes metrics/metrics.json, metrics/confusion.json (one
{actual, predicted} row per test glyph, for DVC's confusion template) and
metrics/images/predictions.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.artifacts import load_split, save_json
from pipeline.checkpoint import MODEL_PATH, load_network
from pipeline.errors import exit_on_error
from pipeline.glyphs import clean_glyphs
from pipeline.model import Network, accuracy, logits, loss_value, sigmoid
from pipeline.pictures import glyph_grid

METRICS = Path("metrics/metrics.json")
CONFUSION = Path("metrics/confusion.json")
PREDICTIONS_PNG = Path("metrics/images/predictions.png")
SHOWN_PER_CLASS = 8  # test glyphs drawn per class, beside the clean one


def scores(net: Network, X: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """{'accuracy', 'loss'} of `net` on (X, y), and the logits Z2 : (N, K)."""
    Z2 = logits(net, X)
    return {"accuracy": accuracy(Z2, y), "loss": loss_value(net.loss, Z2, y)}, Z2


def confusion_rows(classes: tuple[str, ...], y: np.ndarray, predicted: np.ndarray) -> list[dict[str, str]]:
    return [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(y, predicted)]


def draw_predictions(net: Network, clean: np.ndarray, X: np.ndarray, y: np.ndarray, Z2: np.ndarray) -> None:
    """Each clean glyph followed by its first test variants, titled with the prediction and its score."""
    k = len(net.classes)
    picks = [np.flatnonzero(y == c)[:SHOWN_PER_CLASS] for c in range(k)]
    glyphs = np.concatenate([np.vstack([clean[c], X[picks[c]]]) for c in range(k)])
    z = np.concatenate([np.vstack([logits(net, clean[c:c + 1]), Z2[picks[c]]]) for c in range(k)])
    actual = np.concatenate([np.full(len(picks[c]) + 1, c) for c in range(k)])
    predicted, top = np.argmax(z, axis=1), sigmoid(np.max(z, axis=1))
    titles = [f"{net.classes[p]} {s:.2f}" for p, s in zip(predicted, top)]
    glyph_grid(PREDICTIONS_PNG, glyphs, titles, predicted != actual, columns=SHOWN_PER_CLASS + 1,
               heading="First column: the training glyph; then noisy test glyphs. Red: misclassified.")


def main() -> None:
    argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0]).parse_args()
    net = load_network(MODEL_PATH)
    (x_train, y_train), (x_test, y_test) = load_split("train"), load_split("test")
    train_scores, _ = scores(net, x_train, y_train)
    test_scores, z_test = scores(net, x_test, y_test)
    save_json(METRICS, {"train": train_scores, "test": test_scores})
    save_json(CONFUSION, confusion_rows(net.classes, y_test, np.argmax(z_test, axis=1)))
    draw_predictions(net, clean_glyphs(), x_test, y_test, z_test)


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
