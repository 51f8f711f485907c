"""Search many params.yaml settings at once on Dask; keep the best as DVC experiments.

    python -m pipeline.sweep sweeps/NAME.yaml [--scheduler tcp://HOST:8786] [--workers N]

A sweep file names params keys to vary, as a grid (every combination of listed values) and a seeded
random search (`count` draws from ranges, linear or log, or from lists), each draw combined with every
grid point; the metric of metrics/metrics.json to rank by; and how many of the best to keep.

Each trial runs the stages' own functions (make_dataset, train, evaluate) in a Dask worker process, with
no DVC around it, and returns the text evaluate writes to metrics/metrics.json: the same bytes as
`dvc exp run -S ...` for those settings, on any worker (the arithmetic is portable). A trial needs no
file: its data set comes from its params. Results land in sweeps/NAME.tsv (every trial) and
sweeps/plots/NAME.json (the metric against each swept key: dvc.yaml's plots), both for git; finished
trials are also kept in .sweep-cache/ by their params and the code's hash, so a sweep started again
reuses them. The best `keep` settings then run as `dvc exp run --name NAME-RANK -S ...`, whose
metrics must equal the sweep's byte for byte (the best runs last and stays in the workspace).

Without --scheduler, a LocalCluster of worker processes (one thread each) on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import itertools
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from pipeline import paths, portable
from pipeline.artifacts import json_text, save_json, save_text, together
from pipeline.errors import PipelineError, exit_on_error, shown
from pipeline.evaluate import evaluate
from pipeline.make_dataset import make_dataset
from pipeline.params import SECTION_TYPES, Params, describe, load_params, parse_params, read_yaml
from pipeline.progress import Progress
from pipeline.train import train

DIED = "workers died running it"  # a trial Dask gave up on: not a result of its params, so never cached
# Trials at most: sweeps/NAME.tsv has a row each (about 200 bytes), sweeps/plots/NAME.json a row per trial and varied
# key (about 110 bytes): about 3 MB in git with four keys varied.
MAX_TRIALS = 5_000
STAGES = ("check_params", "make_dataset", "train", "evaluate")  # what a trial runs, as dvc.yaml lists it
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a sweep's name: file names and git refs (experiments)
LN2 = 0.6931471805599453  # ln 2, rounded to float64
SIGNIFICANT = 3  # digits a random float keeps: 0.347, not 0.3470912...: readable, and -S writes it exactly
# Dask's nanny sets these for the worker processes it starts; they change no bit here, but the project sets no
# BLAS variable anywhere, so LocalCluster's workers start with this process's environment as it is.
NO_BLAS_ENV = {name: None for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
SECTIONS = {name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in SECTION_TYPES.items()}
ALLOWED = ", ".join(f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys)


# --- the sweep file ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool


@dataclass(frozen=True)
class Sweep:
    path: Path
    name: str
    metric: str
    goal: str  # max or min
    keep: int
    grid: dict[str, list[Any]]  # key -> values
    count: int  # random draws (1 when there are no ranges)
    seed: int
    ranges: dict[str, Range | list[Any]]  # key -> a range, or values to choose from
    keep_most: int  # the number of trials


def load_sweep(path: Path) -> Sweep:
    """Read and check sweep file `path`; a one-line PipelineError names the key on any problem."""
    doc = read_yaml(path)
    name = path.stem
    if not NAME.fullmatch(name):
        raise PipelineError(
            f"{shown(str(path))}: expected a file name of letters, digits, '_' or '-' (it names the sweep's "
            f"results and experiments), found {shown(name)!r}"
        )
    _only(path, "", doc, required=("metric", "goal", "keep"), optional=("grid", "random"))
    if "grid" not in doc and "random" not in doc:
        raise PipelineError(f"{path}: grid: missing; expected a grid, a random section or both")
    grid = {key: _values(path, f"grid.{key}", values) for key, values in _mapping(path, "grid", doc).items()}
    count, seed, ranges = _random(path, doc["random"], grid) if "random" in doc else (1, 0, {})
    trials = count * math.prod(len(values) for values in grid.values())
    if trials > MAX_TRIALS:
        raise PipelineError(f"{path}: grid: expected at most {MAX_TRIALS} trials in all, found {trials}")
    goal = doc["goal"]
    if goal not in ("max", "min"):
        raise PipelineError(f"{path}: goal: expected max or min, found {describe(goal)}")
    keep = _integer(path, "keep", doc["keep"], 0, trials)
    return Sweep(path, name, _metric(path, doc["metric"]), goal, keep, grid, count, seed, ranges, trials)


def _random(path: Path, random: Any, grid: dict[str, list[Any]]) -> tuple[int, int, dict[str, Range | list[Any]]]:
    """The random section: (count, seed, key -> range or values)."""
    _only(path, "random.", random, required=("count", "seed", "ranges"))
    count = _integer(path, "random.count", random["count"], 1, MAX_TRIALS)
    seed = _integer(path, "random.seed", random["seed"], 0, 2**63 - 1)
    ranges = {}
    for key, spec in _mapping(path, "random.ranges", random).items():
        if key in grid:
            raise PipelineError(f"{path}: random.ranges.{key}: also in grid; vary a key in one of them")
        ranges[key] = _range(path, f"random.ranges.{key}", key, spec)
    if not ranges:
        raise PipelineError(f"{path}: random.ranges: expected at least one key, found none")
    return count, seed, ranges


def _only(path: Path, where: str, doc: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """`doc` is a mapping with every `required` key and no key beyond `optional`."""
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: {where.rstrip('.') or 'the file'}: expected a mapping, found {describe(doc)}")
    for key in doc:
        if key not in required + optional:
            raise PipelineError(
                f"{path}: {where}{shown(str(key))}: unknown key; allowed: {', '.join(required + optional)}"
            )
    for key in required:
        if key not in doc:
            raise PipelineError(f"{path}: {where}{key}: missing")


def _mapping(path: Path, where: str, doc: dict) -> dict[str, Any]:
    """The params keys of `doc[last part of where]`, each checked against params.yaml's."""
    section = doc.get(where.rsplit(".", maxsplit=1)[-1], {})
    if not isinstance(section, dict):
        raise PipelineError(f"{path}: {where}: expected a mapping of params keys, found {describe(section)}")
    for key in section:
        parts = key.split(".") if isinstance(key, str) else []
        if len(parts) != 2 or parts[1] not in SECTIONS.get(parts[0], {}):
            raise PipelineError(f"{path}: {where}.{shown(str(key))}: unknown params key; allowed: {ALLOWED}")
    return section


