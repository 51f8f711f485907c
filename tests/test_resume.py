"""Long runs watched and resumed (pipeline/resume.py): a killed training resumed from its checkpoint writes the
bytes of one that never stopped; a checkpoint that is not this run's is ignored in one line; under DVC the
history grows as the run goes and each write is signalled as DVC's VS Code extension expects.

In process, a "kill" is an exception raised just after a checkpoint is written; the slow tests kill a real
`dvc repro` with SIGKILL and resume it with `dvc repro`, and follow a live run from another process."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import paths, resume
from pipeline.glyphs import clean_glyphs, noisy_copies
from pipeline.params import load_params
from pipeline.train import train
from tests.conftest import ROOT, copy_of, dvc, env, run


class Killed(Exception):
    """Stands for SIGKILL, just after a checkpoint was written."""


def glyphs() -> tuple[np.ndarray, np.ndarray]:
    clean = clean_glyphs()
    x, y = noisy_copies(clean, 10, 0.1, np.random.default_rng(0))
    return np.concatenate([clean, x]), np.concatenate([np.arange(3), y]).astype(np.uint8)


def params(**train):
    p = load_params(ROOT / paths.PARAMS).train
    return dataclasses.replace(p, **({"epochs": 40, "shuffle": True, "batch_size": 4} | train))


def outputs(result) -> tuple:
    net, history, trace = result
    return (
        *(a.tobytes() for a in net.parameters().values()),
        history.loss.tobytes(),
        history.accuracy.tobytes(),
        *(a.tobytes() for a in trace.values()),
    )


def killed_at(epoch: int, p, X, y, directory: Path, monkeypatch) -> Path:
    """Train with a checkpoint after every epoch, killed just after the one of `epoch`; the checkpoint's path."""
    saved = resume.Checkpoints.save

    def save_then_die(self, done, *args):
        saved(self, done, *args)
        if done == epoch:
            raise Killed

    with monkeypatch.context() as m:
        m.setenv(resume.SECONDS_VARIABLE, "0")
        m.setattr(resume.Checkpoints, "save", save_then_die)
        with pytest.raises(Killed):
            train(p, X, y, resume.Checkpoints(resume.run_key(p, X, y), directory))
    return directory / f"{resume.run_key(p, X, y)}.npz"


@pytest.mark.parametrize("engine", ["numpy", pytest.param("numba", marks=pytest.mark.slow)])  # numba: a compile
def test_a_killed_run_resumed_from_its_checkpoint_is_the_uninterrupted_run_byte_for_byte(
    engine, tmp_path, monkeypatch, capsys
):
    X, y = glyphs()
    p = params()
    whole = outputs(train(p, X, y))
    path = killed_at(17, p, X, y, tmp_path, monkeypatch)
    assert path.is_file() and path.stat().st_size < 1 << 20
    monkeypatch.setenv("PIPELINE_ENGINE", engine)  # the other engine may resume what one began
    capsys.readouterr()
    again = train(p, X, y, resume.Checkpoints(resume.run_key(p, X, y), tmp_path))
    assert f"train: resuming after epoch 17 of 40 ({path})" in capsys.readouterr().err
    assert outputs(again) == whole


def crafted(path: Path, how: str) -> None:
    """The checkpoint at `path` made into another run's, or into what no run writes."""
    with np.load(path) as archive:
        arrays = dict(archive)
    if how == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(200))
        return
    change = {
        "other-run": {"key": np.array("0" * 32)},
        "nan-weights": {"w1": np.full_like(arrays["w1"], np.nan)},
        "wrong-shape": {"w2": arrays["w2"][:1]},
        "bad-rng": {"rng": np.array('{"bit_generator": "MT19937"}')},
        "long-history": {"loss": np.zeros(500), "accuracy": np.zeros(500)},
        "short-trace": {"trace_epoch": arrays["trace_epoch"][:2]},
    }[how]
    np.savez(path, **arrays | change)


@pytest.mark.parametrize(
    "how", ["garbage", "other-run", "nan-weights", "wrong-shape", "bad-rng", "long-history", "short-trace"]
)
def test_a_checkpoint_that_is_not_this_runs_is_ignored_in_one_line(how, tmp_path, monkeypatch, capsys):
    X, y = glyphs()
    p = params()
    whole = outputs(train(p, X, y))
    path = killed_at(9, p, X, y, tmp_path, monkeypatch)
    crafted(path, how)
    capsys.readouterr()
    again = train(p, X, y, resume.Checkpoints(resume.run_key(p, X, y), tmp_path))
    err = capsys.readouterr().err.splitlines()
    notes = [line for line in err if line.startswith("train: ignoring")]
    assert (
        len(notes) == 1
        and notes[0].startswith(f"train: ignoring {path} (")
        and notes[0].endswith("); training from epoch 1")
    ), err
    assert outputs(again) == whole


