"""Two machines working on one repository: an experiment travels from one to the other through a bare git
remote and a DVC remote (a local directory, and S3 through moto's server), and a run cache pushed
from one spares the other a training."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, clone, dvc, run
from tests.conftest import git_commit as commit

pytestmark = pytest.mark.slow  # two clones and their remotes (python -m pytest -m slow)


@pytest.fixture(scope="module")
def repo(dvc_repo) -> Path:
    """The session's repository after a `dvc repro`, everything committed; tests only clone it."""
    return dvc_repo


def bare_origin(repo: Path, dest: Path) -> Path:
    """A bare git remote holding `repo`'s commit on main, with HEAD on main (see docs/troubleshooting.md)."""
    run(["git", "init", "-q", "--bare", "-b", "main", str(dest)], cwd=repo.parent)
    run(["git", "push", "-q", str(dest), "HEAD:main"], cwd=repo)
    return dest


def machine(origin: Path, dest: Path) -> Path:
    """A fresh clone of `origin` that has pulled the committed outputs from the team's DVC remote."""
    work = clone(origin, dest)
    dvc(work, "pull")
    return work


@pytest.fixture(scope="module")
def team(repo: Path, tmp_path_factory) -> Path:
    """A bare origin whose main commits a local directory as the team's DVC remote, with the baseline's
    outputs pushed there."""
    tmp = tmp_path_factory.mktemp("team")
    origin = bare_origin(repo, tmp / "origin.git")
    setup = clone(origin, tmp / "setup")
    shutil.copytree(repo / ".dvc/cache", setup / ".dvc/cache")
    dvc(setup, "checkout")
    dvc(setup, "remote", "add", "-d", "team", str(tmp / "storage"))
    dvc(setup, "push")
    commit(setup, "the team's DVC remote")
    run(["git", "push", "-q", "origin", "HEAD:main"], cwd=setup)
    return origin


def add_s3(work: Path, url: str) -> None:
    dvc(work, "remote", "add", "--local", "s3r", "s3://abc/store")
    dvc(work, "remote", "modify", "--local", "s3r", "endpointurl", url)


def test_an_experiment_travels_through_git_and_a_local_or_s3_dvc_remote(team, tmp_path, s3_server):
    url, creds = s3_server
    a = machine(team, tmp_path / "a")
    add_s3(a, url)
    dvc(a, "exp", "run", "-S", "train.lr=0.3", "-S", "train.hidden=8", "--name", "lr03-h8")
    pushed = dvc(a, "exp", "push", "origin", "lr03-h8").stdout  # git ref to origin, outputs to `team`
    assert "Pushed experiment lr03-h8" in pushed, pushed
    dvc(a, "exp", "push", "-r", "s3r", "origin", "lr03-h8", extra_env=creds)  # and the outputs to S3 too

    for name, remote in (("b-local", []), ("b-s3", ["-r", "s3r"])):
        b = clone(team, tmp_path / name)
        if remote:
            add_s3(b, url)
        dvc(b, "exp", "pull", *remote, "origin", "lr03-h8", extra_env=creds)
        rows = json.loads(dvc(b, "exp", "show", "--json").stdout)
        found = [
            exp["revs"][0]["data"]
            for row in rows
            for exp in (row.get("experiments") or [])
            if exp["revs"][0].get("name") == "lr03-h8"
        ]
        assert found, rows
        assert found[0]["params"]["params.yaml"]["data"]["train"]["lr"] == 0.3
        assert (
            found[0]["metrics"]["metrics/metrics.json"]["data"]["test"]["accuracy"]
            == json.loads((a / "metrics/metrics.json").read_text())["test"]["accuracy"]
        )
        dvc(b, "exp", "apply", "lr03-h8")
        dvc(b, "checkout")
        assert (b / "models/model.npz").read_bytes() == (a / "models/model.npz").read_bytes(), name
        said = [
            run([sys.executable, "-m", "pipeline.predict", "data/samples/b_wide.txt"], cwd=m).stdout for m in (a, b)
        ]
        assert said[0] == said[1] and said[0].startswith("data/samples/b_wide.txt: "), name


def restored(out: str) -> list[str]:
    return re.findall(r"Stage '(\w+)' is cached - skipping run", out)


def test_a_run_cache_pushed_from_one_machine_spares_the_other_a_training(team, tmp_path):
    a = machine(team, tmp_path / "a")
    set_lr = lambda m: (m / "params.yaml").write_text((m / "params.yaml").read_text().replace("lr: 0.1 ", "lr: 0.5 "))
    set_lr(a)
    assert "Running stage 'train'" in dvc(a, "repro").stdout
    dvc(a, "push", "--run-cache")  # DVC's own: the run records, and the workspace's data

    b = machine(team, tmp_path / "b")  # same commit, same value
    set_lr(b)
    dvc(b, "pull", "--run-cache")
    out = dvc(b, "repro", "--pull")
    # DVC 3.67 pushed the records but not the `cache: false` metrics they name: B trains again.
    assert "metrics/history.tsv" in out.stderr and "Running stage 'train'" in out.stdout, out.stdout + out.stderr

    run([sys.executable, str(ROOT / "scripts/push-run-cache")], cwd=a)  # ... so this pushes them too
    c = machine(team, tmp_path / "c")
    set_lr(c)
    dvc(c, "pull", "--run-cache")
    out = dvc(c, "repro", "--pull").stdout
    assert restored(out) == ["train", "evaluate", "predict"] and "Running stage 'train'" not in out, out
    for name in ("models/model.npz", "metrics/metrics.json", "metrics/history.tsv"):
        assert (c / name).read_bytes() == (a / name).read_bytes(), name
