"""The A/B/C bitmaps, ASCII glyph files, and noisy variants of the glyphs.

A glyph is 5 rows of 6 pixels, stored as a flat row-major vector of 30 uint8 values (1 = ink).
Everything here is pure: arrays and strings in, arrays and strings out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

ROWS, COLS = 5, 6
PIXELS = ROWS * COLS
CLASSES = ("A", "B", "C")

# The tutorial's three bitmaps, drawn as they look.
_DRAWN = {
    "A": ("..##..",
          ".#..#.",
          "######",
          "#....#",
          "#....#"),
    "B": (".####.",
          ".#..#.",
          ".####.",
          ".#..#.",
          ".####."),
    "C": (".####.",
          ".#....",
          ".#....",
          ".#....",
          ".####."),
}

INK, BLANK = frozenset("#1"), frozenset(".0")
MAX_GLYPH_BYTES = 4096  # a glyph file is ~40 bytes; reading more only wastes time on a wrong file


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


def _parse_row(line: str, where: str) -> list[int]:
    if len(line) != COLS:
        raise PipelineError(f"{where}: expected {COLS} pixels, found {len(line)} characters {line[:20]!r}")
    bad = [ch for ch in line if ch not in INK and ch not in BLANK]
    if bad:
        raise PipelineError(f"{where}: expected only '#', '1', '.' or '0', found {bad[0]!r}")
    return [1 if ch in INK else 0 for ch in line]


def read_glyph(path: Path) -> np.ndarray:
    """Read and parse one glyph file; any problem is a PipelineError naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_GLYPH_BYTES + 1)
    except IsADirectoryError:
        raise PipelineError(f"{path}: expected a glyph file, found a directory") from None
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file") from None
    except OSError as err:
        raise PipelineError(f"{path}: cannot read: {err.strerror}") from None
    if len(raw) > MAX_GLYPH_BYTES:
        raise PipelineError(f"{path}: expected a glyph of about 40 bytes, found more than {MAX_GLYPH_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not a pixel
    except UnicodeDecodeError as err:
        raise PipelineError(f"{path}: expected ASCII text, found byte 0x{raw[err.start]:02x} at offset {err.start}") from None
    return parse_glyph(text, str(path))


def render(glyph: np.ndarray) -> list[str]:
    """A (30,) glyph as 5 strings of `#` and `.`, the inverse of `parse_glyph`."""
    rows = np.asarray(glyph).reshape(ROWS, COLS)
    return ["".join("#" if p else "." for p in row) for row in rows]


def noisy_copies(glyphs: np.ndarray, copies: int, noise: float, rng: np.random.Generator,
                 block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """`copies` noisy variants of every glyph, interleaved A, B, C, A, B, C, ...

    glyphs : (k, 30) uint8 -> x : (copies * k, 30) uint8, y : (copies * k,) uint8.
    Each pixel is flipped independently with probability `noise`. Rows are drawn in blocks so
    memory stays near the size of the uint8 output; the stream depends only on `rng`'s state.
    """
    k = len(glyphs)
    x = np.empty((copies * k, PIXELS), dtype=np.uint8)
    for start in range(0, len(x), block):
        stop = min(start + block, len(x))
        flips = rng.random((stop - start, PIXELS), dtype=np.float32) < noise  # (m, 30) bool
        rows = glyphs[np.arange(start, stop) % k]                            # (m, 30) uint8
        np.bitwise_xor(rows, flips, out=x[start:stop])
    y = np.tile(np.arange(k, dtype=np.uint8), copies)
    return x, y
