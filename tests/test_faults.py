"""Faults: an interrupted write never leaves a truncated artifact, and DVC restores the last good outputs.

write_atomic writes a temporary file beside the target and renames it over the target, so a writer
that fails, or a stage killed while it writes, leaves the old file (or none), never half of a new one.
After a run that failed or damaged its outputs, `dvc checkout` brings back the last good outputs from
the cache; the git-tracked metrics (`cache: false`) come back with `git checkout`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.errors import exit_on_error
from pipeline.glyphs import clean_glyphs
from pipeline.writing import save_npy, write_atomic
from tests.conftest import copy_of, dvc, edit_params, env, run, run_module

DATA = ["data/x_train.npy", "data/y_train.npy", "data/x_test.npy", "data/y_test.npy"]


class WriterFailed(Exception):
    pass


@pytest.mark.parametrize("error", [WriterFailed, KeyboardInterrupt])
@pytest.mark.parametrize("existed", [True, False], ids=["old-file", "no-file"])
def test_a_writer_failing_halfway_leaves_the_old_file_and_no_temporary(tmp_path, error, existed):
    path = tmp_path / "out" / "x.npy"
    old = np.arange(1000, dtype=np.int64)
    if existed:
        save_npy(path, old)
    else:
        path.parent.mkdir()
    before = sorted(os.listdir(path.parent))

    def write_half_then_fail(f) -> None:
        np.save(f, np.ones(100_000))
        f.flush()  # the new bytes reached the file system before the failure
        raise error("disk full")

    with pytest.raises(error):
        write_atomic(path, write_half_then_fail)
    assert sorted(os.listdir(path.parent)) == before  # no temporary file left behind
    if existed:
        np.testing.assert_array_equal(np.load(path), old)
    else:
        assert not path.exists()


def test_a_successful_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "x.npy"
    save_npy(path, np.zeros(3))
    save_npy(path, np.arange(5))
    np.testing.assert_array_equal(np.load(path), np.arange(5))
    assert os.listdir(tmp_path) == ["x.npy"]


def _tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of each file in `folder`, skipping files renamed away meanwhile."""
    state = {}
    for entry in os.scandir(folder):
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        if entry.is_file():
            state[entry.name] = (st.st_size, st.st_mtime_ns)
    return state


