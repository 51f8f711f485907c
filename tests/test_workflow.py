"""The GitHub Actions workflow does what .ci/run does: the README's install, the tests, the linter and
formatter, the reproducibility checks; then it reports how the change moves the metrics and params."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT


def test_the_workflow_runs_what_ci_runs_in_the_same_order_then_the_diffs():
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    readme_test = next(
        line
        for line in re.findall(r"^```\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.M | re.S)
        if line.endswith("&& python -m pytest")
    )
    install = readme_test.removesuffix(" && python -m pytest")
    ci = (ROOT / ".ci/run").read_text()
    commands = [install, "python -m pytest", "ruff check .", "ruff format --check .", "scripts/check-reproducible"]
    commands += ["scripts/check-numpy-versions", "scripts/check-aarch64-engine"]
    assert [ci.index(command) for command in commands] == sorted(ci.index(command) for command in commands)
    order = [next(i for i, run in enumerate(runs) if command in run) for command in [*commands, "$GITHUB_STEP_SUMMARY"]]
    assert order == sorted(order), order
    summary = runs[order[-1]]
    assert 'dvc metrics diff --md "$BASE"' in summary and 'dvc params diff --md "$BASE"' in summary
