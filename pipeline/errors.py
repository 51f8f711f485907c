"""The project's error type and the one place that turns it into an exit status.

A `PipelineError` is a person's mistake or a missing/corrupt file: its message is one line
that names the file and the key or line, what was expected and what was found. Stage entry
points wrap `main` with `exit_on_error`, so such errors never print a traceback. A name that came
from elsewhere (a file's, a string in a model file) goes into a message through `shown`, so it cannot
break the line, fake another or send the terminal an escape sequence.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

BAD_INPUT = 2  # exit status for bad input, as argparse uses for usage errors


def shown(text: str, limit: int = 200) -> str:
    """`text` for a one-line message: every character that is not printable (a newline, an escape, a
    right-to-left override, a byte that is not UTF-8) written as its Python escape, and at most `limit`
    characters of it."""
    safe = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[: limit + 1])
    return safe if len(text) <= limit and len(safe) <= limit else safe[:limit] + "..."


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
