"""The A/B/C bitmaps, ASCII glyph files, and noisy variants of the glyphs.

A glyph is 5 rows of 6 pixels, stored as a flat row-major vector of 30 uint8 values (1 = ink).
Everything here is pure: arrays and strings in, arrays and strings out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError

ROWS, COLS = 5, 6
PIXELS = ROWS * COLS
CLASSES = ("A", "B", "C")

# The tutorial's three bitmaps, drawn as they look.
_DRAWN = {
    "A": ("..##..", ".#..#.", "######", "#....#", "#....#"),
    "B": (".####.", ".#..#.", ".####.", ".#..#.", ".####."),
    "C": (".####.", ".#....", ".#....", ".#....", ".####."),
}

INK, BLANK = frozenset("#1"), frozenset(".0")
# Pixels from every training glyph at which a glyph counts as unlike them: more than the 3 pixels a
# copy with 10% noise has flipped on average, and close to the 5 that tell the tutorial's B from its C.
FAR = 4


def clean_glyphs() -> np.ndarray:
    """The tutorial's glyphs A, B, C as a (3, 30) uint8 array of 0/1."""
    return np.stack([parse_glyph("\n".join(_DRAWN[c]), c) for c in CLASSES])


def parse_glyph(text: str, name: str) -> np.ndarray:
    """Parse ASCII art (5 lines of 6 of `#`/`1` ink, `.`/`0` blank) into a (30,) uint8 vector.

    Trailing whitespace and blank lines before and after the glyph are ignored. Errors name
    `name` and the 1-based line number in `text`.
    """
    numbered = [(i, line.rstrip()) for i, line in enumerate(text.splitlines(), start=1)]
    while numbered and not numbered[-1][1]:
        numbered.pop()
    while numbered and not numbered[0][1]:
        numbered.pop(0)
    if len(numbered) != ROWS:
        raise PipelineError(f"{name}: expected {ROWS} rows of {COLS} pixels, found {len(numbered)} rows")
    pixels = np.empty((ROWS, COLS), dtype=np.uint8)
    for row, (lineno, line) in enumerate(numbered):
        pixels[row] = _parse_row(line, f"{name}: line {lineno}")
    return pixels.reshape(PIXELS)


ALLOWED = "'#' or '1' for ink, '.' or '0' for blank"


def _parse_row(line: str, where: str) -> list[int]:
    # A space is the likeliest wrong blank (the trailing ones are stripped, so the row looks short): say so.
    hint = "; a space is not a pixel: use '.' for blank" if " " in line else ""
    if len(line) != COLS:
        # The row itself only when it is pixels and spaces: no message quotes other text of a file it refuses.
        row = f" {line!r}" if len(line) <= 20 and all(ch in INK or ch in BLANK or ch == " " for ch in line) else ""
        raise PipelineError(f"{where}: expected {COLS} pixels ({ALLOWED}), found {len(line)} characters{row}{hint}")
    bad = [ch for ch in line if ch not in INK and ch not in BLANK]
    if bad:
        raise PipelineError(f"{where}: expected only {ALLOWED}, found {bad[0]!r}{hint}")
    return [1 if ch in INK else 0 for ch in line]


def render(glyph: np.ndarray) -> list[str]:
    """A (30,) glyph as 5 strings of `#` and `.`, the inverse of `parse_glyph`."""
    rows = np.asarray(glyph).reshape(ROWS, COLS)
    return ["".join("#" if p else "." for p in row) for row in rows]


def shift_glyph(glyph: np.ndarray, down: int, right: int) -> np.ndarray | None:
    """glyph : (30,) moved `down` rows and `right` columns (negative: up, left), or None if any ink
    would leave the 5x6 frame."""
    grid = np.asarray(glyph).reshape(ROWS, COLS)
    if abs(down) >= ROWS or abs(right) >= COLS:
        return None
    kept = grid[max(0, -down) : ROWS - max(0, down), max(0, -right) : COLS - max(0, right)]
    if kept.sum() != grid.sum():
        return None
    moved = np.zeros_like(grid)
    moved[max(0, down) : ROWS - max(0, -down), max(0, right) : COLS - max(0, -right)] = kept
    return moved.reshape(PIXELS)


