"""Reading glyph files: 5 lines of 6 characters, `#` or `1` for ink, `.` or `0` for blank.

Apart from glyphs.py so that an edit to the reader reruns only the stages that read files (predict,
explore), not make_dataset and train.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError, shown
from pipeline.glyphs import parse_glyph

MAX_GLYPH_BYTES = 4096  # a glyph file is ~40 bytes; reading more only wastes time on a wrong file
# A sample's name reaches the explorer, DVC's plots page (which embeds predictions.json unescaped),
# samples.png, dvc.lock and terminals: only characters that mean nothing in any of them, a length a
# caption can show, and no leading '-' (an option to a command) or '.' (a hidden file).
SAMPLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
MAX_NAME = 64


def sample_files(directory: Path = paths.SAMPLES) -> list[Path]:
    """The glyph files *.txt of `directory`, sorted by name; none, or a name outside SAMPLE_NAME, is an error."""
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise PipelineError(f"{directory}: expected glyph files *.txt, found none")
    root = Path.cwd().resolve()
    for path in files:
        check_name(path)
        target = path.resolve()
        if path.is_symlink() and not target.is_relative_to(root):
            raise PipelineError(
                f"{shown(str(path))}: a link to a file outside the project (not read); copy the glyph in instead"
            )
    return files


def check_name(path: Path) -> None:
    """Refuse a sample whose name is not SAMPLE_NAME, naming the first character that is not."""
    name = path.name
    if len(name) <= MAX_NAME and SAMPLE_NAME.fullmatch(name):
        return
    if len(name) > MAX_NAME:
        found = f"{len(name)} characters"
    else:
        bad = [ch for ch in name if not SAMPLE_NAME.fullmatch(f"_{ch}")]
        found = f"{bad[0]!a}" if bad else f"{name[0]!a} first"
    raise PipelineError(
        f"{shown(str(path))}: expected a file name of letters, digits, '.', '_' or '-', at most {MAX_NAME} "
        f"characters, not starting with '.' or '-', found {found}; rename it"
    )


def read_glyph(path: Path) -> np.ndarray:
    """Read and parse one glyph file; any problem is a PipelineError naming the file. Anything but a
    regular file is refused before it is opened: a FIFO would block, a device could act."""
    name = shown(str(path))
    try:
        kind = paths.special(path)
    except FileNotFoundError:
        raise PipelineError(f"{name}: no such file") from None
    except OSError as err:
        raise PipelineError(f"{name}: cannot read: {err.strerror}") from None
    if kind is not None:
        raise PipelineError(f"{name}: expected a glyph file, found {kind}")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_GLYPH_BYTES + 1)
    except OSError as err:
        raise PipelineError(f"{name}: cannot read: {err.strerror}") from None
    if len(raw) > MAX_GLYPH_BYTES:
        raise PipelineError(f"{name}: expected a glyph of about 40 bytes, found more than {MAX_GLYPH_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not a pixel
    except UnicodeDecodeError as err:
        raise PipelineError(
            f"{name}: expected ASCII text, found byte 0x{raw[err.start]:02x} at offset {err.start}"
        ) from None
    return parse_glyph(text, name)
