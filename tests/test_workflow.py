"""The GitHub Actions workflow runs what .ci/run runs: the README's install, the tests, check-reproducible."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT


def test_the_workflow_installs_as_the_readme_says_and_runs_the_tests_and_the_reproducibility_check():
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    assert set(workflow[True]) == {"push", "pull_request"}  # PyYAML reads the key `on` as True
    steps = workflow["jobs"]["test"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the diff against the base needs its history
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11" and python["with"]["cache"] == "pip"

    runs = [s.get("run", "") for s in steps]
    readme_test = next(
        line
        for line in re.findall(r"^```\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.M | re.S)
        if line.endswith("&& python -m pytest")
    )
    install = readme_test.removesuffix(" && python -m pytest")
    order = [
        next(i for i, run in enumerate(runs) if needle in run)
        for needle in (install, "python -m pytest", "scripts/check-reproducible", "$GITHUB_STEP_SUMMARY")
    ]
    assert order == sorted(order), order
    summary = runs[order[-1]]
    assert 'dvc metrics diff --md "$BASE"' in summary and 'dvc params diff --md "$BASE"' in summary
