"""What a trial runs on a Dask worker: the stages' own functions for one set of params, and the code's hash.

A trial needs no file: its data set comes from its params. It returns the text evaluate writes to
metrics/metrics.json, the same bytes as `dvc exp run -S ...` for those settings, on any worker (the
arithmetic is portable), with the hash of the worker's own copy of the modules it ran.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pipeline
from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.evaluate import evaluate
from pipeline.make_dataset import make_dataset
from pipeline.params import Params, parse_params, read_yaml
from pipeline.sgd import default_threads
from pipeline.train import train
from pipeline.writing import json_text

STAGES = ("check_params", "make_dataset", "train", "evaluate")  # what a trial runs, as dvc.yaml lists it


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


def measure(p: Params) -> dict:
    data = make_dataset(p.dataset)
    net, _, _ = train(p.train, *data["train"])
    return evaluate(net, p, data["train"], data["test"]).metrics


def run_trial(doc: dict, files: list[str]) -> dict[str, str]:
    """On a worker: the stages' work for params `doc`, with no file read or written. Returns the code
    hash of this worker's package, and either metrics/metrics.json's text or the stage's one-line error."""
    code = code_hash(files)
    try:
        with default_threads(1):  # the sweep's workers run trials side by side: one thread each
            return {"code": code, "metrics": json_text(paths.METRICS, measure(parse_params(doc)))}
    except PipelineError as err:  # a run that diverged: train's own message
        return {"code": code, "error": str(err)}


def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'test': {'accuracy': 1.0}} -> {'test.accuracy': 1.0}, as DVC names metrics."""
    out = {}
    for key, value in tree.items():
        out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out
