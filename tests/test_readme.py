"""The README's two commands are the ones CI runs, and the docs' sessions print what they show."""

from __future__ import annotations

from tests import docs
from tests.conftest import ROOT, clone_with_outputs, run


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    install, tests = docs.block("install"), docs.block("test")
    assert install.startswith("python3 -m venv") and install.endswith("&& dvc repro")
    assert tests.startswith("python3 -m venv") and tests.endswith("&& python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_every_stage_in_the_readme_exists_in_dvc_yaml():
    text = (ROOT / "dvc.yaml").read_text()
    for stage in ("make_dataset", "train", "evaluate", "predict", "explore"):
        assert f"  {stage}:\n    cmd: python -m pipeline.{stage}\n" in text


# --- the sessions, run in order ------------------------------------------------------------------

GIT_USER = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
SESSIONS = ["show", "tour", "recipe"]  # in this order, in one clone: the recipe starts where the tour ends


def check_step(step: docs.Step, proc, clone) -> None:
    """What the docs show `step.command` printing, against what it printed."""
    printed = proc.stdout.splitlines() + proc.stderr.splitlines()
    assert proc.returncode == 0, f"{step.command}\n{proc.stdout}\n{proc.stderr}"
    if step.printed:
        assert docs.matches(step.printed, printed), (step.command, printed)
    if step.command.startswith("dvc plots show"):
        assert (clone / "dvc_plots/index.html").is_file()
    if step.command.startswith("dvc exp show"):
        assert max(map(len, printed)) <= 120, "an exp show table in the docs must fit 120 columns, piped too"


def test_the_docs_sessions_run_in_order_print_what_they_show(dvc_repo, tmp_path):
    """Every command of the sessions, in order, in one fresh clone, each checked against the lines shown
    under it: the committed model's reading of a sample, the tour, then the robust recipe (which must start
    from the committed params whatever the tour left)."""
    clone = clone_with_outputs(dvc_repo, tmp_path / "tour")
    for name in SESSIONS:
        steps = docs.session(name)
        assert steps, name
        for step in steps:
            check_step(step, run(["bash", "-c", step.command], cwd=clone, check=False, **GIT_USER), clone)
