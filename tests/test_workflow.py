"""The GitHub Actions workflow does what .ci/run does: the README's install, the tests, the linter and
formatter, the reproducibility checks; then it reports how the change moves the metrics and params."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests import docs
from tests.conftest import ROOT, copy_of, git_commit, run


def test_the_workflow_runs_what_ci_runs_in_the_same_order_then_the_diffs():
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    readme_test = docs.block("test")
    install = readme_test.removesuffix(" && python -m pytest")
    ci = (ROOT / ".ci/run").read_text()
    commands = [
        install,
        "python -m pytest",
        "python -m pytest -m slow",
        "ruff check .",
        "ruff format --check .",
        "scripts/check-reproducible",
    ]
    commands += ["scripts/check-numpy-versions", "scripts/check-aarch64-engine"]
    # .ci/run starts the aarch64 check (one emulated core) once the default suite has passed, beside the rest.
    in_ci = [command for command in commands if command != "scripts/check-aarch64-engine"]
    assert [ci.index(command) for command in in_ci] == sorted(ci.index(command) for command in in_ci)
    assert ci.index("python -m pytest") < ci.index("scripts/check-aarch64-engine")
    order = [next(i for i, run in enumerate(runs) if command in run) for command in [*commands, "$GITHUB_STEP_SUMMARY"]]
    assert order == sorted(order), order
    summary = runs[order[-1]]
    assert 'dvc metrics diff --md "$BASE"' in summary and 'dvc params diff --md "$BASE"' in summary


def check_reproducible(repo: Path) -> subprocess.CompletedProcess:
    return run(["bash", "scripts/check-reproducible"], cwd=repo, check=False)


@pytest.mark.parametrize("name", ["data/samples/z_new.txt", "pipeline/scratch.py", "metrics/notes.txt"])
def test_check_reproducible_refuses_untracked_files_in_what_feeds_the_pipeline(dvc_repo, tmp_path, name):
    repo = copy_of(dvc_repo, tmp_path / "repo")
    lock = (repo / "dvc.lock").read_bytes()
    shutil.copy2(repo / "data/samples/b.txt", repo / name)
    proc = check_reproducible(repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "untracked" in lines[0] and name in lines[0], proc.stderr
    assert "Running stage" not in proc.stdout, "it ran the pipeline before refusing"
    assert (repo / "dvc.lock").read_bytes() == lock


def test_check_reproducible_fails_on_a_new_file_in_metrics_that_git_does_not_hold(dvc_repo, tmp_path):
    """A stage's output that nobody committed: dvc repro writes it anew, and git diff alone cannot see it."""
    repo = copy_of(dvc_repo, tmp_path / "repo")
    run(["git", "rm", "-q", "--cached", "metrics/images/samples.png"], cwd=repo)
    (repo / "metrics/images/samples.png").unlink()
    git_commit(repo, "forgot samples.png")
    proc = check_reproducible(repo)
    assert (repo / "metrics/images/samples.png").is_file(), proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "metrics/images/samples.png" in proc.stderr and "git does not hold" in proc.stderr, proc.stderr


def test_every_action_the_workflow_uses_is_pinned_by_commit_with_its_tag_beside_it():
    """A tag can be moved to other code; a commit cannot. The comment says which release the commit is."""
    text = (ROOT / ".github/workflows/ci.yml").read_text()
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", text, flags=re.M)
    assert {action.split("@")[0] for action, _ in uses} >= {"actions/checkout", "actions/setup-python"}
    for action, rest in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), f"{action} is not pinned by a full commit SHA"
        assert re.match(r"\s+# v\d+", rest), f"{action}: no `# vN...` comment naming its tag"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# What writes the output bytes, dvc.lock and the plots page (constraints.txt says which does what).
SHAPES_THE_BYTES = [
    "numpy",
    "numba",
    "llvmlite",
    "pillow",
    "ruamel.yaml",
    "pyyaml",
    "dvc",
    "dvc-data",
    "dvc-objects",
    "funcy",
    "scmrepo",
    "dulwich",
    "pygit2",
    "gitpython",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "dvc-render",
    "dpath",
    "vl-convert-python",
    "ruff",
]


def test_constraints_pin_what_shapes_dvc_lock_and_the_plots_page_at_the_installed_versions():
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    for line in lines:
        # ../shared/tools/arm64-python and scripts/check-numpy-versions take a pin line whole
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", line), f"not a bare pin: {line!r}"
    pins = dict(line.split("==") for line in lines)
    pins = {normalized(name): version for name, version in pins.items()}
    assert len(pins) == len(lines), "a package pinned twice"
    for name in SHAPES_THE_BYTES:
        assert normalized(name) in pins, f"constraints.txt does not pin {name}"
        assert metadata.version(name) == pins[normalized(name)], f"{name}: installed is not the pinned version"
