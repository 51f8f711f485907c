"""Stage predict, and an ad-hoc CLI: which letter is drawn in each ASCII glyph file.

    python -m pipeline.predict                       # stage: data/samples/*.txt -> metrics/predictions.json
    python -m pipeline.predict [--model PATH] FILE...  # print `FILE: LETTER (SCORE)` per file
    python -m pipeline.predict --show FILE...          # and the glyph as read, beside every letter's score

The stage also draws metrics/images/samples.png: each sample glyph with its prediction.

Beside each prediction comes the nearest glyph of the training set (data/x_train.npy) and its
Hamming distance, the number of pixels that differ. A glyph FAR or more pixels from every training
glyph gets a note on stderr: the model has seen nothing like it, however high its score.

A bad file gets one line on stderr naming it (and the line); the other files are still predicted,
and the exit status is 2 if any file was bad. Scores are the network's independent sigmoid outputs,
one per letter; they need not sum to 1.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.artifacts import digest, load_split, save_json, split_paths, stale
from pipeline.checkpoint import MODEL_PATH, load_network
from pipeline.errors import BAD_INPUT, PipelineError, exit_on_error
from pipeline.glyphs import read_glyph, render
from pipeline.model import Network, logits, sigmoid

SAMPLES = Path("data/samples")
PREDICTIONS = Path("metrics/predictions.json")
SAMPLES_PNG = Path("metrics/images/samples.png")
BAR = 20  # characters of a score bar at score 1
# Pixels from every training glyph at which a glyph counts as unlike them: more than the 3 pixels a
# copy with 10% noise has flipped on average, and close to the 5 that tell the tutorial's B from its C.
FAR = 4


@dataclass(frozen=True)
class Nearest:
    letter: str     # the label of the nearest training glyph (the first, in training order, on a tie)
    distance: int   # pixels that differ

    @property
    def far(self) -> bool:
        return self.distance >= FAR


def nearest_training_glyphs(glyphs: np.ndarray, x_train: np.ndarray, y_train: np.ndarray,
                            classes: tuple[str, ...]) -> list[Nearest]:
    """For glyphs : (n, 30), the nearest of x_train : (N, 30) by Hamming distance, and its label."""
    train_codes = _bits(x_train)
    result = []
    for code in _bits(glyphs):
        distances = np.bitwise_count(np.bitwise_xor(train_codes, code))
        best = int(np.argmin(distances))
        result.append(Nearest(classes[y_train[best]], int(distances[best])))
    return result


def predict(net: Network, glyphs: np.ndarray) -> list[tuple[str, dict[str, float]]]:
    """For glyphs : (n, 30), the predicted letter and the sigmoid score of every letter."""
    z = logits(net, glyphs)
    a = sigmoid(z)
    return [(net.classes[int(np.argmax(row))], dict(zip(net.classes, map(float, s)))) for row, s in zip(z, a)]


def read_all(paths: list[Path]) -> tuple[list[Path], np.ndarray, list[str]]:
    """The readable files, their glyphs : (n, 30), and one error line per unreadable file."""
    good, glyphs, errors = [], [], []
    for path in paths:
        try:
            glyphs.append(read_glyph(path))
            good.append(path)
        except PipelineError as err:
            errors.append(str(err))
    return good, np.array(glyphs, dtype=np.uint8).reshape(-1, 30), errors


def _bits(glyphs: np.ndarray) -> np.ndarray:
    """glyphs : (n, 30) of 0/1 -> (n,) uint32, pixel i as bit i: XOR and a bit count give distances."""
    return np.packbits(glyphs, axis=1, bitorder="little").view("<u4")[:, 0]


def run_stage(net: Network) -> None:
    paths = sorted(SAMPLES.glob("*.txt"))
    good, glyphs, errors = read_all(paths)
    if errors:
        raise PipelineError(f"{errors[0]} (and {len(errors) - 1} more)" if len(errors) > 1 else errors[0])
    if not good:
        raise PipelineError(f"{SAMPLES}: expected glyph files *.txt, found none")
    results = predict(net, glyphs)
    x_train, y_train = training_set(net)
    near = nearest_training_glyphs(glyphs, x_train, y_train, net.classes)
    far = [f"{path.name} ({n.distance})" for path, n in zip(good, near) if n.far]
    if far:  # one line for the stage, which dvc prints with its own output
        print(f"note: {len(far)} of {len(good)} samples are {FAR} or more pixels from every training glyph: "
              f"{', '.join(far)}", file=sys.stderr)
    rows = [{"file": path.as_posix(), "letter": letter, "score": scores[letter], **scores,
             "nearest": n.letter, "distance": n.distance} for path, (letter, scores), n in zip(good, results, near)]
    save_json(PREDICTIONS, rows)  # records: DVC plots them as bars of `score` per `file`
    captions = [f"{path.stem}\nread {letter} {scores[letter]:.2f}\n{n.distance} px from {n.letter}"
                for path, (letter, scores), n in zip(good, results, near)]
    from pipeline import pictures  # Pillow: only the stage draws, not the ad-hoc CLI

    pictures.grid(SAMPLES_PNG, pictures.glyph_cells(glyphs), captions, [pictures.TEXT] * len(good),
                  columns=min(6, len(good)),
                  heading=[f"The glyphs of {SAMPLES}/, the letter the model reads and its score (0 to 1),",
                           "and how many pixels they are from the nearest training glyph"])


def run_adhoc(net: Network, paths: list[Path], show: bool) -> int:
    good, glyphs, errors = read_all(paths)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    try:
        x_train, y_train = training_set(net)
        near: list[Nearest | None] = nearest_training_glyphs(glyphs, x_train, y_train, net.classes)
    except PipelineError as err:  # the prediction does not need the training set: say what is missing
        print(f"note: {err}; no nearest training glyphs", file=sys.stderr)
        near = [None] * len(good)
    for path, glyph, (letter, s), n in zip(good, glyphs, predict(net, glyphs), near):
        print(f"{path}: {letter} ({s[letter]:.2f})")
        if show:
            print("\n".join(side_by_side(glyph, s, letter, n)))
    note_far(good, near)
    return BAD_INPUT if errors else 0


def training_set(net: Network) -> tuple[np.ndarray, np.ndarray]:
    """data/{x,y}_train.npy, checked against the digest the model keeps of the set it was trained on."""
    x_train, y_train = load_split("train")
    if net.trained_on and digest(x_train, y_train) != net.trained_on:
        raise stale(split_paths("train")[0], "not the training set of this model", "train")
    return x_train, y_train


def note_far(paths: list[Path], near: list[Nearest | None]) -> None:
    for path, n in zip(paths, near):
        if n is not None and n.far:
            print(f"note: {path}: {n.distance} pixels from the nearest training glyph ({n.letter}); "
                  f"the model has not seen anything like it", file=sys.stderr)


def side_by_side(glyph: np.ndarray, scores: dict[str, float], letter: str, near: Nearest | None) -> list[str]:
    """The glyph as ASCII art; beside its first rows each letter's score with a bar, then the nearest
    training glyph."""
    lines = [f"{c} {v:.2f} {'#' * round(v * BAR):<{BAR}}{'  <' if c == letter else ''}" for c, v in scores.items()]
    if near is None:
        lines.append("nearest training glyph: unknown")
    else:
        lines.append(f"nearest training glyph: {near.letter}, {near.distance} pixel{'s' * (near.distance != 1)} away"
                     + (" (far)" if near.far else ""))
    return [f"  {row}   {lines[i] if i < len(lines) else ''}".rstrip() for i, row in enumerate(render(glyph))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL_PATH, metavar="PATH",
                        help=f"trained model (default {MODEL_PATH})")
    parser.add_argument("--show", action="store_true", help="also print each glyph as read, beside every score")
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE",
                        help=f"glyph files; none: predict {SAMPLES}/*.txt and write {PREDICTIONS}")
    args = parser.parse_args(argv)
    if args.show and not args.files:
        parser.error("--show needs at least one FILE")
    net = load_network(args.model)
    if not args.files:
        run_stage(net)
        return 0
    return run_adhoc(net, args.files, args.show)


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
