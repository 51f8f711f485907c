"""Shared helpers and fixtures: copies of the project, built once per session and copied where a test
changes them, and running its modules and DVC as a user would."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def tracked_files() -> list[str]:
    """The files git tracks (what a clean clone has), plus new files not yet ignored."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


def env() -> dict[str, str]:
    """The environment for child processes: this interpreter's bin first, so `python` and `dvc` are ours."""
    return {
        **os.environ,
        "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
        "DVC_NO_ANALYTICS": "1",
        "PYTHONHASHSEED": "0",
    }


def run(args: list[str], cwd: Path, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, cwd=cwd, env=env() | extra_env, capture_output=True, text=True, timeout=600, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_module(module: str, *args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", module, *args], cwd=cwd, check=check)


def copy_project(dest: Path, skip: Callable[[str], bool] = lambda name: False) -> Path:
    """Copy the project's tracked files (no data, no model) to `dest`, as a clean clone has them."""
    for name in filter(lambda name: not skip(name), tracked_files()):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def dvc(
    cwd: Path, *args: str, check: bool = True, extra_env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run dvc in `cwd`; a hang (DVC's experiment queue has hung once in a while) fails after `timeout` s."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env() | (extra_env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def git_commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, "--allow-empty"], cwd=repo)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line a bad input must get: no traceback, nothing else on stderr."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, status: int = 2) -> None:
    assert proc.returncode == status, proc.stderr
    line = one_error_line(proc)
    for fragment in fragments:
        assert fragment in line, line


def edit_params(project: Path, section: str, **values) -> None:
    path = project / "params.yaml"
    doc = yaml.safe_load(path.read_text())
    doc[section].update(values)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


STAGES = ["check_params", "make_dataset", "train", "evaluate", "predict", "explore"]


def run_stages(project: Path, stages: list[str] = STAGES) -> None:
    for stage in stages:
        proc = run_module(f"pipeline.{stage}", cwd=project)
        assert proc.returncode == 0, proc.stderr


def copy_of(source: Path, dest: Path) -> Path:
    """A full copy of a built project or repository (its .git and DVC cache too), for a test that changes it."""
    return Path(shutil.copytree(source, dest, symlinks=True))


def clone(repo: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(repo), str(dest)], cwd=repo.parent)
    return dest


def clone_with_outputs(repo: Path, dest: Path) -> Path:
    """A clone whose outputs come from `repo`'s DVC cache (copied): what `dvc repro` would write, sooner."""
    work = clone(repo, dest)
    shutil.copytree(repo / ".dvc/cache", work / ".dvc/cache")
    dvc(work, "checkout")
    return work


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's tracked files (no data, no model), as a clean clone has them."""
    return copy_project(tmp_path / "project")


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """The project after every stage ran once with the committed params, as `python -m` runs them.
    Shared by the whole session: read it, or take a copy_of it to change it."""
    project = copy_project(tmp_path_factory.mktemp("built") / "project")
    run_stages(project)
    return project


@pytest.fixture(scope="session")
def dvc_repo(tmp_path_factory) -> Path:
    """A git repository of the tracked files, without dvc.lock or metrics/, after its first `dvc repro`
    (whose output is in first-repro.log) and a commit of the results. Shared: clone it, or copy_of it."""
    project = copy_project(
        tmp_path_factory.mktemp("dvc") / "project", skip=lambda name: name == "dvc.lock" or name.startswith("metrics/")
    )
    run(["git", "init", "-q", "-b", "main"], cwd=project)
    git_commit(project, "the project")
    (project / ".git" / "first-repro.log").write_text(dvc(project, "repro").stdout)
    git_commit(project, "its results")
    return project


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless and offline, driven by Playwright: one for a test process, each test's pages
    in a context of their own (`new_page`)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium not found: `.ci/run` installs Debian's chromium (or: apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--proxy-server=127.0.0.1:9",
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ],
        )
        yield browser
        browser.close()


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
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client(
                    "s3",
                    endpoint_url=url,
                    **{k.lower(): v for k, v in creds.items() if k != "AWS_DEFAULT_REGION"},
                    region_name="us-east-1",
                ).create_bucket(Bucket="abc")
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url, creds
    finally:
        server.terminate()
        server.wait(timeout=10)