def _wait_for_a_write(
    proc: subprocess.Popen, folder: Path, old: dict[str, tuple[int, int]], timeout: float = 60.0
) -> str:
    """Poll until a file in `folder` is being written: a new file with some bytes, or an old one changed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, (size, mtime) in _tree_state(folder).items():
            if (name not in old and size > 0) or (name in old and (size, mtime) != old[name]):
                return name
        if proc.poll() is not None:
            pytest.fail(f"the stage exited ({proc.returncode}) before any write was seen")
        time.sleep(0.0005)
    pytest.fail(f"no write started within {timeout} s")


def test_killing_make_dataset_while_it_writes_leaves_no_truncated_array(project):
    """SIGKILL mid-write: every data/*.npy is still the old complete file (or a complete new one)."""
    assert run_module("pipeline.make_dataset", cwd=project).returncode == 0
    old = {name: np.load(project / name) for name in DATA}
    copies = 1_000_000  # 90 MB of training pixels: np.save and fsync take a good fraction of a second
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["dataset"]["train_per_class"] = copies
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    data = project / "data"
    before = _tree_state(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.make_dataset"],
        cwd=project,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        writing = _wait_for_a_write(proc, data, before)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the stage finished before it was killed"

    new_y_train = np.concatenate([np.arange(3), np.tile(np.arange(3), copies)]).astype(np.uint8)
    for name in DATA:
        path = project / name
        assert path.exists(), f"{name} vanished"
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as err:
            pytest.fail(f"{name} is truncated or corrupt after the kill (seen writing: {writing}): {err}")
        if array.shape == old[name].shape:
            np.testing.assert_array_equal(array, old[name], err_msg=name)
        elif name == "data/x_train.npy":  # the kill came just after this file's rename: complete and new
            assert array.shape == (3 + 3 * copies, 30) and array.dtype == np.uint8
            np.testing.assert_array_equal(array[:3], clean_glyphs())
        elif name == "data/y_train.npy":
            np.testing.assert_array_equal(array, new_y_train)
        else:
            pytest.fail(f"{name} has shape {array.shape}, expected {old[name].shape}")
    # A temporary file the kill left behind is hidden and never has an output's name.
    leftovers = {p.name for p in data.iterdir() if p.is_file()} - {Path(n).name for n in DATA} - {".gitignore"}
    assert all(re.fullmatch(r"\.[xy]_(train|test)\.npy\.\d+\..+\.tmp", name) for name in leftovers), leftovers
    # The next write of each file removes what the killed writer left (its process is gone); a live writer's stays.
    live = data / f".x_test.npy.{os.getpid()}.abcd1234.tmp"
    live.write_bytes(b"a write in progress")
    dead = data / f".x_train.npy.{proc.pid}.zz99zz99.tmp"  # one more of the killed writer's, whatever the kill left
    dead.write_bytes(b"x" * 1000)
    params["dataset"]["train_per_class"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_module("pipeline.make_dataset", cwd=project).returncode == 0
    left = {p.name for p in data.iterdir() if p.is_file()} - {Path(n).name for n in DATA} - {".gitignore"}
    assert left == {live.name} and not dead.exists(), left


# dvc checkout after failures, in a git repository made from the tracked files.
CACHED = [*DATA, "models/model.npz"]  # DVC-cached outputs; the rest (metrics/) live in git


def _digests(project: Path, names: list[str]) -> dict[str, str | None]:
    return {n: hashlib.md5((project / n).read_bytes()).hexdigest() if (project / n).exists() else None for n in names}


def _outputs(project: Path) -> list[str]:
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    names = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            names += [next(iter(o)) if isinstance(o, dict) else o for o in stage.get(kind, [])]
    return sorted(names)


@pytest.fixture(scope="module")
def repo(dvc_repo, tmp_path_factory) -> Path:
    """A copy of the session's repository: the tracked files after `dvc repro` and a commit of its results."""
    return copy_of(dvc_repo, tmp_path_factory.mktemp("faults") / "project")


def assert_all_good(repo: Path, good: dict[str, str | None]) -> None:
    assert _digests(repo, list(good)) == good
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
    assert run(["git", "status", "--porcelain"], cwd=repo).stdout == ""


def test_dvc_checkout_restores_damaged_and_deleted_outputs(repo):
    outputs = _outputs(repo)
    assert set(CACHED) <= set(outputs)
    good = _digests(repo, outputs)
    (repo / "data/x_train.npy").unlink()  # replace (DVC may link files from its cache): garbage
    (repo / "data/x_train.npy").write_bytes(b"garbage")
    y_test = (repo / "data/y_test.npy").read_bytes()
    (repo / "data/y_test.npy").unlink()
    (repo / "data/y_test.npy").write_bytes(y_test[: len(y_test) // 2])  # truncated
    (repo / "models/model.npz").unlink()

    # Files changed by hand are "unsaved": plain `dvc checkout` refuses to overwrite them; --force does.
    dvc(repo, "checkout", "--force")
    assert_all_good(repo, good)


def test_after_a_failed_run_checkout_restores_the_last_good_outputs(repo):
    outputs = _outputs(repo)
    good = _digests(repo, outputs)
    params = repo / "params.yaml"
    text = params.read_text()
    diverging = re.sub(
        r"^  bias: false", "  bias: true", re.sub(r"^  lr: [0-9.]+", "  lr: 1e300", text, flags=re.M), flags=re.M
    )
    assert diverging != text
    params.write_text(diverging)
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0 and "at epoch 1, beyond exp's range" in failed.stderr, failed.stderr
    # DVC deletes a stage's outputs before running it, so the failed train left no model at all.
    assert not (repo / "models/model.npz").exists()

    # params, the lock (check_params passed and recorded the new params) and git-tracked outputs
    run(["git", "checkout", "--", "params.yaml", "dvc.lock", "metrics"], cwd=repo)
    dvc(repo, "checkout")  # the cached outputs
    assert_all_good(repo, good)


TRAIN_OUTPUTS = ["models/model.npz", "models/trace.npz", "metrics/history.tsv"]


def _digests(project: Path, names: list[str]) -> dict[str, str]:
    return {name: hashlib.md5((project / name).read_bytes()).hexdigest() for name in names}


def test_a_full_disk_while_train_writes_is_one_line_and_keeps_the_old_model_trace_and_history(
    built, tmp_path, monkeypatch, capsys
):
    """ENOSPC on the second file train writes (the trace): three chained OSError tracebacks before, and a
    new model beside the old trace. Now one line, exit 2, and the three old files as they were."""
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "train", lr=0.2)  # a run whose outputs differ from the old ones
    before = _digests(project, TRAIN_OUTPUTS)
    synced = []
    real_fsync = os.fsync

    def fsync_until_the_disk_is_full(fd: int) -> None:
        synced.append(fd)
        if len(synced) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_until_the_disk_is_full)
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", ["python -m pipeline.train"])
    from pipeline import train

    capsys.readouterr()
    status = exit_on_error(train.main)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err == "error: models/trace.npz: cannot write (No space left on device); the files there before are kept\n"
    assert len(synced) == 2
    assert _digests(project, TRAIN_OUTPUTS) == before
    assert sorted(p.name for p in (project / "models").iterdir()) == [
        ".gitignore",
        "model.npz",
        "trace.npz",
    ]  # no temporary


def test_a_real_full_file_system_under_models(built, tmp_path):
    """The same with a real file system: a 2 MB tmpfs over models/ (needs root and mount; else skipped)."""
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "train", epochs=1000)  # a trace of 300 snapshots: 400 kB
    models = project / "models"
    saved = {p.name: p.read_bytes() for p in models.iterdir()}
    mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(models)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        for name, data in saved.items():
            (models / name).write_bytes(data)
        free = os.statvfs(models).f_bavail * os.statvfs(models).f_frsize
        (models / "filler").write_bytes(bytes(max(0, free - 200_000)))  # room for a model, not for a trace
        before = _digests(project, TRAIN_OUTPUTS)
        proc = run_module("pipeline.train", cwd=project)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == (
            "error: models/trace.npz: cannot write (No space left on device); the files there before are kept\n"
        )
        assert _digests(project, TRAIN_OUTPUTS) == before
        assert sorted(p.name for p in models.iterdir()) == [".gitignore", "filler", "model.npz", "trace.npz"]
    finally:
        subprocess.run(["umount", str(models)], check=True)
