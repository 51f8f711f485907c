"""Stage predict, and an ad-hoc CLI: which letter is drawn in each ASCII glyph file.

    python -m pipeline.predict                       # stage: data/samples/*.txt -> metrics/predictions.json
    python -m pipeline.predict [--model PATH] FILE...  # print `FILE: LETTER (SCORE)` per file
    python -m pipeline.predict --show FILE...          # and the glyph as read, beside every letter's score

The stage also draws metrics/images/samples.png: each sample glyph with its prediction.

Beside each prediction comes the nearest glyph of the training set and its Hamming distance, the
number of pixels that differ. The CLI compares with the distinct training glyphs the model file keeps,
so a model used outside the project needs nothing else; the stage, and a model without them, read
data/x_train.npy. A glyph FAR or more pixels from every training glyph gets a note on stderr: the model
has seen nothing like it, however high its score.

A bad file gets one line on stderr naming it (and the line); the other files are still predicted,
and the exit status is 2 if any file was bad. Scores are the network's independent sigmoid outputs,
one per letter; they need not sum to 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.artifacts import digest, load_split
from pipeline.checkpoint import Glyphs, load_model
from pipeline.errors import BAD_INPUT, PipelineError, exit_on_error, shown
from pipeline.glyph_files import read_glyph, sample_files
from pipeline.glyphs import FAR, PIXELS, Nearest, nearest, render
from pipeline.model import Network, logits, sigmoid
from pipeline.reading import stale
from pipeline.writing import save_json

BAR = 20  # characters of a score bar at score 1


def predict(net: Network, glyphs: np.ndarray) -> list[tuple[str, dict[str, float]]]:
    """For glyphs : (n, 30), the predicted letter and the sigmoid score of every letter."""
    z = logits(net, glyphs)
    a = sigmoid(z)
    return [(net.classes[int(np.argmax(row))], dict(zip(net.classes, map(float, s)))) for row, s in zip(z, a)]


def read_all(files: list[Path]) -> tuple[list[Path], np.ndarray, list[str]]:
    """The readable files, their glyphs : (n, 30), and one error line per unreadable file."""
    good, glyphs, errors = [], [], []
    for path in files:
        try:
            glyphs.append(read_glyph(path))
            good.append(path)
        except PipelineError as err:
            errors.append(str(err))
    return good, np.array(glyphs, dtype=np.uint8).reshape(-1, PIXELS), errors


def run_stage(net: Network) -> None:
    good, glyphs, errors = read_all(sample_files())
    if errors:
        raise PipelineError(f"{errors[0]} (and {len(errors) - 1} more)" if len(errors) > 1 else errors[0])
    results = predict(net, glyphs)
    near = nearest(glyphs, *training_set(net))
    far = [f"{path.name} ({n.distance})" for path, n in zip(good, near) if n.far]
    if far:  # one line for the stage, which dvc prints with its own output
        print(
            f"note: {len(far)} of {len(good)} samples are {FAR} or more pixels from every training glyph: "
            f"{', '.join(far)}",
            file=sys.stderr,
        )
    rows = [
        {
            "file": path.as_posix(),
            "letter": letter,
            "score": scores[letter],
            **scores,
            "nearest": net.classes[n.label],
            "distance": n.distance,
        }
        for path, (letter, scores), n in zip(good, results, near)
    ]
    save_json(paths.PREDICTIONS, rows)  # records: DVC plots them as bars of `score` per `file`
    captions = [
        f"{path.stem}\nread {letter} {scores[letter]:.2f}\n{n.distance} px from {net.classes[n.label]}"
        for path, (letter, scores), n in zip(good, results, near)
    ]
    from pipeline import pictures  # Pillow: only the stage draws, not the ad-hoc CLI

    pictures.grid(
        paths.SAMPLES_PNG,
        pictures.glyph_cells(glyphs),
        captions,
        [pictures.TEXT] * len(good),
        columns=min(6, len(good)),
        heading=[
            f"The glyphs of {paths.SAMPLES}/, the letter the model reads and its score (0 to 1),",
            "and how many pixels they are from the nearest training glyph",
        ],
    )


def run_adhoc(net: Network, kept: Glyphs | None, files: list[Path], show: bool) -> int:
    good, glyphs, errors = read_all(files)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    try:  # the model's own training glyphs, so a model used outside the project needs nothing else
        near: list[Nearest | None] = list(nearest(glyphs, *(kept or training_set(net))))
    except PipelineError as err:  # the prediction does not need the training set: say what is missing
        print(f"note: {err}; no nearest training glyphs", file=sys.stderr)
        near = [None] * len(good)
    for path, glyph, (letter, s), n in zip(good, glyphs, predict(net, glyphs), near):
        print(f"{shown(str(path))}: {letter} ({s[letter]:.2f})")  # a name may hold a newline or an escape
        if show:
            print("\n".join(side_by_side(glyph, s, letter, n, net.classes)))
    for path, n in zip(good, near):
        if n is not None and n.far:
            print(
                f"note: {shown(str(path))}: {n.distance} pixels from the nearest training glyph "
                f"({net.classes[n.label]}); the model has not seen anything like it",
                file=sys.stderr,
            )
    return BAD_INPUT if errors else 0


def training_set(net: Network) -> tuple[np.ndarray, np.ndarray]:
    """data/{x,y}_train.npy, checked against the digest the model keeps of the set it was trained on."""
    x_train, y_train = load_split("train")
    if net.trained_on and digest(x_train, y_train) != net.trained_on:
        raise stale(paths.X_TRAIN, "not the training set of this model", "train")
    return x_train, y_train


def side_by_side(
    glyph: np.ndarray, scores: dict[str, float], letter: str, near: Nearest | None, classes: tuple[str, ...]
) -> list[str]:
    """The glyph as ASCII art; beside its first rows each letter's score with a bar, then the nearest
    training glyph."""
    lines = [f"{c} {v:.2f} {'#' * round(v * BAR):<{BAR}}{'  <' if c == letter else ''}" for c, v in scores.items()]
    if near is None:
        lines.append("nearest training glyph: unknown")
    else:
        lines.append(
            f"nearest training glyph: {classes[near.label]}, {near.distance} pixel"
            f"{'s' * (near.distance != 1)} away" + (" (far)" if near.far else "")
        )
    return [f"  {row}   {lines[i] if i < len(lines) else ''}".rstrip() for i, row in enumerate(render(glyph))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=paths.MODEL, metavar="PATH", help=f"trained model (default {paths.MODEL})"
    )
    parser.add_argument("--show", action="store_true", help="also print each glyph as read, beside every score")
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help=f"glyph files; none: predict {paths.SAMPLES}/*.txt and write {paths.PREDICTIONS}",
    )
    args = parser.parse_args(argv)
    if args.show and not args.files:
        parser.error("--show needs at least one FILE")
    net, kept = load_model(args.model, PIXELS)
    if not args.files:
        run_stage(net)
        return 0
    return run_adhoc(net, kept, args.files, args.show)


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
