"""Stage evaluate: how good the model is, in numbers and pictures.

    python -m pipeline.evaluate

Reads models/model.npz, data/*.npy, metrics/history.tsv and `evaluate.*` from params.yaml. Writes
- metrics/metrics.json: accuracy and loss on the training and noisy test sets, per-letter precision
  and recall on the test set, test accuracy at each of `evaluate.noise_levels`, and accuracy on the
  clean glyphs moved by one row or column (clean, and with `dataset.noise` of the pixels flipped);
- metrics/confusion.json (one {actual, predicted} row per test glyph, for DVC's confusion template)
  and metrics/robustness.json (noise level vs accuracy, for a line plot);
- metrics/images/: the test glyphs with their predictions, the misclassified ones, the moved glyphs
  with their predictions, each hidden unit's incoming weights as a 5x6 map (Pillow), and the
  training curves and confusion matrix (matplotlib).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from pipeline import paths
from pipeline.artifacts import load_history, load_split
from pipeline.checkpoint import load_network
from pipeline.errors import exit_on_error
from pipeline.glyphs import PIXELS, clean_glyphs, noisy_copies, placements
from pipeline.model import Network, accuracy, logits, loss_value, sigmoid
from pipeline.params import EvaluateParams, Params, load_params, made_with, unchanged
from pipeline.writing import save_json, together

SHOWN_PER_CLASS = 8  # test glyphs drawn per class, beside the clean one
SHOWN_MISTAKES = 30  # misclassified test glyphs drawn at most
SHIFT_STREAM = 2_000_000  # seeds the noisy moved glyphs apart from every noise level's stream (level * 10^6)


def scores(net: Network, X: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """{'accuracy', 'loss'} of `net` on (X, y), and the logits Z2 : (N, K)."""
    Z2 = logits(net, X)
    return {"accuracy": accuracy(Z2, y), "loss": loss_value(net.loss, Z2, y)}, Z2


def confusion_counts(y: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts, rows actual, columns predicted."""
    return np.bincount(y.astype(np.intp) * k + predicted, minlength=k * k).reshape(k, k)


