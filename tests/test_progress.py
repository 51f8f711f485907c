"""The progress line: shown on a terminal once training outlasts a couple of seconds, never elsewhere."""

from __future__ import annotations

import io

from pipeline.progress import QUIET_SECONDS, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_run_on_a_terminal_shows_epoch_loss_and_accuracy():
    now = [0.0]
    stream = Terminal()
    progress = Progress(10, stream, clock=lambda: now[0])
    progress(1, 0.9, 0.3)
    assert stream.getvalue() == ""  # too early to bother
    now[0] = QUIET_SECONDS + 0.1
    progress(5, 0.5, 0.6667)
    progress.close()
    line = stream.getvalue()
    assert "epoch 5/10" in line and "loss 0.5000" in line and "accuracy 0.667" in line and line.endswith("\n")
    assert "[" + "#" * 15 + "." * 15 + "]" in line


def test_nothing_is_written_when_stderr_is_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(10, stream, clock=lambda: 1e9)
    progress(3, 0.5, 0.5)
    progress.close()
    assert stream.getvalue() == ""