def test_a_run_of_other_params_data_or_code_has_another_name():
    X, y = glyphs()
    p = params()
    key = resume.run_key(p, X, y)
    assert resume.run_key(dataclasses.replace(p, lr=0.2), X, y) != key
    assert resume.run_key(p, X[::-1].copy(), y[::-1].copy()) != key
    assert re.fullmatch(r"[0-9a-f]{32}", key)


def test_checkpoints_are_bounded_and_removed_when_the_run_completes(tmp_path, monkeypatch):
    X, y = glyphs()
    for lr in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        killed_at(5, params(lr=lr), X, y, tmp_path, monkeypatch)
    assert len(list(tmp_path.glob("*.npz"))) == resume.KEEP + 1  # the newest, and KEEP others
    p = params(lr=0.6)
    checkpoints = resume.Checkpoints(resume.run_key(p, X, y), tmp_path)
    train(p, X, y, checkpoints)
    checkpoints.remove()  # what the stage does once its outputs are in place
    assert not checkpoints.path.exists()


# ---- a real dvc repro: live, killed, resumed ----

LONG = {"  train_per_class: 0 ": "  train_per_class: 100 "}  # 303 glyphs, 300 epochs: about 8 s with NumPy


@pytest.fixture
def long_run(dvc_repo, tmp_path) -> Path:
    repo = copy_of(dvc_repo, tmp_path / "repo")
    text = (repo / "params.yaml").read_text()
    for old, new in LONG.items():
        text = text.replace(old, new)
    (repo / "params.yaml").write_text(text)
    dvc(repo, "repro", "make_dataset")
    return repo


@pytest.mark.slow
def test_a_dvc_run_is_followed_from_another_process_while_it_trains(long_run):
    repo = long_run
    history, signal_file = repo / paths.HISTORY, repo / resume.STEP_SIGNAL
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train"],
        cwd=repo,
        env=env() | {"PIPELINE_ENGINE": "numpy"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen, steps = [], []
    while proc.poll() is None:
        if steps and history.exists():  # once the live writer has begun (before it, the last run's history)
            text = history.read_text()
            if text and (not seen or text != seen[-1]):
                seen.append(text)
        if signal_file.exists():
            with contextlib.suppress(ValueError, OSError):  # caught between its open and its write
                steps.append(json.loads(signal_file.read_text())["step"])
        time.sleep(0.05)
    assert proc.returncode == 0
    final = history.read_text()
    partial = [text for text in seen if text != final]
    assert len(partial) >= 3, len(partial)  # it grew while it ran, a few writes a second
    assert all(final.startswith(text) for text in partial)  # at every moment, a prefix of the finished file
    assert steps and steps == sorted(steps) and not signal_file.exists()
    # The finished file is the bytes of a run nobody watched.
    quiet = run([sys.executable, "-m", "pipeline.train"], cwd=repo, check=False, PIPELINE_ENGINE="numpy")
    assert quiet.returncode == 0 and history.read_text() == final


@pytest.mark.slow
def test_a_train_stage_killed_mid_run_is_resumed_by_the_same_dvc_repro_to_the_same_bytes(long_run):
    repo = long_run
    extra = {"PIPELINE_ENGINE": "numpy", resume.SECONDS_VARIABLE: "0.5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=repo,
        env=env() | extra,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list((repo / paths.CHECKPOINTS).glob("*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # a checkpoint or two later
    os.killpg(proc.pid, signal.SIGKILL)  # DVC and the stage, as a crash or an OOM kill takes them
    proc.wait()
    resumed = dvc(repo, "repro", extra_env=extra)
    found = re.search(
        r"train: resuming after epoch (\d+) of 300 \(\.train-checkpoints/[0-9a-f]{32}\.npz\)", resumed.stderr
    )
    assert found and 0 < int(found.group(1)) < 300, resumed.stderr
    lock = (repo / "dvc.lock").read_text()
    assert not list((repo / paths.CHECKPOINTS).glob("*.npz"))  # removed once the outputs are in place
    dvc(repo, "repro", "-f", "train", extra_env={"PIPELINE_ENGINE": "numpy"})  # the run uninterrupted
    assert (repo / "dvc.lock").read_text() == lock
