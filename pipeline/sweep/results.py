"""A sweep's results: the progress line, the ranking, sweeps/NAME.tsv and sweeps/plots/NAME.json."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import shown
from pipeline.progress import Progress
from pipeline.sweep.sweep_file import SECTIONS, Range, Sweep
from pipeline.sweep.trials import Trial
from pipeline.sweep.work import flat
from pipeline.writing import save_json, save_text, together


@dataclass
class Tally:
    """What the progress line shows."""

    total: int
    done: int = 0
    failed: int = 0
    reused: int = 0  # of done and failed: results of an earlier run
    running: int = 0  # trials a worker has now
    best: tuple[float, int] | None = None  # (metric, trial)
    engine: str = ""  # what trains the trials on this machine's workers
    started: float | None = None  # when the first trial was sent (time.monotonic)


@dataclass
class Outcome:
    trial: Trial
    metrics: str | None = None  # metrics.json's text
    error: str | None = None
    reused: bool = False

    def value(self, metric: str) -> float | None:
        return None if self.metrics is None else flat(json.loads(self.metrics)).get(metric)


class Display:
    """The progress line (a terminal only) and the notes and errors between its updates (always)."""

    def __init__(self, sweep: Sweep, tally: Tally) -> None:
        self.sweep, self.tally = sweep, tally
        self.bar = Progress(tally.total, label=f"sweep {sweep.name}", quiet=0.0)

    def tick(self) -> None:
        t = self.tally
        left = t.total - t.done - t.failed
        parts = [f"{t.done} done", f"{t.running} running", f"{t.failed} failed", f"{t.reused} reused", f"{left} left"]
        text = ", ".join(parts)
        if t.best:
            text += f"; best {self.sweep.metric} {t.best[0]:g} (trial {t.best[1]})"
        if t.engine:
            text += f"; {t.engine}"
        ran = t.done + t.failed - t.reused  # finished in this run: what the time left is estimated from
        if t.started is not None and ran and left:
            text += f"; about {_duration((time.monotonic() - t.started) * left / ran)} left"
        self.bar.show(t.done + t.failed, text)

    def note(self, line: str) -> None:
        if self.bar.shown:
            self.bar.stream.write("\r" + " " * self.bar.width + "\r")
        print(line, file=sys.stderr, flush=True)
        self.bar.shown = False
        self.tick()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def record(outcomes: dict[int, Outcome], sweep: Sweep, tally: Tally, display: Display, outcome: Outcome) -> None:
    outcomes[outcome.trial.number] = outcome
    tally.reused += outcome.reused
    if outcome.error is not None:
        tally.failed += 1
        display.note(f"error: {shown(outcome.error)}")
        return
    tally.done += 1
    value = outcome.value(sweep.metric)
    if value is not None and (tally.best is None or _better(sweep, value, tally.best[0])):
        tally.best = (value, outcome.trial.number)
    display.tick()


def _better(sweep: Sweep, a: float, b: float) -> bool:
    return a > b if sweep.goal == "max" else a < b


def ranking(sweep: Sweep, outcomes: dict[int, Outcome]) -> list[Outcome]:
    """The trials with the metric, best first; a tie goes to the earlier trial."""
    ranked = [o for o in outcomes.values() if o.value(sweep.metric) is not None]
    sign = -1 if sweep.goal == "max" else 1
    return sorted(ranked, key=lambda o: (sign * o.value(sweep.metric), o.trial.number))


def experiment_name(sweep: Sweep, rank: int) -> str:
    return f"{sweep.name}-{rank}"


def write_results(
    sweep: Sweep, outcomes: dict[int, Outcome], keys: list[str], code: str, kept: frozenset[int] = frozenset()
) -> tuple[Path, Path]:
    """sweeps/NAME.tsv, a row per trial in order, and sweeps/plots/NAME.json, for DVC's plots. The experiment
    column names the experiments of the ranks `kept`: those that exist."""
    ranked = ranking(sweep, outcomes)
    rank = {o.trial.number: i for i, o in enumerate(ranked, start=1)}
    swept = [*sweep.ranges, *sweep.grid]
    named = [
        f"{paths.METRICS}:{key}" if key.split(".")[-1] in SECTIONS.get(key.split(".")[0], {}) else key for key in keys
    ]
    header = ["trial", "status", "rank", *swept, *named, "experiment", "code", "error"]  # train.loss: as DVC says it
    rows = []
    for number in sorted(outcomes):
        o = outcomes[number]
        metrics = flat(json.loads(o.metrics)) if o.metrics else {}
        r = rank.get(number)
        rows.append(
            [
                str(number),
                "ok" if o.error is None else "failed",
                str(r or ""),
                *(_text(o.trial.settings[key]) for key in swept),
                *(_text(metrics[key]) if key in metrics else "" for key in keys),
                experiment_name(sweep, r) if r in kept else "",
                code,
                cell(o.error or ""),
            ]
        )
    tsv, plot = paths.SWEEPS / f"{sweep.name}.tsv", paths.SWEEP_PLOTS / f"{sweep.name}.json"
    with together():
        save_text(tsv, "\n".join("\t".join(row) for row in [header, *rows]) + "\n")
        save_json(plot, plot_rows(sweep, ranked, swept))
    return tsv, plot


def cell(text: str) -> str:
    """Text for a TSV cell, the terminal or a page: one line (`shown` escapes tabs, newlines and every other
    character that is not printable) with no `<`, `>` or `&`, so that no reader takes it for markup."""
    return "".join(rf"\x{ord(ch):02x}" if ch in "<>&" else ch for ch in shown(text, 400))


def _text(value: Any) -> str:
    """A value as JSON writes it (0.3, true, "bce" without quotes): a metric's cell is metrics.json's number."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def plot_rows(sweep: Sweep, ranked: list[Outcome], swept: list[str]) -> list[dict[str, Any]]:
    """A row per trial and swept key: {'key': 'test.accuracy against train.lr', 'kind': 'number', 'value': 0.3,
    'score': ..., 'trial': 4}. A key drawn from a range is a number (a continuous axis); a key of the grid, or
    of a list to choose from, is a category (its values in the order the sweep file gives them, as text); a
    key held at one value gets no panel."""
    rows = []
    for key in swept:
        seen = list(dict.fromkeys(json.dumps(o.trial.settings[key]) for o in ranked))
        if len(seen) < 2:  # a key the sweep holds at one value: a panel would say nothing
            continue
        numeric = isinstance(sweep.ranges.get(key), Range)
        for o in sorted(ranked, key=lambda o: o.trial.number):
            value = o.trial.settings[key]
            rows.append(
                {
                    "key": f"{sweep.metric} against {key}",
                    "kind": "number" if numeric else "category",
                    "value": value if numeric else _text(value),
                    "score": o.value(sweep.metric),
                    "trial": o.trial.number,
                }
            )
    return rows
