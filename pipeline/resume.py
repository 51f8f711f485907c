"""A long training, watched while it runs and resumed after a crash to the same bytes.

Every epoch is exact, so the state after epoch k (the weights, the random generator's state, the
history and the weight trace so far) determines the rest of the run: a run resumed from it writes the
bytes of one that never stopped, with either engine and on any machine. `python -m pipeline.train`
(not a sweep's trial, not a notebook's `train`) keeps that state in .train-checkpoints/ (git-ignored,
outside DVC's outputs, so DVC's deletion of the stage's outputs before a rerun leaves it), a file per
run named by a digest of the train params, the training set and the package's code, written every
CHECKPOINT_SECONDS of training and removed once the run's outputs are in place. A checkpoint that does
not match the run, or does not load as one, is ignored in one line.

While the run goes on, metrics/history.tsv grows by its rows, at most a few writes a second, and under
DVC (which sets DVC_ROOT for a stage) each write is signalled the way DVC's VS Code extension expects
(dvclive's .dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED), so its plots and `dvc exp show` follow the run.
The finished history is then written as before, the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

import pipeline
from pipeline import paths
from pipeline.artifacts import digest
from pipeline.errors import PipelineError, shown
from pipeline.model import PARAMETERS, Network
from pipeline.reading import load_npz
from pipeline.sgd import History
from pipeline.writing import save_npz, tsv_row

SECONDS_VARIABLE = "PIPELINE_CHECKPOINT_SECONDS"  # a test's: how often a checkpoint is written
CHECKPOINT_SECONDS = 30.0  # a minute of training costs at most half a minute on a crash
KEEP = 4  # checkpoints of other runs kept at most (a run's own is removed when it completes)
MAX_ENTRY = 64 * 1024 * 1024  # bytes of one entry at most: the trace's w1 at 512 hidden units is 37 MB
LIVE_SECONDS = 0.25  # metrics/history.tsv grows at most this often
STEP_SIGNAL = Path(".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED")  # under DVC_ROOT: what DVC's VS Code extension watches


def run_key(p: Any, X: np.ndarray, y: np.ndarray) -> str:
    """The run's name: its train params, its training set and the package's code (any edit: another run)."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(p), sort_keys=True).encode() + digest(X, y).encode())
    for source in sorted(Path(pipeline.__file__).parent.glob("*.py")):
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    return h.hexdigest()[:32]


@dataclass
class State:
    """A run after `len(loss)` epochs."""

    weights: dict[str, np.ndarray]
    rng: dict
    loss: np.ndarray
    accuracy: np.ndarray
    snapshots: dict[int, dict[str, np.ndarray]]  # epoch -> weights, as the trace keeps them


