"""The project's error type, the one place that turns it into an exit status, and the text of messages.

A `PipelineError` is a person's mistake or a missing/corrupt file: its message is one line
that names the file and the key or line, what was expected and what was found. Stage entry
points wrap `main` with `exit_on_error`, so such errors never print a traceback. A name that came
from elsewhere (a file's, a string in a model file) goes into a message through `shown`, so it cannot
break the line, fake another or send the terminal an escape sequence; a value found where another was
expected goes in through `describe` (or `quoted`, for a model file's array), so it is short and one line.
"""

from __future__ import annotations

import reprlib
import sys
from collections.abc import Callable
from typing import Any

BAD_INPUT = 2  # exit status for bad input, as argparse uses for usage errors


def _escaped(text: str) -> str:
    """Every character of `text` that is not printable (a newline, an escape, a right-to-left override, a
    byte that is not UTF-8) written as its Python escape."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def shown(text: str, limit: int = 200) -> str:
    """`text` for a one-line message: escaped (`_escaped`), and at most `limit` characters of it, then "..."."""
    safe = _escaped(text[: limit + 1])
    return safe if len(text) <= limit and len(safe) <= limit else safe[:limit] + "..."


def clipped(text: str, limit: int) -> str:
    """`text`, or its first `limit - 3` characters and "..." when it is longer than `limit`."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str) -> str:
    """`text` escaped (`_escaped`), at most 200 characters in all."""
    return clipped(_escaped(text), 200)


_SHORT = reprlib.Repr()  # keyword arguments need Python 3.12
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxlong = 2, 4, 4, 40, 40


def describe(value: Any) -> str:
    """A short one-line rendering of a found value; bounded even for YAML alias bombs."""
    if value is None:
        return "nothing (null)"
    text = _SHORT.repr(value) if isinstance(value, (str, list, dict)) else str(value)
    return f"{clipped(text, 40)} ({type(value).__name__})"


def quoted(value: Any, numbers: bool = False) -> str:
    """An array from a model file, as an error line may show it: short, one line, printable (a few
    numbers shown as numbers when `numbers`)."""
    kinds = "USiub" if numbers and value.size <= 8 else "US"
    return shown(repr(value.tolist()) if value.dtype.kind in kinds else f"{value.dtype}{value.shape}", 60)


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message (its type's name when it has none), as `shown` writes it."""
    text = str(err).strip() or type(err).__name__
    return shown(text.splitlines()[0])


class PipelineError(Exception):
    """An error a person can fix; its message is a single line."""

    def __init__(self, message: str, status: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.status = status


def exit_on_error(main: Callable[[], int | None]) -> int:
    """Run `main`; on a PipelineError print its one-line message to stderr and return its status."""
    try:
        return main() or 0
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
