"""Stage predict, and an ad-hoc CLI: which letter is drawn in each ASCII glyph file.

    python -m pipeline.predict                       # stage: data/samples/*.txt -> metrics/predictions.json
    python -m pipeline.predict [--model PATH] FILE...  # print `FILE: LETTER (SCORE)` per file
    python -m pipeline.predict --show FILE...          # and the glyph as read, beside every letter's score

The stage also draws metrics/images/samples.png: each sample glyph with its prediction.

A bad file gets one line on stderr naming it (and the line); the other files are still predicted,
and the exit status is 2 if any file was bad. Scores are the network's independent sigmoid outputs,
one per letter; they need not sum to 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline.artifacts import save_json
from pipeline.checkpoint import MODEL_PATH, load_network
from pipeline.errors import BAD_INPUT, PipelineError, exit_on_error
from pipeline.glyphs import read_glyph, render
from pipeline.model import Network, logits, sigmoid

SAMPLES = Path("data/samples")
PREDICTIONS = Path("metrics/predictions.json")
SAMPLES_PNG = Path("metrics/images/samples.png")
BAR = 20  # characters of a score bar at score 1


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


def run_stage(net: Network) -> None:
    paths = sorted(SAMPLES.glob("*.txt"))
    good, glyphs, errors = read_all(paths)
    if errors:
        raise PipelineError(f"{errors[0]} (and {len(errors) - 1} more)" if len(errors) > 1 else errors[0])
    if not good:
        raise PipelineError(f"{SAMPLES}: expected glyph files *.txt, found none")
    results = predict(net, glyphs)
    rows = [{"file": path.as_posix(), "letter": letter, "score": scores[letter], **scores}
            for path, (letter, scores) in zip(good, results)]
    save_json(PREDICTIONS, rows)  # records: DVC plots them as bars of `score` per `file`
    captions = [f"{path.stem[:10]}\n{letter} {scores[letter]:.2f}" for path, (letter, scores) in zip(good, results)]
    from pipeline import pictures  # Pillow: only the stage draws, not the ad-hoc CLI

    pictures.grid(SAMPLES_PNG, pictures.glyph_cells(glyphs), captions, [pictures.TEXT] * len(good),
                  columns=min(8, len(good)), heading=f"The glyphs of {SAMPLES}/ and what the model reads")


def run_adhoc(net: Network, paths: list[Path], show: bool) -> int:
    good, glyphs, errors = read_all(paths)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    for path, glyph, (letter, s) in zip(good, glyphs, predict(net, glyphs)):
        print(f"{path}: {letter} ({s[letter]:.2f})")
        if show:
            print("\n".join(side_by_side(glyph, s, letter)))
    return BAD_INPUT if errors else 0


def side_by_side(glyph: np.ndarray, scores: dict[str, float], letter: str) -> list[str]:
    """The glyph as ASCII art, and beside its first rows each letter's score with a bar."""
    bars = [f"{c} {v:.2f} {'#' * round(v * BAR):<{BAR}}{'  <' if c == letter else ''}" for c, v in scores.items()]
    return [f"  {row}   {bars[i] if i < len(bars) else ''}".rstrip() for i, row in enumerate(render(glyph))]


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
