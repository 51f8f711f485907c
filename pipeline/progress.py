"""A one-line progress display on stderr for long work (training, a sweep), and nothing at all when stderr
is not a terminal."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

QUIET_SECONDS = 2.0  # shorter runs finish before a bar would help
WIDTH = 30


class Progress:
    """Training's bar: call with (epoch, loss, accuracy) after each epoch; `close()` ends the line. Other
    work calls `show(done, text)`; `label` starts the line and `quiet` seconds pass before it shows."""

    def __init__(
        self,
        epochs: int,
        stream: TextIO | None = None,
        clock=time.monotonic,
        label: str = "train",
        quiet: float = QUIET_SECONDS,
    ) -> None:
        self.epochs, self.stream, self.clock, self.label, self.quiet = epochs, stream or sys.stderr, clock, label, quiet
        self.enabled = self.stream.isatty()
        self.start, self.shown, self.width = clock(), False, 0

    def __call__(self, epoch: int, loss: float, accuracy: float) -> None:
        self.show(epoch, f"epoch {epoch}/{self.epochs} loss {loss:.4f} accuracy {accuracy:.3f}")

    def show(self, done: int, text: str) -> None:
        """The bar at `done` of the total (`epochs`), then `text`; a shorter text blanks the rest of the last."""
        if not self.enabled or (not self.shown and self.clock() - self.start < self.quiet):
            return
        filled = WIDTH * done // max(self.epochs, 1)
        line = f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {text}"
        # No wider than the terminal: a wrapped line is not returned to by "\r", and each redraw breaks another.
        line = line[: max(shutil.get_terminal_size().columns - 1, 20)]
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.shown, self.width = True, len(line)

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
