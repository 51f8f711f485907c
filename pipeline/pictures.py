"""Pixel-grid pictures of glyphs, drawn with Pillow: a tenth of matplotlib's start-up cost.

Used by the stages that show glyphs (evaluate, predict). The PNG bytes depend only on the pixels
and captions: no timestamps or software versions are written.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.artifacts import write_atomic
from pipeline.glyphs import COLS, ROWS

SCALE = 10        # screen pixels per glyph pixel
PAD = 8           # space between cells
CAPTION = 16      # caption height under each cell
INK, PAPER, GRID = (20, 20, 20), (255, 255, 255), (210, 210, 210)
RIGHT, WRONG, TEXT = (26, 127, 55), (207, 34, 46), (40, 40, 40)


def _font(size: int = 12) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _cell(glyph: np.ndarray, scale: int = SCALE) -> Image.Image:
    """A (30,) glyph as a (ROWS * scale, COLS * scale) RGB image with a thin grid."""
    pixels = np.where(glyph.reshape(ROWS, COLS, 1) > 0, INK, PAPER).astype(np.uint8)
    big = np.kron(pixels, np.ones((scale, scale, 1), dtype=np.uint8))
    big[::scale, :, :] = np.minimum(big[::scale, :, :], GRID)
    big[:, ::scale, :] = np.minimum(big[:, ::scale, :], GRID)
    return Image.fromarray(big, "RGB")


def glyph_grid(path: Path, glyphs: np.ndarray, captions: Sequence[str], wrong: Sequence[bool], columns: int,
               heading: str) -> None:
    """Draw glyphs : (n, 30) in rows of `columns`, each captioned (red when `wrong`), under a heading, as a PNG."""
    rows = max(1, -(-len(glyphs) // columns))
    cell_w, cell_h = COLS * SCALE, ROWS * SCALE
    top = PAD + CAPTION
    image = Image.new("RGB", (PAD + columns * (cell_w + PAD), top + rows * (cell_h + CAPTION + PAD)), PAPER)
    draw, font = ImageDraw.Draw(image), _font()
    draw.text((PAD, PAD // 2), heading, fill=TEXT, font=font)
    for i, (glyph, caption, bad) in enumerate(zip(glyphs, captions, wrong)):
        x, y = PAD + (i % columns) * (cell_w + PAD), top + (i // columns) * (cell_h + CAPTION + PAD)
        image.paste(_cell(glyph), (x, y))
        draw.rectangle((x - 1, y - 1, x + cell_w, y + cell_h), outline=GRID)
        draw.text((x, y + cell_h + 2), caption, fill=WRONG if bad else RIGHT, font=font)
    save_png(path, image)


def save_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))