def _kind(key: str) -> str:
    """The type of params key `key` as params.py declares it: int, float, bool, str or tuple[float, ...]."""
    section, name = key.split(".")
    return SECTIONS[section][name].type


def _values(path: Path, where: str, values: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise PipelineError(f"{path}: {where}: expected a non-empty list of values, found {describe(values)}")
    if len(set(map(repr, values))) != len(values):
        raise PipelineError(f"{path}: {where}: expected distinct values, found {describe(values)}")
    return values


def _range(path: Path, where: str, key: str, spec: Any) -> Range | list[Any]:
    if isinstance(spec, list):
        return _values(path, where, spec)
    if _kind(key) not in ("int", "float"):
        raise PipelineError(f"{path}: {where}: expected a list of values to choose from, found {describe(spec)}")
    _only(path, f"{where}.", spec, required=("low", "high", "scale"))
    low, high = (_number(path, f"{where}.{end}", spec[end]) for end in ("low", "high"))
    if spec["scale"] not in ("linear", "log"):
        raise PipelineError(f"{path}: {where}.scale: expected linear or log, found {describe(spec['scale'])}")
    if high < low:
        raise PipelineError(f"{path}: {where}.high: expected a number >= low ({low}), found {describe(spec['high'])}")
    if spec["scale"] == "log" and low <= 0:
        raise PipelineError(
            f"{path}: {where}.low: expected a number > 0 for a log scale, found {describe(spec['low'])}"
        )
    if _kind(key) == "int" and not (isinstance(spec["low"], int) and isinstance(spec["high"], int)):
        raise PipelineError(f"{path}: {where}: expected integer low and high for {key}, found {describe(spec)}")
    return Range(low, high, spec["scale"] == "log")


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PipelineError(f"{path}: {where}: expected a number, found {describe(value)}")
    return value


def _integer(path: Path, where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PipelineError(f"{path}: {where}: expected an integer in [{low}, {high}], found {describe(value)}")
    return value


def metric_keys(params: Params) -> list[str]:
    """The keys of metrics/metrics.json (`test.accuracy`, ...) that evaluate writes for `params`, found by
    measuring an untrained network on a tiny data set: whatever evaluate writes, nothing listed twice."""
    tiny = dataclasses.replace(
        params,
        dataset=dataclasses.replace(params.dataset, train_per_class=0, test_per_class=1),
        train=dataclasses.replace(params.train, epochs=0),
        evaluate=dataclasses.replace(params.evaluate, per_class=1),
    )
    return list(flat(_measure(tiny)))


def _metric(path: Path, metric: Any) -> str:
    keys = metric_keys(load_params())
    if metric not in keys:
        raise PipelineError(
            f"{path}: metric: expected a key of {paths.METRICS} ({', '.join(keys)}), found {describe(metric)}"
        )
    return metric


def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'test': {'accuracy': 1.0}} -> {'test.accuracy': 1.0}, as DVC names metrics."""
    out = {}
    for key, value in tree.items():
        out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


# --- trials --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    number: int  # 1, 2, ... in the order the sweep file gives
    settings: dict[str, Any]  # swept key -> value
    doc: dict | None  # the whole params (params.yaml with the settings), None when they are invalid
    error: str | None  # why the settings are invalid
    key: str  # the cache key: the params and the code's hash


def settings(sweep: Sweep) -> list[dict[str, Any]]:
    """Every trial's settings: each random draw with every grid point, draws in order, the grid's last key fastest."""
    rng = np.random.default_rng(sweep.seed)
    draws = [{key: _draw(rng, key, spec) for key, spec in sweep.ranges.items()} for _ in range(sweep.count)]
    points = [dict(zip(sweep.grid, values)) for values in itertools.product(*sweep.grid.values())]
    return [draw | point for draw in draws for point in points]


def _draw(rng: np.random.Generator, key: str, spec: Range | list[Any]) -> Any:
    """One value for `key`: a choice from a list, or a number from a range (integers for integer keys; floats
    rounded to SIGNIFICANT digits). The log scale uses portable.py's exp and log1p: the same draws everywhere."""
    if isinstance(spec, list):
        return spec[int(rng.integers(len(spec)))]
    u = rng.random()
    if spec.log:
        m, e = math.frexp(spec.high / spec.low)  # high / low = 2m 2^(e - 1), 2m in [1, 2): log1p's domain
        span = (e - 1) * LN2 + float(portable.log1p(np.array([2 * m - 1]))[0])  # ln(high / low)
        value = spec.low * float(portable.exp(np.array([u * span]))[0])
    else:
        value = spec.low + u * (spec.high - spec.low)
    if _kind(key) == "int":
        return int(min(max(round(value), spec.low), spec.high))
    return float(f"{value:.{SIGNIFICANT}g}")


def trials(sweep: Sweep, base: dict, code: str) -> list[Trial]:
    """The sweep's trials on params.yaml's `base`, each checked as check_params checks params.yaml."""
    out = []
    for number, values in enumerate(settings(sweep), start=1):
        doc = json.loads(json.dumps(base))  # a deep copy
        for key, value in values.items():
            section, name = key.split(".")
            doc[section][name] = value
        try:
            canonical = json.loads(json.dumps(dataclasses.asdict(parse_params(doc, f"{sweep.path}: trial {number}"))))
        except PipelineError as err:
            out.append(Trial(number, values, None, str(err), ""))
            continue
        key = hashlib.sha256(json.dumps({"params": canonical, "code": code}, sort_keys=True).encode()).hexdigest()
        out.append(Trial(number, values, canonical, None, key[:32]))
    return out


def code_files() -> list[str]:
    """The modules a trial runs, as dvc.yaml lists them for its stages (so an edit that reruns one of
    them under `dvc repro` is also a new code hash here)."""
    stages = read_yaml(Path("dvc.yaml")).get("stages", {})
    deps = {dep for stage in STAGES for dep in stages.get(stage, {}).get("deps", []) if isinstance(dep, str)}
    return sorted(dep.removeprefix("pipeline/") for dep in deps if dep.startswith("pipeline/"))


def code_hash(files: list[str]) -> str:
    """A digest of the modules `files` of the package this process imports (a worker's own copy)."""
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0" + (Path(pipeline.__file__).parent / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _measure(p: Params) -> dict:
    data = make_dataset(p.dataset)
    net, _, _ = train(p.train, *data["train"])
    return evaluate(net, p, data["train"], data["test"]).metrics


def run_trial(doc: dict, files: list[str]) -> dict[str, str]:
    """On a worker: the stages' work for params `doc`, with no file read or written. Returns the code
    hash of this worker's package, and either metrics/metrics.json's text or the stage's one-line error."""
    code = code_hash(files)
    try:
        return {"code": code, "metrics": json_text(paths.METRICS, _measure(parse_params(doc)))}
    except PipelineError as err:  # a run that diverged: train's own message
        return {"code": code, "error": str(err)}


# --- running them on Dask -----------------------------------------------------------------------


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A Client of the cluster at `scheduler`, or of a LocalCluster of `workers` processes, one thread each."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler)  # waits distributed.comm.timeouts.connect (30 s) for an answer
        except (OSError, TimeoutError) as err:
            raise PipelineError(f"--scheduler {shown(scheduler)}: cannot connect ({_first_line(err)})") from None
        with client:
            yield client
        return
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": NO_BLAS_ENV}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",  # the scheduler's HTTP server (health checks) on a free port: None
            scheduler_kwargs={"dashboard": False},  # means 8787, and a warning when another cluster has it
            silence_logs=logging.ERROR,  # a worker lost is told in one line below, not in Dask's log
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _wait_for_workers(client: Any, where: str) -> None:
    try:
        client.wait_for_workers(1, timeout=60)
    except TimeoutError:
        raise PipelineError(f"{where}: no worker joined within 60 s; start some with `dask worker`") from None


def _first_line(err: BaseException) -> str:
    return shown((str(err).strip() or type(err).__name__).splitlines()[0])


@dataclass
class Tally:
    """What the progress line shows."""

    total: int
    done: int = 0
    failed: int = 0
    best: tuple[float, int] | None = None  # (metric, trial)


def run_all(todo: list[Trial], files: list[str], code: str, client: Any, on_result, progress) -> None:
    """Submit every trial of `todo`; `on_result(trial, result)` as each finishes, in any order. A worker
    that dies mid-trial is Dask's to handle: it runs the trial again elsewhere (up to
    distributed.scheduler.allowed-failures times, then the trial fails as KilledWorker)."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    # By its module's name, so workers import it: under `python -m pipeline.sweep` this module is __main__.
    run_trial = importlib.import_module("pipeline.sweep").run_trial
    futures = {client.submit(run_trial, t.doc, files, key=f"trial-{t.key}", pure=True): t for t in todo}
    workers = set(client.nthreads())  # not scheduler_info(): a periodic refresh can blank its list
    pending = as_completed(futures)
    while not pending.is_empty():
        for future in pending.next_batch(block=False) if pending.has_ready() else []:
            trial = futures[future]
            if future.status == "error" and isinstance(future.exception(), KilledWorker):
                on_result(trial, {"code": code, "error": f"{DIED}: {_first_line(future.exception())}"})
            else:
                on_result(trial, future.result())
            future.release()
        now = set(client.nthreads())
        for lost in sorted(workers - now):
            progress.note(f"note: lost worker {lost}; Dask runs its trials again on the others")
        workers = now
        progress.tick()
        time.sleep(0.1)


# --- results -------------------------------------------------------------------------------------


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
        best = f"; best {self.sweep.metric} {t.best[0]:g} (trial {t.best[1]})" if t.best else ""
        left = t.total - t.done - t.failed
        self.bar.show(t.done + t.failed, f"{t.done} done, {t.failed} failed, {left} left{best}")

    def note(self, line: str) -> None:
        if self.bar.shown:
            self.bar.stream.write("\r" + " " * self.bar.width + "\r")
        print(line, file=sys.stderr, flush=True)
        self.bar.shown = False
        self.tick()


def record(outcomes: dict[int, Outcome], sweep: Sweep, tally: Tally, display: Display, outcome: Outcome) -> None:
    outcomes[outcome.trial.number] = outcome
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


def write_results(sweep: Sweep, outcomes: dict[int, Outcome], keys: list[str], code: str) -> tuple[Path, Path]:
    """sweeps/NAME.tsv, a row per trial in order, and sweeps/plots/NAME.json, for DVC's plots."""
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
                experiment_name(sweep, r) if r is not None and r <= sweep.keep else "",
                code,
                shown(o.error or "", 400),
            ]
        )
    tsv, plot = paths.SWEEPS / f"{sweep.name}.tsv", paths.SWEEP_PLOTS / f"{sweep.name}.json"
    with together():
        save_text(tsv, "\n".join("\t".join(row) for row in [header, *rows]) + "\n")
        save_json(plot, plot_rows(sweep, ranked, swept))
    return tsv, plot


