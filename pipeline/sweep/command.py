"""Search many params.yaml settings at once on Dask; keep the best as DVC experiments.

    python -m pipeline.sweep sweeps/NAME.yaml [--scheduler tcp://HOST:8786] [--workers N]

The command: the trials run before are reused, the rest run on Dask, the results are written, and the
best are kept as DVC experiments. Without --scheduler, a LocalCluster of worker processes (one thread
each) on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import native, paths
from pipeline.errors import PipelineError, shown
from pipeline.glyphs import CLASSES, clean_glyphs, shifted_copies
from pipeline.params import load_params, read_yaml, unchanged
from pipeline.sgd import ENGINE_VARIABLE, pays_to_compile
from pipeline.sweep.cluster import DIED, check_address, dask_client, run_all, wait_for_workers
from pipeline.sweep.experiments import keep_best, override
from pipeline.sweep.received import Refused, checked
from pipeline.sweep.results import Display, Outcome, Tally, ranking, record, write_results
from pipeline.sweep.sweep_file import Sweep, integer, load_sweep, metric_keys
from pipeline.sweep.trials import Trial, trials
from pipeline.sweep.work import code_files, code_hash
from pipeline.writing import save_json

WORKERS_PER_CORE = 4  # --workers at most: more processes than this only share the cores and fill memory


def load_cached(sweep: Sweep, trial: Trial, keys: dict[str, list[str]], display: Display) -> Outcome | None:
    """The trial's result from an earlier run of the same code on the same params, if there is one and it
    passes the checks a worker's result passes (`received.checked`); a file that fails them is said in one
    line and the trial runs again (its file is then overwritten)."""
    path = paths.SWEEP_CACHE / f"{trial.key}.json"
    try:
        if paths.special(path) is not None:
            raise OSError
        text = path.read_text(encoding="utf-8")
        saved = checked(json.loads(text), None, trial.doc, keys)
    except (OSError, ValueError) as err:  # not there yet, unreadable or refused: run the trial again
        if isinstance(err, (Refused, json.JSONDecodeError)):
            display.note(f"note: {path}: not a result of trial {trial.number} ({shown(str(err))}); running it again")
        return None
    return outcome(sweep, trial, saved, reused=True)


def outcome(sweep: Sweep, trial: Trial, result: dict[str, str], reused: bool = False) -> Outcome:
    error = result.get("error")
    return Outcome(trial, result.get("metrics"), error and f"{sweep.path}: trial {trial.number}: {error}", reused)


class SweepRun:
    """One run of a sweep: its trials, what is known of them so far, and what is shown."""

    def __init__(self, sweep: Sweep) -> None:
        self.params = load_params()  # params.yaml itself must pass, as check_params would say
        self.sweep, self.files = sweep, code_files()
        self.code = code_hash(self.files)
        self.trials = trials(sweep, read_yaml(paths.PARAMS), self.code)
        self.tally = Tally(len(self.trials))
        self.display = Display(sweep, self.tally)
        self.outcomes: dict[int, Outcome] = {}
        self.keys: dict[str, list[str]] = {}  # the metrics keys evaluate writes, by evaluate section
        self.columns: list[str] | None = None  # the results' metric columns

    def known(self) -> list[Trial]:
        """Record the invalid trials and those run before (same params, same code); return the rest."""
        todo = []
        for trial in self.trials:
            found = (
                Outcome(trial, error=trial.error)
                if trial.error
                else load_cached(self.sweep, trial, self.keys, self.display)
            )
            if found is None:
                todo.append(trial)
            else:
                record(self.outcomes, self.sweep, self.tally, self.display, found)
        return todo

    def on_result(self, trial: Trial, result: Any, worker: str) -> None:
        """Take what `worker` sent back for `trial` once it passes `received.checked`; cache it if it is a result
        of the params and the code alone. Anything else fails the trial, in one line, and nothing is cached."""
        try:
            result = checked(result, self.code, trial.doc, self.keys)
        except Refused as err:
            result = {"error": f"refused what {shown(worker)} sent back: {err}"}
        else:
            if not result.get("error", "").startswith(DIED):
                save_json(paths.SWEEP_CACHE / f"{trial.key}.json", result)
        record(self.outcomes, self.sweep, self.tally, self.display, outcome(self.sweep, trial, result))

    def held(self, consequence: str = "nothing written") -> None:
        """Raise unless params.yaml still holds what the sweep's trials ran on."""
        swept = frozenset(self.sweep.grid) | frozenset(self.sweep.ranges)  # what each `dvc exp run -S` sets
        unchanged(self.params, f"the sweep {self.sweep.name}", consequence=consequence, apart_from=swept)

    def write(self, kept: frozenset[int] = frozenset()) -> tuple[Path, Path]:
        if self.columns is None:  # evaluate's keys, found once (a tiny run of the stages)
            self.columns = metric_keys(self.params)
        return write_results(self.sweep, self.outcomes, self.columns, self.code, kept)

    def report(self, ran: int, where: str, seconds: float) -> list[Outcome]:
        """Write the results; say what ran and what was reused; return the trials best first."""
        self.held()
        tsv, plot = self.write()
        reused = sum(o.reused for o in self.outcomes.values())
        failed = sum(o.error is not None for o in self.outcomes.values())
        print(
            f"sweep {self.sweep.name}: {len(self.trials)} trials: {reused} reused from {paths.SWEEP_CACHE}/ "
            f"(same params, same code), {ran} ran on {where} in {seconds:.1f} s, {failed} failed"
        )
        print(f"wrote {tsv} and {plot}")
        return ranking(self.sweep, self.outcomes)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch system stopping the job, `kill`) stops a sweep as Ctrl-C does: the workers shut down and
    what finished is kept."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make_engine_ready(todo: list[Trial]) -> str:
    """Compile the training engine here, once, for each dtype whose trials together pay for it (`auto`
    would never compile for one trial): the workers of this machine then load it from its cache. Returns
    what the progress line says of the engine."""
    runs: dict[str, list[tuple[int, int, int]]] = {}
    for trial in todo:
        if trial.doc is not None:
            dataset, train = trial.doc["dataset"], trial.doc["train"]
            moved = len(shifted_copies(clean_glyphs(), dataset["shift"])[0])
            examples = len(CLASSES) * (1 + dataset["train_per_class"]) + moved  # make_dataset's training set
            runs.setdefault(train["dtype"], []).append((examples, train["epochs"], train["batch_size"]))
    chosen = os.environ.get(ENGINE_VARIABLE, "auto")
    if chosen != "auto":
        return "engine NumPy" if chosen == "numpy" else "engine compiled"
    for dtype, work in runs.items():
        if not native.is_ready(dtype) and pays_to_compile(work):
            print(f"sweep: compiling the training engine for {dtype} on this machine, once", file=sys.stderr)
            from pipeline import compiled  # Numba: only here

            compiled.compile_ahead((np.dtype(dtype),))
    ready = [dtype for dtype in runs if native.is_ready(dtype)]
    if ready and len(ready) == len(runs):
        return "engine compiled"
    return "engine NumPy" if runs else ""


