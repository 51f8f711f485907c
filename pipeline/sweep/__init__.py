"""Sweeps: many params.yaml settings at once on Dask, the best kept as DVC experiments.

    python -m pipeline.sweep sweeps/NAME.yaml [--scheduler tcp://HOST:8786] [--workers N]

Each trial runs the stages' own functions (make_dataset, train, evaluate) in a Dask worker process, with
no DVC around it, and returns the text evaluate writes to metrics/metrics.json: the same bytes as
`dvc exp run -S ...` for those settings, on any worker (the arithmetic is portable). Results land in
sweeps/NAME.tsv (every trial) and sweeps/plots/NAME.json (the metric against each swept key: dvc.yaml's
plots), both for git; finished trials are also kept in .sweep-cache/ by their params and the code's hash,
so a sweep started again reuses them. The best `keep` settings then run as
`dvc exp run --name NAME-RANK -S ...`, whose metrics must equal the sweep's byte for byte (the best runs
last and stays in the workspace).

A module a job, each importing only those before it (tests/test_layers.py): `work` (what a trial runs on
a worker), `sweep_file` (the sweep file), `trials` (the settings drawn), `cluster` (Dask), `results`
(progress, ranking, the files written), `experiments` (the best as DVC experiments), `command` (the
command line). This package's names below are what the tests and a notebook use.
"""

from pipeline.sweep.cluster import NO_BLAS_ENV, dask_client
from pipeline.sweep.command import main
from pipeline.sweep.results import Display, Tally
from pipeline.sweep.sweep_file import load_sweep
from pipeline.sweep.trials import settings, trials
from pipeline.sweep.work import code_files, code_hash, flat, run_trial

__all__ = [
    "NO_BLAS_ENV",
    "Display",
    "Tally",
    "code_files",
    "code_hash",
    "dask_client",
    "flat",
    "load_sweep",
    "main",
    "run_trial",
    "settings",
    "trials",
]
