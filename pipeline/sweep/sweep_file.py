"""The sweep file (sweeps/NAME.yaml): read, checked, and refused in one line naming the key.

It names params keys to vary, as a grid (every combination of listed values) and a seeded random search
(`count` draws from ranges, linear or log, or from lists), each draw combined with every grid point; the
metric of metrics/metrics.json to rank by; and how many of the best to keep.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import PipelineError, describe, shown
from pipeline.params import SECTION_TYPES, Params, load_params, read_yaml
from pipeline.sweep.work import flat, measure

# Trials at most: sweeps/NAME.tsv has a row each (about 200 bytes), sweeps/plots/NAME.json a row per trial and varied
# key (about 110 bytes): about 3 MB in git with four keys varied.
MAX_TRIALS = 5_000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a sweep's name: file names and git refs (experiments)
SECTIONS = {name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in SECTION_TYPES.items()}
ALLOWED = ", ".join(f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys)


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
    if "grid" in doc and not grid:
        raise PipelineError(f"{path}: grid: expected at least one params key, found none; leave grid out instead")
    count, seed, ranges = _random(path, doc["random"], grid) if "random" in doc else (1, 0, {})
    trials = count * math.prod(len(values) for values in grid.values())
    if trials > MAX_TRIALS:
        raise PipelineError(f"{path}: grid: expected at most {MAX_TRIALS} trials in all, found {trials}")
    goal = doc["goal"]
    if goal not in ("max", "min"):
        raise PipelineError(f"{path}: goal: expected max or min, found {describe(goal)}")
    keep = integer(path, "keep", doc["keep"], 0, trials)
    return Sweep(path, name, _metric(path, doc["metric"]), goal, keep, grid, count, seed, ranges, trials)


def _random(path: Path, random: Any, grid: dict[str, list[Any]]) -> tuple[int, int, dict[str, Range | list[Any]]]:
    """The random section: (count, seed, key -> range or values)."""
    _only(path, "random.", random, required=("count", "seed", "ranges"))
    count = integer(path, "random.count", random["count"], 1, MAX_TRIALS)
    seed = integer(path, "random.seed", random["seed"], 0, 2**63 - 1)
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


def kind(key: str) -> str:
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
    if kind(key) not in ("int", "float"):
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
    if kind(key) == "int" and not (isinstance(spec["low"], int) and isinstance(spec["high"], int)):
        raise PipelineError(f"{path}: {where}: expected integer low and high for {key}, found {describe(spec)}")
    return Range(low, high, spec["scale"] == "log")


LARGEST = 2**53  # a range's ends at most, in size: every integer up to it is a float exactly


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= LARGEST:
        raise PipelineError(f"{path}: {where}: expected a number between -2^53 and 2^53, found {describe(value)}")
    return value


def integer(path: Path, where: str, value: Any, low: int, high: int) -> int:
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
    return list(flat(measure(tiny)))


def _metric(path: Path, metric: Any) -> str:
    keys = metric_keys(load_params())
    if metric not in keys:
        raise PipelineError(
            f"{path}: metric: expected a key of {paths.METRICS} ({', '.join(keys)}), found {describe(metric)}"
        )
    return metric
