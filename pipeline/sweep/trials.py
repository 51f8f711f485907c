"""A sweep's trials: the seeded draws of its settings, each on params.yaml checked as check_params checks it."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import portable
from pipeline.errors import PipelineError
from pipeline.params import parse_params
from pipeline.sweep.sweep_file import Range, Sweep, kind

LN2 = 0.6931471805599453  # ln 2, rounded to float64
SIGNIFICANT = 3  # digits a random float keeps: 0.347, not 0.3470912...: readable, and -S writes it exactly


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
    if kind(key) == "int":
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
