"""Sharing beyond one machine with DVC's own machinery: an experiment sweep, remotes, the model artifact."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import copy_project, env, run

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t"]
BIG_OUTPUTS = ["data/x_train.npy", "data/y_train.npy", "data/x_test.npy", "data/y_test.npy", "models/model.npz"]


def dvc(cwd: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env() | (extra_env or {}),
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], cwd=repo)
    run(["git", *GIT_ID, "commit", "-qm", message], cwd=repo)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repo of the project after `dvc repro`, everything committed (as after a clone and a run)."""
    project = copy_project(tmp_path_factory.mktemp("share") / "project")
    run(["git", "init", "-q"], cwd=project)
    dvc(project, "repro")
    commit(project, "project and its results")
    return project


def clone(repo: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(repo), str(dest)], cwd=repo.parent)
    return dest


def assert_pulled_clone_is_ready(repo: Path, fresh: Path) -> None:
    """A clone that only pulled has the same data and model, predicts at once, and is up to date."""
    for name in BIG_OUTPUTS:
        assert (fresh / name).read_bytes() == (repo / name).read_bytes(), name
    out = run([sys.executable, "-m", "pipeline.predict", "data/samples/b.txt"], cwd=fresh).stdout
    assert out.startswith("data/samples/b.txt: B (")
    assert "Data and pipelines are up to date." in dvc(fresh, "status").stdout


def test_a_queued_sweep_runs_and_lists_its_params_and_metrics(repo, tmp_path):
    sweep = clone(repo, tmp_path / "sweep")
    for lr, hidden in (("0.3", "4"), ("0.5", "8")):
        dvc(sweep, "exp", "run", "--queue", "-S", f"train.lr={lr}", "-S", f"train.hidden={hidden}")
    dvc(sweep, "exp", "run", "--run-all", "-j", "2")
    rows = json.loads(dvc(sweep, "exp", "show", "--json").stdout)
    found = {}
    for row in rows:
        for exp in row.get("experiments") or []:
            data = exp["revs"][0]["data"]
            train = data["params"]["params.yaml"]["data"]["train"]
            found[(train["lr"], train["hidden"])] = data["metrics"]["metrics/metrics.json"]["data"]
    assert set(found) == {(0.3, 4), (0.5, 8)}, rows
    for metrics in found.values():
        assert 0 < metrics["test"]["accuracy"] <= 1 and metrics["train"]["loss"] > 0


def pushed(repo: Path, dest: Path, remote: list[str], creds: dict[str, str] | None = None) -> Path:
    """A clone of `repo` that ran the pipeline, committed `remote` as its default, and pushed to it."""
    work = clone(repo, dest)
    dvc(work, "repro")
    dvc(work, "remote", "add", "--force", "-d", *remote[:2])  # --force: the user may have committed one
    if remote[2:]:
        dvc(work, "remote", "modify", remote[0], *remote[2:])
    commit(work, "a default remote for the team")
    dvc(work, "push", extra_env=creds)
    return work


def test_push_to_a_local_remote_and_pull_into_a_fresh_clone(repo, tmp_path):
    work = pushed(repo, tmp_path / "work", ["test-storage", str(tmp_path / "storage")])
    fresh = clone(work, tmp_path / "fresh")
    dvc(fresh, "pull")
    assert_pulled_clone_is_ready(work, fresh)


def test_a_consumer_fetches_a_tagged_model_version(repo, tmp_path):
    producer = pushed(repo, tmp_path / "producer", ["test-storage", str(tmp_path / "storage")])
    run(["git", *GIT_ID, "tag", "-a", "abc-model@v1.0.0", "-m", "first model"], cwd=producer)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    dvc(consumer, "artifacts", "get", str(producer), "abc-model", "--rev", "v1.0.0", "-o", "model.npz")
    assert (consumer / "model.npz").read_bytes() == (producer / "models/model.npz").read_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server():
    """moto's S3-compatible server on loopback, with one bucket; stopped after the test."""
    pytest.importorskip("dvc_s3", reason="the s3 extra is not installed: pip install -c constraints.txt -e '.[s3]'")
    boto3 = pytest.importorskip("boto3", reason="the s3 extra is not installed (boto3)")
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3", endpoint_url=url, **{k.lower(): v for k, v in creds.items()
                                                        if k != "AWS_DEFAULT_REGION"},
                             region_name="us-east-1").create_bucket(Bucket="abc")
                break
            except Exception:  # noqa: BLE001 - the server is still starting; bounded by the deadline
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url, creds
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_push_and_pull_through_an_s3_compatible_remote(repo, tmp_path, s3_server):
    url, creds = s3_server
    work = pushed(repo, tmp_path / "work", ["s3r", "s3://abc/store", "endpointurl", url], creds)
    fresh = clone(work, tmp_path / "fresh")
    dvc(fresh, "pull", extra_env=creds)
    assert_pulled_clone_is_ready(work, fresh)