def precision_recall(counts: np.ndarray, classes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per letter; a letter never predicted (or absent) gets 0, as scikit-learn's zero_division=0."""
    hits = np.diag(counts).astype(float)
    predicted, actual = counts.sum(axis=0), counts.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    return {"precision": dict(zip(classes, precision)), "recall": dict(zip(classes, recall))}


def robustness(net: Network, p: EvaluateParams) -> list[tuple[float, float]]:
    """Accuracy on `p.per_class` fresh noisy copies of each clean glyph, per noise level.

    Each level has its own stream, seeded by (seed, level), so adding a level changes no other.
    """
    clean = clean_glyphs()
    result = []
    for level in p.noise_levels:
        rng = np.random.default_rng([p.seed, round(level * 1_000_000)])
        X, y = noisy_copies(clean, p.per_class, level, rng)
        result.append((level, accuracy(logits(net, X), y)))
    return result


@dataclass
class Moved:
    """The clean glyphs moved by one row and/or column (wherever their ink stays in the frame)."""

    X: np.ndarray  # (m, 30) uint8
    y: np.ndarray  # (m,) labels
    moves: list[str]  # "1 left", "1 up 1 right", ...
    Z2: np.ndarray  # (m, K) logits of the clean moved glyphs
    noisy: np.ndarray  # (m,) accuracy on noisy copies of each


def moved_glyphs(net: Network, p: EvaluateParams, noise: float) -> Moved:
    """Every placement of each clean letter within one row and column of its own, and the model's
    accuracy on it, clean and on `p.per_class` copies with `noise` of the pixels flipped."""
    found = [
        (c, describe_move(down, right), g)
        for c, glyph in enumerate(clean_glyphs())
        for down, right, g in placements(glyph, 1)
    ]
    X = np.array([g for _, _, g in found], dtype=np.uint8).reshape(-1, PIXELS)
    y = np.array([c for c, _, _ in found], dtype=np.uint8)
    copies, which = noisy_copies(X, p.per_class, noise, np.random.default_rng([p.seed, SHIFT_STREAM]))
    right = np.argmax(logits(net, copies), axis=1) == y[which]
    noisy = np.bincount(which, weights=right, minlength=len(X)) / p.per_class
    return Moved(X, y, [move for _, move, _ in found], logits(net, X), noisy)


def describe_move(down: int, right: int) -> str:
    vertical = f"{abs(down)} {'down' if down > 0 else 'up'}" if down else ""
    horizontal = f"{abs(right)} {'right' if right > 0 else 'left'}" if right else ""
    return " ".join(part for part in (vertical, horizontal) if part)


def level_key(level: float) -> str:
    """A metrics key without dots (DVC flattens nested keys with dots): 0.05 -> noise_0_05."""
    return "noise_" + f"{level:g}".replace(".", "_")


def draw(net: Network, X: np.ndarray, y: np.ndarray, Z2: np.ndarray, counts: np.ndarray, moved: Moved) -> None:
    """Every picture of this stage (Pillow and matplotlib are imported where they draw, so a sweep's trial,
    which runs `evaluate` alone, needs neither)."""
    from pipeline import figures, pictures

    draw_predictions(net, X, y, Z2)
    draw_mistakes(net, X, y, Z2)
    draw_moved(net, moved)
    maps, limit = pictures.weight_cells(net.w1)
    pictures.grid(
        paths.HIDDEN_WEIGHTS_PNG,
        maps,
        [f"unit {j + 1}" for j in range(len(maps))],
        [pictures.TEXT] * len(maps),
        columns=min(len(maps), 8),
        scale=pictures.MAP_SCALE,
        heading=[
            "Incoming weights of each hidden unit, one square per pixel:",
            f"red +, blue -, white 0, full colour at |w| = {limit:.2f}",
        ],
    )
    figures.confusion(paths.CONFUSION_PNG, counts, net.classes)
    history = load_history()
    figures.curves(paths.CURVES_PNG, history["step"], history["loss"], history["accuracy"], net.loss)


def draw_predictions(net: Network, X: np.ndarray, y: np.ndarray, Z2: np.ndarray) -> None:
    """Each clean glyph followed by its first test variants, captioned with the prediction and its score."""
    from pipeline import pictures

    clean, k = clean_glyphs(), len(net.classes)
    picks = [np.flatnonzero(y == c)[:SHOWN_PER_CLASS] for c in range(k)]
    glyphs = np.concatenate([np.vstack([clean[c], X[picks[c]]]) for c in range(k)])
    z = np.concatenate([np.vstack([logits(net, clean[c : c + 1]), Z2[picks[c]]]) for c in range(k)])
    actual = np.concatenate([np.full(len(picks[c]) + 1, c) for c in range(k)])
    predicted, top = np.argmax(z, axis=1), sigmoid(np.max(z, axis=1))
    pictures.grid(
        paths.PREDICTIONS_PNG,
        pictures.glyph_cells(glyphs),
        [f"{net.classes[p]} {s:.2f}" for p, s in zip(predicted, top)],
        pictures.colors_for(predicted != actual),
        columns=SHOWN_PER_CLASS + 1,
        heading="First column: the training glyph; then noisy test glyphs. Red: misclassified.",
    )


def draw_mistakes(net: Network, X: np.ndarray, y: np.ndarray, Z2: np.ndarray) -> None:
    """The first misclassified test glyphs, captioned actual -> predicted (score)."""
    from pipeline import pictures

    predicted = np.argmax(Z2, axis=1)
    wrong = np.flatnonzero(predicted != y)
    shown = wrong[:SHOWN_MISTAKES]
    captions = [f"{net.classes[y[i]]}->{net.classes[predicted[i]]} {sigmoid(Z2[i].max()):.2f}" for i in shown]
    pictures.grid(
        paths.MISCLASSIFIED_PNG,
        pictures.glyph_cells(X[shown]),
        captions,
        pictures.colors_for([True] * len(shown)),
        columns=10,
        heading=[
            f"Misclassified test glyphs: {len(wrong)} of {len(y)}"
            + (f", the first {len(shown)} shown" if len(wrong) > len(shown) else ""),
            "Caption: actual letter->letter read, and the read letter's score (0 to 1)",
        ],
    )


def draw_moved(net: Network, moved: Moved) -> None:
    """Each moved glyph, captioned with the move, what the model read, and its accuracy on noisy copies."""
    from pipeline import pictures

    predicted, top = np.argmax(moved.Z2, axis=1), sigmoid(np.max(moved.Z2, axis=1))
    captions = [
        f"{net.classes[c]} {move}\nread {net.classes[p]} {s:.2f}\nnoisy {a:.0%}"
        for c, move, p, s, a in zip(moved.y, moved.moves, predicted, top, moved.noisy)
    ]
    pictures.grid(
        paths.MOVED_PNG,
        pictures.glyph_cells(moved.X),
        captions,
        pictures.colors_for(predicted != moved.y),
        columns=len(moved.X),
        heading="Training glyphs moved by a row or column (where the ink fits). Red: misread.",
    )


@dataclass
class Evaluation:
    """What evaluate measures: metrics.json's contents and what its plots and pictures are drawn from."""

    metrics: dict  # metrics/metrics.json
    Z2: np.ndarray  # (n, K) logits of the test glyphs
    predicted: np.ndarray  # (n,) the letter read for each test glyph
    counts: np.ndarray  # (K, K) the test confusion
    curve: list[tuple[float, float]]  # (noise level, accuracy)
    moved: Moved


def evaluate(
    net: Network, p: Params, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> Evaluation:
    """Measure `net` on the (X, y) training and test sets and on fresh noisy and moved glyphs."""
    train_scores, _ = scores(net, *train)
    test_scores, z_test = scores(net, *test)
    predicted = np.argmax(z_test, axis=1)
    counts = confusion_counts(test[1], predicted, len(net.classes))
    curve = robustness(net, p.evaluate)
    moved = moved_glyphs(net, p.evaluate, p.dataset.noise)
    metrics = {
        "train": train_scores,
        "test": test_scores | precision_recall(counts, net.classes),
        "robustness": {level_key(level): acc for level, acc in curve},
        "moved": {"clean": accuracy(moved.Z2, moved.y), "noisy": float(np.mean(moved.noisy))},
    }
    return Evaluation(metrics, z_test, predicted, counts, curve, moved)


def main() -> None:
    argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0]).parse_args()
    params = load_params()
    made_with(params, ("dataset.noise",), "make_dataset", paths.X_TEST)
    net = load_network(paths.MODEL, PIXELS)
    (x_train, y_train), (x_test, y_test) = load_split("train"), load_split("test")
    result = evaluate(net, params, (x_train, y_train), (x_test, y_test))
    with together():  # metrics and pictures of one run, or the old ones
        save_json(paths.METRICS, result.metrics)
        save_json(
            paths.CONFUSION,
            [{"actual": net.classes[a], "predicted": net.classes[p]} for a, p in zip(y_test, result.predicted)],
        )
        save_json(paths.ROBUSTNESS, [{"noise": level, "accuracy": acc} for level, acc in result.curve])
        draw(net, x_test, y_test, result.Z2, result.counts, result.moved)
        unchanged(params, "evaluate")  # last in the block: the files land only if params.yaml held still


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
