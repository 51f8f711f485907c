"""Atomic, deterministic saving and loading of the files passed between stages.

Writers put bytes in a temporary file in the target's directory and rename it over the target,
so an interrupted stage leaves the old file or none, never a truncated one. Outputs carry no
timestamps or paths, floats are written with a fixed number of decimals, and JSON keys keep the
order the code gives them, so identical results are identical bytes.
Readers check shape and dtype and turn any problem into a one-line PipelineError that names the
file and the stage to rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import tempfile
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError, shown
from pipeline.glyphs import CLASSES, PIXELS

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (os.umask can only read it by setting it)
DECIMALS = 6  # enough to see any real change in a metric, few enough to hide last-bit noise
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


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it to `path` (inside `together()`,
    once every write of the block has succeeded). A write the disk refuses (full, read-only, gone) is a
    one-line PipelineError naming `path`, and the file there before is left as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if _PENDING:
            _PENDING[-1].append((Path(tmp), path))
        else:
            os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            reason = shown(err.strerror) if err.strerror else _first_line(err)
            raise PipelineError(f"{shown(str(path))}: cannot write ({reason}); {_KEPT}") from None
        raise


_KEPT = "the files there before are kept"
_PENDING: list[list[tuple[Path, Path]]] = []  # per open together() block: (temporary file, target) to rename


@contextlib.contextmanager
def together() -> Iterator[None]:
    """Writes inside the block land together: each goes to a temporary file, and all are renamed into
    place only when the block ends without an error; otherwise none is, so a stage's outputs (a model and
    its trace) never mix two runs."""
    pending: list[tuple[Path, Path]] = []
    _PENDING.append(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _PENDING.pop()
    for tmp, target in pending:
        os.replace(tmp, target)


def save_npy(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz archive that np.load reads, with the same bytes under every Python version and OS.

    np.savez leaves the zip headers to Python's zipfile, whose output has changed between patch
    releases (3.11.2 and 3.11.7 write different headers for the same arrays) and depends on the OS.
    Here every header field is fixed: stored (not compressed), dated 1980-01-01, made on Unix, mode 0644.
    """

    def write(f: IO[bytes]) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                entry.create_system, entry.external_attr = 3, 0o100644 << 16
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
                archive.writestr(entry, buffer.getvalue())

    write_atomic(path, write)


def save_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_json(path: Path, obj: Any) -> None:
    """`obj` as JSON, refused (a one-line error, nothing written) if it holds NaN or an infinity, which
    JSON has no words for: Python would write `NaN`, which JSON readers (DVC's, a browser's) refuse."""
    save_text(path, json_text(path, obj))


def json_text(path: Path, obj: Any) -> str:
    """The text `save_json` writes to `path` for `obj` (so a sweep's trial gets the stage's very bytes)."""
    check_finite(path, obj)
    return json.dumps(rounded(obj), indent=2, allow_nan=False) + "\n"


def check_finite(path: Path, obj: Any, where: str = "") -> None:
    """Raise a PipelineError naming `path` and the key of the first float in `obj` that is not finite."""
    if isinstance(obj, dict):
        items = [(f"{where}.{key}" if where else str(key), value) for key, value in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(f"{where}[{i}]", value) for i, value in enumerate(obj)]
    elif isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        raise PipelineError(f"{shown(str(path))}: {shown(where)}: expected a finite number, found {obj}; not written")
    else:
        return
    for key, value in items:
        check_finite(path, value, key)


def save_tsv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Columns of equal length as a TSV with a header; floats get DECIMALS decimals."""
    names = list(columns)
    cells = [[_cell(v) for v in columns[n]] for n in names]
    lines = ["\t".join(names)] + ["\t".join(row) for row in zip(*cells)]
    save_text(path, "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.{DECIMALS}f}"
    return str(value)


def rounded(obj: Any) -> Any:
    """`obj` with every float rounded to DECIMALS and NumPy scalars made plain Python."""
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), DECIMALS)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


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
        raise stale(path, f"unreadable ({_first_line(err)})", stage) from None


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
        raise stale(path, f"unreadable ({_first_line(err)})", stage) from None


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return shown(text.splitlines()[0])


def digest(*arrays: np.ndarray) -> str:
    """A short fingerprint of arrays' dtypes, shapes and bytes: the same arrays give the same string."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """X : (N, 30) uint8 of 0/1 and y : (N,) uint8 labels of `split`, checked."""
    x_path, y_path = paths.split(split)
    X = load_npy(x_path, np.uint8, (None, PIXELS), "make_dataset")
    if len(X) == 0:  # make_dataset writes the three clean glyphs and at least one test glyph per letter
        raise stale(x_path, "expected at least one glyph, found none", "make_dataset")
    y = load_npy(y_path, np.uint8, (len(X),), "make_dataset")
    if len(X) and X.max() > 1:
        raise stale(x_path, f"expected pixels 0 or 1, found {X.max()}", "make_dataset")
    if len(y) and y.max() >= len(CLASSES):
        raise stale(y_path, f"expected labels 0..{len(CLASSES) - 1}, found {y.max()}", "make_dataset")
    return X, y


def load_history(path: Path = paths.HISTORY) -> dict[str, np.ndarray]:
    """The per-epoch history train wrote: columns step (int), loss and accuracy (float)."""
    columns = ["step", "loss", "accuracy"]
    check_regular(path, "train")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise missing(path, "train") from None
    except (OSError, UnicodeDecodeError) as err:
        raise stale(path, f"unreadable ({_first_line(err)})", "train") from None
    header = lines[0].split("\t") if lines else []
    if header != columns:
        raise stale(path, f"expected the header step, loss, accuracy, found {header}", "train")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        try:
            rows.append([float(cell) for cell in line.split("\t")])
        except ValueError:
            rows.append([])  # reported below with the line number
        if len(rows[-1]) != len(columns):
            raise stale(path, f"line {lineno}: expected 3 numbers, found {line[:40]!r}", "train")
        if not all(map(math.isfinite, rows[-1])):  # a NaN would reach the explorer's JSON.parse and the curves
            raise stale(path, f"line {lineno}: expected finite numbers, found {line[:40]!r}", "train")
        if rows[-1][0] != lineno - 1:  # train writes epochs 1, 2, ... in order
            raise stale(path, f"line {lineno}: expected step {lineno - 1}, found {line[:40]!r}", "train")
    table = np.array(rows, dtype=np.float64).reshape(-1, len(columns))
    return {"step": table[:, 0].astype(np.int64), "loss": table[:, 1], "accuracy": table[:, 2]}
