"""Sharing beyond one machine with DVC's own machinery: an experiment sweep, remotes, the model artifact."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import docs
from tests.conftest import ROOT, clone, clone_with_outputs, dvc, env, free_port, run
from tests.conftest import git_commit as commit

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t"]
BIG_OUTPUTS = ["data/x_train.npy", "data/y_train.npy", "data/x_test.npy", "data/y_test.npy", "models/model.npz"]


@pytest.fixture(scope="module")
def repo(dvc_repo) -> Path:
    """The session's repository after a `dvc repro`, everything committed; tests only clone it."""
    return dvc_repo


def assert_pulled_clone_is_ready(repo: Path, fresh: Path) -> None:
    """A clone that only pulled has the same data and model, predicts at once, and is up to date."""
    for name in BIG_OUTPUTS:
        assert (fresh / name).read_bytes() == (repo / name).read_bytes(), name
    out = run([sys.executable, "-m", "pipeline.predict", "data/samples/b.txt"], cwd=fresh).stdout
    assert out.startswith("data/samples/b.txt: B (")
    assert "Data and pipelines are up to date." in dvc(fresh, "status").stdout


@pytest.mark.slow  # DVC's queue: worker processes that DVC starts and waits for (about 40 s)
def test_a_queued_sweep_runs_and_lists_its_params_and_metrics(repo, tmp_path):
    sweep = clone_with_outputs(repo, tmp_path / "sweep")
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
    # The docs' readable table of them fits a terminal 120 columns wide.
    command = shlex.split(docs.block("exp-show-queue"))
    table = dvc(sweep, *command[1:], "--no-pager", extra_env={"COLUMNS": "120"}).stdout
    lines = table.splitlines()
    assert lines and max(len(line.rstrip()) for line in lines) <= 120, table
    for column in ("Experiment", "test.accuracy", "train.lr", "train.hidden"):
        assert column in lines[1], table
    assert table.count("[exp-") + table.count("] ") >= 2 and "…" not in table, table


def pushed(repo: Path, dest: Path, remote: list[str], creds: dict[str, str] | None = None) -> Path:
    """A clone of `repo` that ran the pipeline, committed `remote` as its default, and pushed to it."""
    work = clone_with_outputs(repo, dest)
    dvc(work, "remote", "add", "--force", "-d", *remote[:2])  # --force: the user may have committed one
    if remote[2:]:
        dvc(work, "remote", "modify", remote[0], *remote[2:])
    commit(work, "a default remote for the team")
    dvc(work, "push", extra_env=creds)
    return work


@pytest.mark.slow  # two clones sharing a remote
def test_push_to_a_local_remote_and_pull_into_a_fresh_clone(repo, tmp_path):
    work = pushed(repo, tmp_path / "work", ["test-storage", str(tmp_path / "storage")])
    fresh = clone(work, tmp_path / "fresh")
    dvc(fresh, "pull")
    assert_pulled_clone_is_ready(work, fresh)


@pytest.mark.slow  # two clones sharing a remote
def test_a_consumer_fetches_a_tagged_model_version(repo, tmp_path):
    producer = pushed(repo, tmp_path / "producer", ["test-storage", str(tmp_path / "storage")])
    run(["git", *GIT_ID, "tag", "-a", "abc-model@v1.0.0", "-m", "first model"], cwd=producer)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    dvc(consumer, "artifacts", "get", str(producer), "abc-model", "--rev", "v1.0.0", "-o", "model.npz")
    assert (consumer / "model.npz").read_bytes() == (producer / "models/model.npz").read_bytes()


@pytest.mark.slow  # two clones sharing a remote
def test_push_and_pull_through_an_s3_compatible_remote(repo, tmp_path, s3_server):
    url, creds = s3_server
    work = pushed(repo, tmp_path / "work", ["s3r", "s3://abc/store", "endpointurl", url], creds)
    fresh = clone(work, tmp_path / "fresh")
    dvc(fresh, "pull", extra_env=creds)
    assert_pulled_clone_is_ready(work, fresh)


def troubleshooting_quotes(text: str) -> bool:
    """Whether the troubleshooting page shows `text` inside one of its code spans or quotations."""
    return any(text in quoted for quoted in docs.quoted("docs/troubleshooting.md"))


