"""Atomic, deterministic writing of the files passed between stages.

Writers put bytes in a temporary file in the target's directory and rename it over the target,
so an interrupted stage leaves the old file or none, never a truncated one. Outputs carry no
timestamps or paths, floats are written with a fixed number of decimals, and JSON keys keep the
order the code gives them, so identical results are identical bytes.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline.errors import PipelineError, first_line, shown

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (os.umask can only read it by setting it)
DECIMALS = 6  # enough to see any real change in a metric, few enough to hide last-bit noise


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it to `path` (inside `together()`,
    once every write of the block has succeeded). A write the disk refuses (full, read-only, gone) is a
    one-line PipelineError naming `path`, and the file there before is left as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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
            reason = shown(err.strerror) if err.strerror else first_line(err)
            raise PipelineError(f"{shown(str(path))}: cannot write ({reason}); {_KEPT}") from None
        raise


def _remove_leftovers(path: Path) -> None:
    """Delete the temporary files of `path` that writers killed mid-write left (SIGKILL runs no cleanup): each
    name carries its writer's process id, and only those of processes that are gone are removed."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process has
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
    lines = ["\t".join(names)] + [tsv_row(row) for row in zip(*(columns[n] for n in names))]
    save_text(path, "\n".join(lines) + "\n")


def tsv_row(values: tuple) -> str:
    """One row of `save_tsv`'s: floats with DECIMALS decimals."""
    return "\t".join(_cell(v) for v in values)


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