def _text(value: Any) -> str:
    """A value as JSON writes it (0.3, true, "bce" without quotes): a metric's cell is metrics.json's number."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def plot_rows(sweep: Sweep, ranked: list[Outcome], swept: list[str]) -> list[dict[str, Any]]:
    """A row per trial and swept key: {'key': 'test.accuracy against train.lr', 'value': 0.3, 'score': ...}.
    Booleans and strings are plotted at their index among the values seen, which the key's label lists; a key
    held at one value gets no panel."""
    rows = []
    for key in swept:
        seen = list(dict.fromkeys(json.dumps(o.trial.settings[key]) for o in ranked))
        if len(seen) < 2:  # a key the sweep holds at one value: a panel would say nothing
            continue
        numeric = _kind(key) in ("int", "float")
        label = f"{sweep.metric} against {key}"
        if not numeric:
            label += " (" + ", ".join(f"{i} {json.loads(s)}".lower() for i, s in enumerate(seen)) + ")"
        for o in sorted(ranked, key=lambda o: o.trial.number):
            value = o.trial.settings[key]
            x = value if numeric else seen.index(json.dumps(value))
            rows.append({"key": label, "value": x, "score": o.value(sweep.metric), "trial": o.trial.number})
    return rows


# --- keeping the best as DVC experiments --------------------------------------------------------


def override(value: Any) -> str:
    """A value as `dvc exp run -S key=VALUE` reads it back (Hydra's grammar): true, 3, 0.347, bce, [0.0,0.1]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(override(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def keep_best(sweep: Sweep, best: list[Outcome]) -> list[str]:
    """Run the best settings as DVC experiments, the best last (it stays in the workspace), and check that
    each one's metrics/metrics.json is the sweep's text, byte for byte."""
    head = _run(["git", "rev-parse", "HEAD"]).stdout.strip()
    names = []
    for rank in range(len(best), 0, -1):
        outcome, name = best[rank - 1], experiment_name(sweep, rank)
        ref = f"refs/exps/{head[:2]}/{head[2:]}/{name}"
        if _run(["git", "rev-parse", "-q", "--verify", ref]).returncode == 0:  # this sweep's, from an earlier run
            _dvc("exp", "remove", name)
        args = [arg for key, value in outcome.trial.settings.items() for arg in ("-S", f"{key}={override(value)}")]
        print(f"dvc exp run --name {name} {' '.join(args)}", file=sys.stderr, flush=True)
        _dvc("exp", "run", "--name", name, *args)
        ran = _run(["git", "show", f"{ref}:{paths.METRICS}"])
        if ran.returncode != 0 or ran.stdout != outcome.metrics:
            raise PipelineError(
                f"{name}: dvc exp run wrote other metrics than trial {outcome.trial.number} of the sweep "
                f"({ref}:{paths.METRICS}); a worker ran other code or another machine's arithmetic differs",
                status=1,
            )
        names.append(name)
    return names[::-1]


def _dvc(*args: str) -> None:
    proc = _run([sys.executable, "-m", "dvc", *args])
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise PipelineError(f"dvc {' '.join(args)}: exit {proc.returncode}: {shown(lines[-1] if lines else '')}", 1)


# --- the command ----------------------------------------------------------------------------------


def load_cached(sweep: Sweep, trial: Trial) -> Outcome | None:
    """The trial's result from an earlier run of the same code on the same params, if there is one."""
    try:
        saved = json.loads((paths.SWEEP_CACHE / f"{trial.key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not there yet, or unreadable: run the trial again
        return None
    if not isinstance(saved, dict) or set(saved) not in ({"metrics"}, {"error"}):
        return None
    return outcome(sweep, trial, saved, reused=True)


def outcome(sweep: Sweep, trial: Trial, result: dict[str, str], reused: bool = False) -> Outcome:
    error = result.get("error")
    return Outcome(trial, result.get("metrics"), error and f"{sweep.path}: trial {trial.number}: {error}", reused)


class SweepRun:
    """One run of a sweep: its trials, what is known of them so far, and what is shown."""

    def __init__(self, sweep: Sweep) -> None:
        load_params()  # params.yaml itself must pass, as check_params would say
        self.sweep, self.files = sweep, code_files()
        self.code = code_hash(self.files)
        self.trials = trials(sweep, read_yaml(paths.PARAMS), self.code)
        self.tally = Tally(len(self.trials))
        self.display = Display(sweep, self.tally)
        self.outcomes: dict[int, Outcome] = {}

    def known(self) -> list[Trial]:
        """Record the invalid trials and those run before (same params, same code); return the rest."""
        todo = []
        for trial in self.trials:
            found = Outcome(trial, error=trial.error) if trial.error else load_cached(self.sweep, trial)
            if found is None:
                todo.append(trial)
            else:
                record(self.outcomes, self.sweep, self.tally, self.display, found)
        return todo

    def on_result(self, trial: Trial, result: dict[str, str]) -> None:
        if result["code"] != self.code:  # not cached: a worker with this commit would run it right
            other = f"a worker runs other code (hash {result['code']}, here {self.code}); install this commit"
            result = {"error": other}
        elif not result.get("error", "").startswith(DIED):  # a result of the params and the code alone
            save_json(paths.SWEEP_CACHE / f"{trial.key}.json", {k: v for k, v in result.items() if k != "code"})
        record(self.outcomes, self.sweep, self.tally, self.display, outcome(self.sweep, trial, result))

    def report(self, ran: int, where: str, seconds: float) -> list[Outcome]:
        """Write the results; say what ran and what was reused; return the trials best first."""
        tsv, plot = write_results(self.sweep, self.outcomes, metric_keys(load_params()), self.code)
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


def sweep_main(sweep: Sweep, scheduler: str | None, workers: int) -> int:
    run = SweepRun(sweep)
    todo = run.known()
    where, start = scheduler or f"a LocalCluster of {workers} workers", time.monotonic()
    try:
        if todo:
            with _terminate_as_interrupt(), dask_client(scheduler, workers) as client:
                _wait_for_workers(client, where)
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
        names = keep_best(sweep, ranked[: sweep.keep])
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
    if args.workers < 1:
        parser.error(f"--workers: expected at least 1, found {args.workers}")
    spec = load_sweep(args.sweep)
    if args.keep is not None:
        spec = dataclasses.replace(spec, keep=_integer(spec.path, "--keep", args.keep, 0, spec.keep_most))
    return sweep_main(spec, args.scheduler, args.workers)


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