def sweep_main(sweep: Sweep, scheduler: str | None, workers: int) -> int:
    run = SweepRun(sweep)
    todo = run.known()
    where, start = scheduler or f"a LocalCluster of {workers} workers", time.monotonic()
    try:
        if todo:
            run.tally.engine = make_engine_ready(todo)
            with _terminate_as_interrupt(), dask_client(scheduler, workers) as client:
                wait_for_workers(client, where)
                run_all(todo, run.files, run.code, client, run.on_result, run.display)
    except KeyboardInterrupt:
        run.display.bar.close()
        done = len(run.outcomes)
        print(f"interrupted: {done} of {len(run.trials)} trials done; the same command resumes", file=sys.stderr)
        return 130
    run.display.bar.close()
    ranked = run.report(len(todo), where, time.monotonic() - start)
    if not ranked:
        raise PipelineError(f"{sweep.path}: no trial gave {sweep.metric}", status=1)
    best = ranked[0]
    print(f"best {sweep.metric} {best.value(sweep.metric):g}: trial {best.trial.number}, {_settings(best.trial)}")
    if sweep.keep:
        kept: set[int] = set()

        def on_kept(rank: int) -> None:  # the TSV names an experiment once it exists
            kept.add(rank)
            run.write(frozenset(kept))

        names = keep_best(sweep, ranked[: sweep.keep], on_kept, lambda: run.held("no more experiments kept"))
        print(f"kept {', '.join(names)} as DVC experiments (dvc exp show), their metrics the sweep's byte for byte")
    return 0


def _settings(trial: Trial) -> str:
    return " ".join(f"{key}={override(value)}" for key, value in trial.settings.items())


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the sweep file, e.g. sweeps/robust.yaml")
    parser.add_argument("--scheduler", help="a running Dask scheduler, tcp://HOST:8786 (default: a LocalCluster)")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="LocalCluster's worker processes"
    )
    parser.add_argument("--keep", type=int, help="how many of the best to keep, instead of the sweep file's keep")
    args = parser.parse_args()
    most = WORKERS_PER_CORE * len(os.sched_getaffinity(0))
    if not 1 <= args.workers <= most:  # each worker is a process of about 150 MB
        raise PipelineError(f"--workers: expected 1 to {most} ({WORKERS_PER_CORE} per core here), found {args.workers}")
    if args.scheduler is not None:
        check_address(args.scheduler)
    spec = load_sweep(args.sweep)
    if args.keep is not None:
        spec = dataclasses.replace(spec, keep=integer(spec.path, "--keep", args.keep, 0, spec.keep_most))
    return sweep_main(spec, args.scheduler, args.workers)
