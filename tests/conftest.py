"""Shared helpers: a throw-away copy of the project, and running its modules as a user would."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def tracked_files() -> list[str]:
    """The files git tracks (what a clean clone has), plus new files not yet ignored."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


def env() -> dict[str, str]:
    """The environment for child processes: this interpreter's bin first, so `python` and `dvc` are ours."""
    return {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1", "PYTHONHASHSEED": "0"}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's tracked files (no data, no model), as a clean clone has them."""
    return copy_project(tmp_path / "project")