@pytest.mark.slow  # what DVC itself prints, which changes with DVC's version only (about 9 s)
def test_the_dvc_messages_the_docs_troubleshoot_are_what_dvc_says(repo, tmp_path):
    work = clone_with_outputs(repo, tmp_path / "work")
    typo = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lrr=0.5"],
        cwd=work,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert typo.returncode != 0 and "Could not override 'train.lrr'" in typo.stderr, typo.stderr
    assert troubleshooting_quotes("Could not override 'train.lrr'")
    # `dvc repro` runs check_params first, which refuses the file (tests/test_params_guard.py); `-s`
    # (--single-item) skips it, and DVC deletes train's outputs before it checks train's params.
    params = work / "params.yaml"
    committed = params.read_text()
    kept = {
        name: (work / name).read_bytes() for name in ("models/model.npz", "models/trace.npz", "metrics/history.tsv")
    }
    recover = "git checkout -- metrics && dvc checkout"
    assert troubleshooting_quotes(recover)
    for first_plain_repro, message in (
        (False, "Parameters 'train.lr' are missing from 'params.yaml'"),
        (True, "Parameters 'train.lr' are missing from 'params.yaml'"),
    ):
        params.write_text(committed.replace("  lr: 0.1 ", "  lrr: 0.1 "))
        if first_plain_repro:  # the check failed first; its stamp persists (it once went, and -s said so)
            assert "train.lrr: unknown key" in dvc(work, "repro", check=False).stderr
        missing = dvc(work, "repro", "-s", "train", check=False)
        assert missing.returncode != 0 and message in missing.stderr, missing.stderr
        assert troubleshooting_quotes(message)
        assert not (work / "models/model.npz").exists()
        # The troubleshooting table's fix: the key, then the one command that brings every output back.
        params.write_text(committed)
        run(["git", "checkout", "--", "metrics"], cwd=work)
        dvc(work, "checkout")
        assert {name: (work / name).read_bytes() for name in kept} == kept
        assert "Data and pipelines are up to date." in dvc(work, "status").stdout


@pytest.mark.parametrize(
    "remote, args, found",
    [
        (None, [], "config file error: no remote specified in "),
        (None, ["-r", "nosuch"], "config file error: remote 'nosuch' doesn't exist"),
        ("local", [], "remote 'bad': {tmp}/a-file/store is not a directory it can write (Not a directory)"),
        ("s3", [], "remote 'bad': cannot reach its endpoint http://127.0.0.1:{port} (Connection refused)"),
    ],
    ids=["no-remote", "unknown-remote", "bad-local-path", "unreachable-s3"],
)
def test_push_run_cache_refuses_a_remote_it_cannot_use_in_one_line_at_once(repo, tmp_path, remote, args, found):
    """Where `dvc push --run-cache` says one line, the script printed DVC's traceback (170 lines after
    35 s for an S3 endpoint that is down: DVC retries it). Now one line on stderr, exit 2, in seconds."""
    work = clone(repo, tmp_path / "work")
    (tmp_path / "a-file").write_text("not a directory\n")
    port = free_port()  # nothing listens there
    if remote == "local":
        dvc(work, "remote", "add", "-d", "bad", str(tmp_path / "a-file/store"))
    elif remote == "s3":
        dvc(work, "remote", "add", "-d", "bad", "s3://bucket/path")
        dvc(work, "remote", "modify", "bad", "endpointurl", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    proc = run(
        [sys.executable, str(ROOT / "scripts/push-run-cache"), *args],
        cwd=work,
        check=False,
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
    )
    assert time.monotonic() - start < 15
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("push-run-cache: error: " + found.format(tmp=tmp_path, port=port)), lines[0]


def test_push_run_cache_to_a_full_remote_says_so_in_one_line(repo, tmp_path):
    """DVC logs an ERROR line per file it fails to send: 56 of them before the summary on a full disk."""
    work = clone_with_outputs(repo, tmp_path / "work")
    store = tmp_path / "full"
    store.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(store)]
    mounted = subprocess.run(mount, capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        dvc(work, "remote", "add", "-d", "full", str(store))
        proc = run([sys.executable, str(ROOT / "scripts/push-run-cache")], cwd=work, check=False)
    finally:
        subprocess.run(["umount", str(store)], check=True)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.fullmatch(
        r"push-run-cache: error: \d+ files failed to upload \(the first: No space left on device\)", lines[0]
    )