def placements(glyph: np.ndarray, shift: int) -> list[tuple[int, int, np.ndarray]]:
    """(down, right, moved glyph) for every move of at most `shift` rows and columns, the glyph's own
    place excluded, that keeps its ink inside the frame; rows first, then columns, in ascending order."""
    moves = [(down, right) for down in range(-shift, shift + 1) for right in range(-shift, shift + 1)]
    moved = [(down, right, shift_glyph(glyph, down, right)) for down, right in moves if (down, right) != (0, 0)]
    return [(down, right, g) for down, right, g in moved if g is not None]


def shifted_copies(glyphs: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Every placement of every glyph (see `placements`), class after class.

    glyphs : (k, 30) uint8, one per class -> x : (m, 30) uint8, y : (m,) uint8 class indices.
    """
    rows = [(c, g) for c, glyph in enumerate(glyphs) for _, _, g in placements(glyph, shift)]
    x = np.array([g for _, g in rows], dtype=np.uint8).reshape(-1, PIXELS)
    return x, np.array([c for c, _ in rows], dtype=np.uint8)


def noisy_copies(
    sources: np.ndarray | Sequence[np.ndarray],
    copies: int,
    noise: float,
    rng: np.random.Generator,
    block: int = 1 << 16,
) -> tuple[np.ndarray, np.ndarray]:
    """`copies` noisy variants per class, interleaved A, B, C, A, B, C, ...

    sources : (k, 30) uint8, one glyph per class, or a list of k (n_c, 30) arrays, several per class:
    the i-th copy of class c then starts from that class's glyph i mod n_c.
    -> x : (copies * k, 30) uint8, y : (copies * k,) uint8.
    Each pixel is flipped independently with probability `noise`. Rows are drawn in blocks so
    memory stays near the size of the uint8 output; the stream depends only on `rng`'s state.
    """
    per_class = [np.asarray(s, dtype=np.uint8).reshape(-1, PIXELS) for s in sources]
    k, counts = len(per_class), np.array([len(s) for s in per_class])
    table, first = np.concatenate(per_class), np.concatenate([[0], np.cumsum(counts)[:-1]])
    x = np.empty((copies * k, PIXELS), dtype=np.uint8)
    for start in range(0, len(x), block):
        stop = min(start + block, len(x))
        flips = rng.random((stop - start, PIXELS), dtype=np.float32) < noise  # (m, 30) bool
        row = np.arange(start, stop)
        label, copy = row % k, row // k
        np.bitwise_xor(table[first[label] + copy % counts[label]], flips, out=x[start:stop])
    y = np.tile(np.arange(k, dtype=np.uint8), copies)
    return x, y


@dataclass(frozen=True)
class Nearest:
    label: int  # the label of the nearest training glyph (the first, in training order, on a tie)
    distance: int  # pixels that differ

    @property
    def far(self) -> bool:
        return self.distance >= FAR


def nearest(glyphs: np.ndarray, x_train: np.ndarray, y_train: np.ndarray) -> list[Nearest]:
    """For glyphs : (n, 30), the nearest of x_train : (N, 30) by Hamming distance, and its label."""
    train_codes = codes(x_train)
    result = []
    for code in codes(glyphs):
        distances = bit_counts(np.bitwise_xor(train_codes, code))
        best = int(np.argmin(distances))
        result.append(Nearest(int(y_train[best]), int(distances[best])))
    return result


def bit_counts(words: np.ndarray) -> np.ndarray:
    """(n,) uint32 -> (n,) the number of bits set in each (np.bitwise_count, which NumPy 1.26 lacks)."""
    return np.unpackbits(words.view(np.uint8).reshape(-1, 4), axis=1).sum(axis=1)


def codes(glyphs: np.ndarray) -> np.ndarray:
    """glyphs : (n, 30) of 0/1 -> (n,) uint32, pixel i as bit i: XOR and a bit count give distances."""
    return np.packbits(glyphs, axis=1, bitorder="little").view("<u4")[:, 0]
