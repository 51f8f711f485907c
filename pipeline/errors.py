"""The project's error type and the one place that turns it into an exit status.

A `PipelineError` is a person's mistake or a missing/corrupt file: its message is one line
that names the file and the key or line, what was expected and what was found. Stage entry
points wrap `main` with `exit_on_error`, so such errors never print a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

BAD_INPUT = 2  # exit status for bad input, as argparse uses for usage errors


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
