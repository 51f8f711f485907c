"""Pixel-grid pictures drawn with Pillow (a tenth of matplotlib's start-up cost): glyphs and weight maps.

Used by evaluate and predict. The PNG bytes depend only on the pixels and captions: no timestamps
or software versions are written.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.glyphs import COLS, ROWS
from pipeline.writing import write_atomic

SCALE = 10  # screen pixels per glyph pixel
MAP_SCALE = 28  # for weight maps, whose shades must be told apart
PAD = 8  # space between cells
FONT_SIZE = 16  # caption text about 14 px from ascender to descender (size 11 gave 10: hard to read)
LINE = 20  # height of one caption line
INK, PAPER, GRID = (20, 20, 20), (255, 255, 255), (200, 200, 200)
RIGHT, WRONG, TEXT = (26, 127, 55), (207, 34, 46), (40, 40, 40)
NEGATIVE, POSITIVE = np.array([33, 102, 172]), np.array([178, 24, 43])  # blue and red ends of the weight maps


def glyph_cells(glyphs: np.ndarray) -> np.ndarray:
    """glyphs : (n, 30) of 0/1 -> (n, ROWS, COLS, 3) uint8 RGB, ink dark on white."""
    return np.where(glyphs.reshape(-1, ROWS, COLS, 1) > 0, INK, PAPER).astype(np.uint8)


def weight_cells(w1: np.ndarray) -> tuple[np.ndarray, float]:
    """w1 : (30, H) -> one (ROWS, COLS, 3) map per hidden unit, red positive, blue negative, white 0.

    All maps share one scale, the largest |weight|, which is returned for the caption.
    """
    limit = float(np.max(np.abs(w1))) or 1.0
    t = (w1.T / limit).reshape(-1, ROWS, COLS, 1)  # (H, 5, 6, 1) in [-1, 1]
    white = np.array(PAPER, dtype=float)
    rgb = np.where(t >= 0, white + t * (POSITIVE - white), white - t * (NEGATIVE - white))
    return np.rint(rgb).astype(np.uint8), limit


def grid(
    path: Path,
    cells: np.ndarray,
    captions: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    columns: int,
    heading: str | Sequence[str],
    scale: int = SCALE,
) -> None:
    """Draw cells : (n, ROWS, COLS, 3) in rows of `columns`, each with a caption (lines split on '\\n')
    shown whole: a column is as wide as its longest caption line. `heading` may have several lines."""
    headings = [heading] if isinstance(heading, str) else list(heading)
    font = ImageFont.load_default(size=FONT_SIZE)
    n, lines = len(cells), max([c.count("\n") + 1 for c in captions] or [1])
    rows, cell_w, cell_h = max(1, -(-n // columns)), COLS * scale, ROWS * scale
    widest = max([font.getlength(line) for c in captions for line in c.split("\n")] or [0])
    step_x, step_y, top = (
        max(cell_w, int(widest) + 2) + PAD,
        cell_h + lines * LINE + PAD,
        PAD + LINE * len(headings) + 4,
    )
    width = max(PAD + max(1, min(n, columns)) * step_x, 2 * PAD + int(max(font.getlength(h) for h in headings)))
    image = Image.new("RGB", (width, top + rows * step_y), PAPER)
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(headings):
        draw.text((PAD, PAD // 2 + k * LINE), line, fill=TEXT, font=font)
    for i, (cell, caption, color) in enumerate(zip(cells, captions, colors)):
        x, y = PAD + (i % columns) * step_x, top + (i // columns) * step_y
        big = np.kron(cell, np.ones((scale, scale, 1), dtype=np.uint8))
        image.paste(Image.fromarray(big, "RGB"), (x, y))
        for k in range(1, COLS):
            draw.line((x + k * scale, y, x + k * scale, y + cell_h - 1), fill=GRID)
        for k in range(1, ROWS):
            draw.line((x, y + k * scale, x + cell_w - 1, y + k * scale), fill=GRID)
        draw.rectangle((x - 1, y - 1, x + cell_w, y + cell_h), outline=GRID)
        draw.multiline_text((x, y + cell_h + 2), caption, fill=color, font=font, spacing=2)
    save_png(path, image)


def save_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def colors_for(wrong: Sequence[bool]) -> list[tuple[int, int, int]]:
    return [WRONG if bad else RIGHT for bad in wrong]
