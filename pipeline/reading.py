"""Hardened reading of the files passed between stages: .npy arrays and .npz archives.

Nothing that is not a regular file is opened, sizes are checked before anything is allocated, and
shape and dtype before anything is used; any problem is a one-line PipelineError that names the file
and the stage to rerun.
"""

from __future__ import annotations

import math
import os
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError, first_line, shown

# What np.load raises on a damaged file: besides I/O and format errors, a header with a huge shape
# (MemoryError), a broken header string (TokenError, SyntaxError, or a Warning that _np_load makes an
# error), and a zip entry claiming an unsupported version or method (NotImplementedError), encryption
# (RuntimeError) or compression (zlib.error).
_UNREADABLE = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    MemoryError,
    zipfile.BadZipFile,
    tokenize.TokenError,
    SyntaxError,
    Warning,
    NotImplementedError,
    RuntimeError,
    zlib.error,
)


def _np_load(f: IO[bytes]) -> np.ndarray:
    """np.load of a .npy file (its own size bounds what is read); NumPy's warnings (about odd headers,
    which no stage writes) are errors, so a damaged file still gets a one-line message. An array stored
    in Fortran order comes back C-contiguous: the same values, in the layout every stage computes on."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = np.load(f, allow_pickle=False)
        if not isinstance(loaded, np.ndarray):
            loaded.close()
            raise _FoundArchive
        return _c_order(loaded)


class _FoundArchive(Exception):
    """np.load found a zip archive where a .npy file belongs."""


def _read_arrays(path: Path, stage: str) -> np.ndarray:
    """The array np.load finds in the .npy file `path`, any failure a one-line error naming the stage to rerun."""
    check_regular(path, stage)
    try:
        with open(path, "rb") as f:  # our handle: np.load leaks its own when a zip is corrupt
            return _np_load(f)
    except FileNotFoundError:
        raise missing(path, stage) from None
    except _FoundArchive:  # np.load reads a zip archive whatever the file's name
        raise stale(path, "expected a .npy array, found an .npz archive", stage) from None
    except _UNREADABLE as err:
        raise stale(path, f"unreadable ({first_line(err)})", stage) from None


def _read_entries(path: Path, names: tuple[str, ...], limit: int, stage: str) -> dict[str, np.ndarray]:
    """The arrays `names` (those present) of the .npz archive `path`, nothing else read. Each entry's
    size, as its zip header and its .npy header declare it, is checked before its data is read: at most
    `limit` bytes, and the two declarations agree (a 2 MB archive can hold a 2 GiB compressed entry)."""
    check_regular(path, stage)
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":  # np.load reads a .npy array whatever the file's name
                raise stale(path, "expected an .npz archive, found a .npy array", stage)
            f.seek(0)
            with warnings.catch_warnings(), zipfile.ZipFile(f) as archive:
                warnings.simplefilter("error")
                present = set(archive.namelist())
                entries = [archive.getinfo(f"{name}.npy") for name in names if f"{name}.npy" in present]
                return {e.filename[:-4]: _read_entry(path, archive, e, limit, stage) for e in entries}
    except FileNotFoundError:
        raise missing(path, stage) from None
    except _UNREADABLE as err:
        raise stale(path, f"unreadable ({first_line(err)})", stage) from None


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_entry(path: Path, archive: zipfile.ZipFile, entry: zipfile.ZipInfo, limit: int, stage: str) -> np.ndarray:
    """One .npy entry of `archive`, read only once its declared sizes are within `limit` and agree."""
    name = shown(entry.filename)
    if entry.file_size > limit:
        raise stale(path, f"{name}: expected at most {limit} bytes, found an entry of {entry.file_size}", stage)
    with archive.open(entry) as f:
        read_header = _NPY_HEADERS.get(np.lib.format.read_magic(f))
        if read_header is None:
            raise stale(path, f"{name}: expected a .npy entry of format 1.0 or 2.0", stage)
        shape, _, dtype = read_header(f)
        header = f.tell()
    if dtype.hasobject:
        raise stale(path, f"{name}: expected plain numbers or strings, found dtype {dtype}", stage)
    data = math.prod(shape) * dtype.itemsize
    if header + data != entry.file_size:
        raise stale(
            path,
            f"{name}: its .npy header declares {data} bytes of data, its zip entry holds {entry.file_size - header}",
            stage,
        )
    with archive.open(entry) as f:
        array = np.lib.format.read_array(f, allow_pickle=False)
    return _c_order(array)


def _c_order(array: np.ndarray) -> np.ndarray:
    """`array` in C order: a Fortran-order array (np.save of a transposed one) is copied, so every stage
    computes on the layout it expects (views such as `.view(np.uint32)` need the last axis contiguous)."""
    return array if array.flags.c_contiguous else array.copy(order="C")


def check_regular(path: Path, stage: str) -> None:
    """Refuse `path` unless it is a regular file, without opening it (a FIFO would block forever)."""
    try:
        kind = paths.special(path)
    except FileNotFoundError:
        raise missing(path, stage) from None
    except OSError as err:
        raise stale(path, f"unreadable ({err.strerror})", stage) from None
    if kind is not None:
        raise stale(path, f"expected a regular file, found {kind}", stage)


def load_npy(path: Path, dtype: np.dtype | type, shape: tuple[int | None, ...], stage: str) -> np.ndarray:
    """Load an array written by `stage`, checking dtype and shape (None matches any length)."""
    array = _read_arrays(path, stage)
    check_array(path, array, dtype, shape, stage)
    return array


def load_npz(path: Path, stage: str, names: tuple[str, ...], limit: int) -> dict[str, np.ndarray]:
    """The arrays `names` of an .npz archive written by `stage` (those it holds), each at most `limit`
    bytes; other entries are never read."""
    return _read_entries(path, names, limit, stage)


def check_array(
    path: Path, array: np.ndarray, dtype: np.dtype | type, shape: tuple[int | None, ...], stage: str
) -> None:
    """Raise a PipelineError naming `path` unless `array` has `dtype` and `shape`."""
    if array.dtype != np.dtype(dtype):
        raise stale(path, f"expected dtype {np.dtype(dtype)}, found {array.dtype}", stage)
    if array.ndim != len(shape) or any(want is not None and want != got for want, got in zip(shape, array.shape)):
        want = str(tuple("N" if s is None else s for s in shape)).replace("'", "")
        raise stale(path, f"expected shape {want}, found {array.shape}", stage)


def stale(path: Path, problem: str, stage: str) -> PipelineError:
    return PipelineError(f"{shown(str(path))}: {problem}; rerun `dvc repro {stage}`")


def missing(path: Path, stage: str) -> PipelineError:
    """`path` is not there: rerun `stage`; or, from a directory that is not the project root (a command run
    in data/samples/), run from the root: rerunning a stage would not help."""
    if paths.named_here(path) and not paths.at_root():
        return PipelineError(
            f"{shown(str(path))}: missing here, in {shown(os.getcwd())}, which is not the project root "
            f"(no {paths.DVC_YAML}); run the command from the project root"
        )
    return stale(path, "missing", stage)