class Checkpoints:
    """The checkpoint of one run: `load` it at the start, `save` after each epoch (written every SECONDS),
    `remove` once the run's outputs are in place."""

    def __init__(self, key: str, directory: Path = paths.CHECKPOINTS) -> None:
        self.key, self.path = key, directory / f"{key}.npz"
        self.seconds = float(os.environ.get(SECONDS_VARIABLE, CHECKPOINT_SECONDS))
        self.last = time.monotonic()

    def load(self, net: Network, epochs: int, stride: int) -> State | None:
        """The saved state of this run, checked against `net` (its shapes and dtype), `epochs` and the trace's
        `stride`; None when there is none, or (said in one line) when it is not one this run could have saved."""
        if not self.path.exists():
            return None
        try:
            return self._load(net, epochs, stride)
        except (PipelineError, ValueError, KeyError, TypeError) as err:
            print(f"train: ignoring {self.path} ({shown(str(err), 160)}); training from epoch 1", file=sys.stderr)
            return None

    def _load(self, net: Network, epochs: int, stride: int) -> State:
        names = ("key", "rng", "loss", "accuracy", "trace_epoch", *PARAMETERS, *(f"trace_{n}" for n in PARAMETERS))
        arrays = load_npz(self.path, "train", names, MAX_ENTRY)
        if str(arrays.get("key", "")) != self.key:
            raise ValueError("another run's: other params, data or code")
        loss, accuracy = arrays["loss"], arrays["accuracy"]
        done = len(loss)
        if loss.dtype != np.float64 or loss.shape != (done,) or accuracy.shape != (done,) or not 1 <= done < epochs:
            raise ValueError(f"expected the history of 1 to {epochs - 1} epochs, found {loss.dtype}{loss.shape}")
        if not (np.isfinite(loss).all() and np.isfinite(accuracy).all()):
            raise ValueError("expected a finite history")
        model = net.parameters()
        weights = {name: arrays.get(name) for name in model}
        kept = [0, *(e for e in range(1, done + 1) if e % stride == 0)]
        if not np.array_equal(arrays["trace_epoch"], np.array(kept, dtype=np.int64)):
            raise ValueError(f"expected the trace of epochs {kept[:3]}..., found others")
        for name, array in model.items():
            for found, shape in (
                (weights[name], array.shape),
                (arrays.get(f"trace_{name}"), (len(kept), *array.shape)),
            ):
                if found is None or found.dtype != array.dtype or found.shape != shape or not np.isfinite(found).all():
                    raise ValueError(f"{name}: expected finite {array.dtype}{shape} weights")
        rng = json.loads(str(arrays["rng"]))
        probe = np.random.default_rng()
        probe.bit_generator.state = rng  # raises ValueError or TypeError on a state PCG64 would not have
        trace = {name: arrays[f"trace_{name}"] for name in model}
        snapshots = {epoch: {name: trace[name][i].copy() for name in model} for i, epoch in enumerate(kept)}
        return State(weights, rng, loss, accuracy, snapshots)

    def save(
        self, epoch: int, net: Network, rng: np.random.Generator, loss: list, accuracy: list, snapshots: dict
    ) -> None:
        """The state after `epoch`, if SECONDS have passed since the last (or the start); at most KEEP others kept."""
        if time.monotonic() - self.last < self.seconds:
            return
        kept = sorted(e for e in snapshots if e <= epoch)
        arrays = {
            "key": np.array(self.key),
            "rng": np.array(json.dumps(rng.bit_generator.state)),
            "loss": np.array(loss, dtype=np.float64),
            "accuracy": np.array(accuracy, dtype=np.float64),
            "trace_epoch": np.array(kept, dtype=np.int64),
        }
        for name, array in net.parameters().items():
            arrays[name] = array
            arrays[f"trace_{name}"] = np.stack([snapshots[e][name] for e in kept])
        save_npz(self.path, arrays)
        others = sorted((p for p in self.path.parent.glob("*.npz") if p != self.path), key=lambda p: p.stat().st_mtime)
        for old in others[:-KEEP]:  # the oldest beyond KEEP
            old.unlink(missing_ok=True)
        self.last = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def resumed(net: Network, rng: np.random.Generator, state: State) -> tuple[Network, History]:
    """`net` with the saved weights, `rng` moved to the saved state, and the history so far."""
    rng.bit_generator.state = state.rng
    net = dataclasses.replace(net, **state.weights)
    done = len(state.loss)
    return net, History(np.arange(1, done + 1), state.loss, state.accuracy)


class LiveHistory:
    """metrics/history.tsv as the run goes: the header, then each epoch's row, written at most every
    LIVE_SECONDS (and signalled to DVC's VS Code extension under DVC); `close` ends it. The rows are
    `writing.save_tsv`'s, so the file is a prefix of the finished one at every moment."""

    def __init__(self, path: Path = paths.HISTORY, columns: tuple[str, ...] = ("step", "loss", "accuracy")) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: IO[str] = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed in close())
        self.pending, self.last = ["\t".join(columns)], 0.0
        root = os.environ.get("DVC_ROOT")
        self.signal = Path(root) / STEP_SIGNAL if root else None

    def add(self, step: int, *values: float) -> None:
        self.pending.append(tsv_row((step, *values)))
        if time.monotonic() - self.last >= LIVE_SECONDS:
            self.flush(step)

    def flush(self, step: int) -> None:
        if self.pending:
            self.file.write("\n".join(self.pending) + "\n")
            self.file.flush()
            self.pending = []
        if self.signal is not None:
            self.signal.parent.mkdir(parents=True, exist_ok=True)
            self.signal.write_text(json.dumps({"pid": os.getpid(), "step": step}, sort_keys=True), encoding="utf-8")
        self.last = time.monotonic()

    def close(self) -> None:
        self.file.close()
        if self.signal is not None:
            self.signal.unlink(missing_ok=True)
