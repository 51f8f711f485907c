"""Keeping the best trials as DVC experiments (`dvc exp run --name NAME-RANK -S ...`), their metrics
checked against the sweep's byte for byte."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

from pipeline import paths
from pipeline.errors import PipelineError, shown
from pipeline.sweep.results import Outcome, experiment_name
from pipeline.sweep.sweep_file import Sweep


def override(value: Any) -> str:
    """A value as `dvc exp run -S key=VALUE` reads it back (Hydra's grammar): true, 3, 0.347, bce, [0.0,0.1]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(override(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def keep_best(sweep: Sweep, best: list[Outcome], on_kept: Callable[[int], None], held: Callable[[], None]) -> list[str]:
    """Run the best settings as DVC experiments, the best last (it stays in the workspace), and check that
    each one's metrics/metrics.json is the sweep's text, byte for byte. `on_kept(rank)` once each exists;
    `held()` raises if params.yaml is no longer what the sweep ran with (then no comparison means anything)."""
    head = _run(["git", "rev-parse", "HEAD"]).stdout.strip()
    names = []
    for rank in range(len(best), 0, -1):
        outcome, name = best[rank - 1], experiment_name(sweep, rank)
        ref = f"refs/exps/{head[:2]}/{head[2:]}/{name}"
        if _run(["git", "rev-parse", "-q", "--verify", ref]).returncode == 0:  # this sweep's, from an earlier run
            _dvc("exp", "remove", name)
        args = [arg for key, value in outcome.trial.settings.items() for arg in ("-S", f"{key}={override(value)}")]
        print(f"dvc exp run --name {name} {' '.join(args)}", file=sys.stderr, flush=True)
        held()
        _dvc("exp", "run", "--name", name, *args)
        ran = _run(["git", "show", f"{ref}:{paths.METRICS}"])
        if ran.returncode == 0:
            on_kept(rank)
        held()
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
        raise PipelineError(f"dvc {' '.join(args)}: exit {proc.returncode}: {shown(_reason(proc))}", 1)


def _reason(proc: subprocess.CompletedProcess) -> str:
    """Why a dvc command failed: a stage's own one-line error, else DVC's ERROR line, else its last line."""
    lines = [line for line in (proc.stderr + "\n" + proc.stdout).splitlines() if line.strip()]
    for prefix in ("error: ", "ERROR: "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[0]
    return lines[-1] if lines else ""
