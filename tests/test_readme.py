"""The README's two commands are the ones CI runs, and its tour's claims hold."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [
        line for line in re.findall(r"^```\n(.*?)\n```", text, flags=re.M | re.S) if line.startswith("python3 -m venv")
    ]


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    install, tests = readme_commands()
    assert install.endswith("&& dvc repro")
    assert tests.endswith("&& python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_every_stage_in_the_readme_exists_in_dvc_yaml():
    text = (ROOT / "dvc.yaml").read_text()
    for stage in ("make_dataset", "train", "evaluate", "predict", "explore"):
        assert f"  {stage}:\n    cmd: python -m pipeline.{stage}\n" in text
