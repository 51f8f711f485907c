"""Charts drawn with Pillow: the training curves and the confusion matrix as PNGs. Used by evaluate.

Two small charts do not need a plotting library: matplotlib took about a second to import, most of
evaluate's time and a quarter of `dvc repro -f`'s. Every coordinate is rounded from float64 arithmetic
(+ - * / only), lines are one pixel wide (integer steps; a wide line's corners would come from
libm's trigonometry), the tick values come from a fixed list of steps, and Pillow writes no timestamp
or software version, so the PNG bytes depend only on the numbers drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.pictures import PAPER, TEXT, save_png

FONT_SIZE = 13
AXIS, GRID_LINE = (90, 90, 90), (225, 225, 225)
LOSS_COLOR, ACCURACY_COLOR = (207, 34, 46), (26, 127, 55)
BLUES = (np.array([247, 251, 255]), np.array([8, 48, 107]))  # the confusion ramp: 0 to the largest count
STEPS = [m * 10.0**k for k in range(-6, 7) for m in (1, 2, 5)]  # tick spacings to choose from


def spacing(span: float, most: int = 6) -> float:
    """The smallest tick spacing of STEPS that puts at most `most` ticks on a span."""
    return next((s for s in STEPS if span / s <= most - 1), STEPS[-1])


def ticks(low: float, high: float) -> list[float]:
    """Round values from low to high, `spacing` apart."""
    step = spacing(high - low)
    first = np.ceil(low / step) * step
    return [float(v) for v in first + step * np.arange(int((high - first) / step + 1e-9) + 1)]


def label(v: float) -> str:
    return f"{v:.6g}"


def text_up(image: Image.Image, xy: tuple[int, int], text: str, font: ImageFont.FreeTypeFont) -> None:
    """`text` read bottom to top, centred on xy (a y-axis label): drawn flat, turned a quarter."""
    _, _, right, bottom = font.getbbox(text)
    flat = Image.new("RGB", (right + 2, bottom + 2), PAPER)
    ImageDraw.Draw(flat).text((1, 1), text, fill=TEXT, font=font)
    up = flat.transpose(Image.Transpose.ROTATE_90)
    image.paste(up, (xy[0] - up.width // 2, xy[1] - up.height // 2))


def panel(
    image: Image.Image,
    box: tuple[int, int, int, int],
    x: np.ndarray,
    y: np.ndarray,
    y_range: tuple[float, float],
    color: tuple[int, int, int],
    title: str,
    y_name: str,
) -> None:
    """One line chart in box = (left, top, right, bottom) of the plotting area, with its axes and grid."""
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=FONT_SIZE)
    left, top, right, bottom = box
    x_low, x_high = 0.0, float(max(x[-1], 1)) if len(x) else 1.0  # epochs from 0, as the curves start at 1
    y_low, y_high = y_range

    def px(vx: np.ndarray) -> np.ndarray:
        return np.rint(left + (vx - x_low) / (x_high - x_low) * (right - left)).astype(int)

    def py(vy: np.ndarray) -> np.ndarray:
        return np.rint(bottom - (vy - y_low) / (y_high - y_low) * (bottom - top)).astype(int)

    for v in ticks(y_low, y_high):
        row = int(py(np.array(v)))
        draw.line((left, row, right, row), fill=GRID_LINE)
        draw.line((left - 4, row, left, row), fill=AXIS)
        draw.text((left - 6, row), label(v), fill=TEXT, font=font, anchor="rm")
    for v in ticks(x_low, x_high):
        col = int(px(np.array(v)))
        draw.line((col, top, col, bottom), fill=GRID_LINE)
        draw.line((col, bottom, col, bottom + 4), fill=AXIS)
        draw.text((col, bottom + 6), label(v), fill=TEXT, font=font, anchor="mt")
    draw.rectangle(box, outline=AXIS)
    points = list(zip(px(x.astype(np.float64)).tolist(), py(np.clip(y, y_low, y_high).astype(np.float64)).tolist()))
    for shift in (0, 1) if points else ():  # two pixels thick, from one-pixel lines: integer steps everywhere
        line = [(u, v + shift) for u, v in points]
        draw.line(line if len(line) > 1 else line * 2, fill=color)  # one epoch: a dot; none: no line
    draw.text(((left + right) // 2, top - 8), title, fill=TEXT, font=font, anchor="md")
    draw.text(((left + right) // 2, bottom + 24), "epoch", fill=TEXT, font=font, anchor="mt")
    text_up(image, (left - 52, (top + bottom) // 2), y_name, font)


def curves(path: Path, step: np.ndarray, loss: np.ndarray, accuracy: np.ndarray, loss_name: str) -> None:
    """Loss and accuracy per epoch, side by side: 800 x 300 pixels."""
    image = Image.new("RGB", (800, 300), PAPER)
    finite = loss[np.isfinite(loss)]
    highest = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    loss_top = float(np.ceil(highest / spacing(highest)) * spacing(highest))  # the axis ends on a tick
    panel(image, (70, 30, 370, 245), step, loss, (0.0, loss_top), LOSS_COLOR, "Training loss", f"{loss_name} loss")
    panel(image, (470, 30, 770, 245), step, accuracy, (0.0, 1.0), ACCURACY_COLOR, "Training accuracy", "accuracy")
    save_png(path, image)


def confusion(path: Path, counts: np.ndarray, classes: Sequence[str]) -> None:
    """counts : (K, K), rows actual, columns predicted, each cell shaded by and labelled with its count."""
    font, k, cell = ImageFont.load_default(size=FONT_SIZE), len(classes), 64
    left, top = 70, 40
    image = Image.new("RGB", (left + k * cell + 20, top + k * cell + 50), PAPER)
    draw = ImageDraw.Draw(image)
    largest = max(int(counts.max()), 1)
    for (i, j), n in np.ndenumerate(counts):
        t = n / largest
        shade = tuple(int(c) for c in np.rint(BLUES[0] + t * (BLUES[1] - BLUES[0])))
        x, y = left + j * cell, top + i * cell
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=shade)
        draw.text((x + cell // 2, y + cell // 2), str(n), fill=PAPER if t > 0.5 else TEXT, font=font, anchor="mm")
    draw.rectangle((left - 1, top - 1, left + k * cell, top + k * cell), outline=AXIS)
    for c, name in enumerate(classes):
        draw.text((left + c * cell + cell // 2, top + k * cell + 4), name, fill=TEXT, font=font, anchor="mt")
        draw.text((left - 6, top + c * cell + cell // 2), name, fill=TEXT, font=font, anchor="rm")
    draw.text((left + k * cell // 2, top + k * cell + 24), "predicted", fill=TEXT, font=font, anchor="mt")
    draw.text((left + k * cell // 2, top - 10), "Test confusion", fill=TEXT, font=font, anchor="md")
    text_up(image, (left - 40, top + k * cell // 2), "actual", font)
    save_png(path, image)
