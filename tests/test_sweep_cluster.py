"""A sweep on a real multi-process Dask cluster: `dask scheduler` and two `dask worker` processes on localhost,
started with Dask's own commands as on several machines (minus the network). One worker is killed during a
trial; Dask runs that trial again on the other, and every result is the one this process computes itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import paths, sweep
from pipeline.params import read_yaml
from tests.conftest import assert_one_line_error, copy_project, env, free_port
from tests.test_sweep import SLOW

pytestmark = pytest.mark.slow  # a Dask cluster of separate processes (python -m pytest -m slow)

DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers (no nanny, so nothing sets BLAS variables), as separate
    processes; the NumPy engine, so each trial lasts long enough to be caught running. Stopped afterwards."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    common = {"cwd": tmp_path, "env": env() | {"PIPELINE_ENGINE": "numpy"}, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **common)
    ]
    worker = [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
    procs += [subprocess.Popen([*worker, "--name", f"w{i}"], **common) for i in range(2)]
    try:
        yield address
    finally:
        for proc in procs[::-1]:  # the workers first: they would wait for a scheduler gone
            proc.terminate()
        for proc in procs[::-1]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_sweep_on_dask_commands_survives_a_worker_killed_mid_trial(cluster, tmp_path, monkeypatch):
    from distributed import Client

    project = copy_project(tmp_path / "p")
    (project / "sweeps/slow.yaml").write_text(SLOW)
    with Client(cluster, timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.sweep", "sweeps/slow.yaml", "--scheduler", cluster],
            cwd=project,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        busy, deadline = [], time.monotonic() + 120
        while not busy and proc.poll() is None and time.monotonic() < deadline:
            busy = [worker for worker, tasks in client.processing().items() if tasks]
            time.sleep(0.02)
        assert busy, "no trial was seen running"
        os.kill(client.run(os.getpid, workers=busy[:1])[busy[0]], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"note: lost worker {busy[0]}; Dask runs its trials again on the others" in err, err
    assert "6 trials: 0 reused" in out and f"6 ran on {cluster}" in out and "0 failed" in out, out
    # Every trial's metrics, whichever worker ran it, killed or not, are the bytes this process computes.
    monkeypatch.chdir(project)  # the sweep file and params.yaml, as the sweep read them
    spec = sweep.load_sweep(Path("sweeps/slow.yaml"))
    files = sweep.code_files()
    trials = sweep.trials(spec, read_yaml(paths.PARAMS), sweep.code_hash(files))
    for trial in trials:
        saved = json.loads((project / paths.SWEEP_CACHE / f"{trial.key}.json").read_text())
        assert saved == {"metrics": sweep.run_trial(trial.doc, files)["metrics"]}, trial.number


def test_a_scheduler_that_does_not_answer_is_one_line(tmp_path):
    project = copy_project(tmp_path / "p")
    (project / "sweeps/slow.yaml").write_text(SLOW)
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.sweep", "sweeps/slow.yaml", "--scheduler", address],
        cwd=project,
        env=env() | {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},  # Dask's own setting; 30 s by default
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_one_line_error(proc, f"error: --scheduler {address}: cannot connect (")
