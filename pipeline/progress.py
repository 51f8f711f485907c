"""A one-line progress display on stderr for long training, and nothing at all when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

QUIET_SECONDS = 2.0  # shorter runs finish before a bar would help
WIDTH = 30


class Progress:
    """Call with (epoch, loss, accuracy) after each epoch; `close()` ends the line."""

    def __init__(self, epochs: int, stream: TextIO | None = None, clock=time.monotonic) -> None:
        self.epochs, self.stream, self.clock = epochs, stream or sys.stderr, clock
        self.enabled = self.stream.isatty()
        self.start, self.shown = clock(), False

    def __call__(self, epoch: int, loss: float, accuracy: float) -> None:
        if not self.enabled or (not self.shown and self.clock() - self.start < QUIET_SECONDS):
            return
        done = WIDTH * epoch // self.epochs
        bar = "#" * done + "." * (WIDTH - done)
        self.stream.write(f"\rtrain [{bar}] epoch {epoch}/{self.epochs} loss {loss:.4f} accuracy {accuracy:.3f}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
