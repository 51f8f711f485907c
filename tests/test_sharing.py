"""Sharing beyond one machine with DVC's own machinery: an experiment sweep, remotes, the model artifact."""
from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_project, env, run

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t"]
BIG_OUTPUTS = ["data/x_train.npy", "data/y_train.npy", "data/x_test.npy", "data/y_test.npy", "models/model.npz"]


def dvc(cwd: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run dvc; a hang (DVC's experiment queue has hung once in a while) fails the test after 5 minutes."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env() | (extra_env or {}),
                          capture_output=True, text=True, timeout=300)
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


# --- two machines: experiments through a bare git remote, and a shared run cache ------------------------

README = (ROOT / "README.md").read_text()


def bare_origin(repo: Path, dest: Path) -> Path:
    """A bare git remote holding `repo`'s commit on main, with HEAD on main (see the README's troubleshooting)."""
    run(["git", "init", "-q", "--bare", "-b", "main", str(dest)], cwd=repo.parent)
    run(["git", "push", "-q", str(dest), "HEAD:main"], cwd=repo)
    return dest


def machine(origin: Path, dest: Path, remote: list[str], creds: dict[str, str] | None = None) -> Path:
    """A fresh clone of `origin` that has pulled the committed outputs from the DVC remote `remote`."""
    work = clone(origin, dest)
    dvc(work, "remote", "add", "--force", "-d", *remote[:2])
    if remote[2:]:
        dvc(work, "remote", "modify", remote[0], *remote[2:])
    dvc(work, "pull", extra_env=creds)
    return work


def with_team_remote(repo: Path, tmp_path: Path, remote: list[str], creds: dict[str, str] | None) -> Path:
    """A bare origin whose main has the DVC remote committed and the baseline's outputs pushed to it."""
    origin = bare_origin(repo, tmp_path / "origin.git")
    setup = clone(origin, tmp_path / "setup")
    dvc(setup, "remote", "add", "-d", *remote[:2])
    if remote[2:]:
        dvc(setup, "remote", "modify", remote[0], *remote[2:])
    dvc(setup, "repro")
    dvc(setup, "push", extra_env=creds)
    commit(setup, "the team's DVC remote")
    run(["git", "push", "-q", "origin", "HEAD:main"], cwd=setup)
    return origin


def exp_travels(repo: Path, tmp_path: Path, remote: list[str], creds: dict[str, str] | None = None) -> None:
    origin = with_team_remote(repo, tmp_path, remote, creds)
    a = machine(origin, tmp_path / "a", remote, creds)
    dvc(a, "exp", "run", "-S", "train.lr=0.3", "-S", "train.hidden=8", "--name", "lr03-h8", extra_env=creds)
    pushed = dvc(a, "exp", "push", "origin", "lr03-h8", extra_env=creds).stdout
    assert "Pushed experiment lr03-h8" in pushed, pushed

    b = clone(origin, tmp_path / "b")
    dvc(b, "exp", "pull", "origin", "lr03-h8", extra_env=creds)
    rows = json.loads(dvc(b, "exp", "show", "--json").stdout)
    found = [exp["revs"][0]["data"] for row in rows for exp in (row.get("experiments") or [])
             if exp["revs"][0].get("name") == "lr03-h8"]
    assert found, rows
    assert found[0]["params"]["params.yaml"]["data"]["train"]["lr"] == 0.3
    assert found[0]["metrics"]["metrics/metrics.json"]["data"]["test"]["accuracy"] == \
        json.loads((a / "metrics/metrics.json").read_text())["test"]["accuracy"]
    dvc(b, "exp", "apply", "lr03-h8")
    dvc(b, "checkout", extra_env=creds)
    assert (b / "models/model.npz").read_bytes() == (a / "models/model.npz").read_bytes()
    said = [run([sys.executable, "-m", "pipeline.predict", "data/samples/b_wide.txt"], cwd=m).stdout for m in (a, b)]
    assert said[0] == said[1] and said[0].startswith("data/samples/b_wide.txt: ")


def test_an_experiment_travels_through_git_and_a_local_dvc_remote(repo, tmp_path):
    exp_travels(repo, tmp_path, ["team", str(tmp_path / "storage")])


def test_an_experiment_travels_through_git_and_an_s3_remote(repo, tmp_path, s3_server):
    url, creds = s3_server
    exp_travels(repo, tmp_path, ["team", "s3://abc/store", "endpointurl", url], creds)


def restored(out: str) -> list[str]:
    return re.findall(r"Stage '(\w+)' is cached - skipping run", out)


def test_a_run_cache_pushed_from_one_machine_spares_the_other_a_training(repo, tmp_path):
    remote = ["team", str(tmp_path / "storage")]
    origin = with_team_remote(repo, tmp_path, remote, None)
    a = machine(origin, tmp_path / "a", remote)
    set_lr = lambda m: (m / "params.yaml").write_text((m / "params.yaml").read_text().replace("lr: 0.1 ", "lr: 0.5 "))  # noqa: E731
    set_lr(a)
    assert "Running stage 'train'" in dvc(a, "repro").stdout
    dvc(a, "push", "--run-cache")                        # DVC's own: the run records, and the workspace's data

    b = machine(origin, tmp_path / "b", remote)          # same commit, same value
    set_lr(b)
    dvc(b, "pull", "--run-cache")
    out = dvc(b, "repro", "--pull")
    # DVC 3.67 pushed the records but not the `cache: false` metrics they name: B trains again.
    assert "metrics/history.tsv" in out.stderr and "Running stage 'train'" in out.stdout, out.stdout + out.stderr

    run([sys.executable, str(ROOT / "scripts/push-run-cache")], cwd=a)  # ... so this pushes them too
    c = machine(origin, tmp_path / "c", remote)
    set_lr(c)
    dvc(c, "pull", "--run-cache")
    out = dvc(c, "repro", "--pull").stdout
    assert restored(out) == ["train", "evaluate", "predict"] and "Running stage 'train'" not in out, out
    for name in ("models/model.npz", "metrics/metrics.json", "metrics/history.tsv"):
        assert (c / name).read_bytes() == (a / name).read_bytes(), name


def readme_command(start: str) -> str:
    return next(line for block in re.findall(r"^```\n(.*?)\n```", README, flags=re.M | re.S)
                for line in block.splitlines() if line.startswith(start))


def test_the_readmes_experiment_table_fits_a_terminal_120_columns_wide(repo, tmp_path):
    sweep = clone(repo, tmp_path / "sweep")
    dvc(sweep, "exp", "run", "-S", "train.lr=0.3", "-S", "train.hidden=8", "--name", "lr03-h8")
    dvc(sweep, "exp", "run", "-S", "dataset.train_per_class=50", "-S", "train.shuffle=true", "--name", "noisy50")
    command = shlex.split(readme_command("dvc exp show --only-changed --drop"))
    table = dvc(sweep, *command[1:], "--no-pager", extra_env={"COLUMNS": "120"}).stdout
    lines = table.splitlines()
    assert lines and max(len(line.rstrip()) for line in lines) <= 120, table
    header = lines[1]
    for column in ("Experiment", "test.accuracy", "train.lr", "train.hidden", "dataset.train_per_class",
                   "train.shuffle"):
        assert column in header, table
    assert "lr03-h8" in table and "noisy50" in table and "…" not in table, table


def test_the_dvc_messages_the_readme_troubleshoots_are_what_dvc_says(repo, tmp_path):
    work = clone(repo, tmp_path / "work")
    typo = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lrr=0.5"], cwd=work, env=env(),
                          capture_output=True, text=True)
    assert typo.returncode != 0 and "Could not override 'train.lrr'" in typo.stderr, typo.stderr
    assert "Could not override 'train.lrr'" in README
    dvc(work, "repro")  # with make_dataset's outputs there, DVC checks train's params before running anything
    params = work / "params.yaml"
    params.write_text(params.read_text().replace("  lr: 0.1 ", "  lrr: 0.1 "))
    missing = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=work, env=env(), capture_output=True,
                             text=True)
    assert missing.returncode != 0 and "Parameters 'train.lr' are missing from 'params.yaml'" in missing.stderr
    assert "Parameters 'train.lr' are missing from 'params.yaml'" in README
