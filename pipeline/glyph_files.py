"""Reading glyph files: 5 lines of 6 characters, `#` or `1` for ink, `.` or `0` for blank.

Apart from glyphs.py so that an edit to the reader reruns only the stages that read files (predict,
explore), not make_dataset and train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.glyphs import parse_glyph

MAX_GLYPH_BYTES = 4096  # a glyph file is ~40 bytes; reading more only wastes time on a wrong file


def sample_files(directory: Path = paths.SAMPLES) -> list[Path]:
    """The glyph files *.txt of `directory`, sorted by name; none is an error."""
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise PipelineError(f"{directory}: expected glyph files *.txt, found none")
    return files


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
        raise PipelineError(
            f"{path}: expected ASCII text, found byte 0x{raw[err.start]:02x} at offset {err.start}"
        ) from None
    return parse_glyph(text, str(path))
