"""The pipeline under real `dvc` commands, in a fresh git repository made from the tracked files."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import native
from tests.conftest import ROOT, STAGES, copy_of, dvc, git_commit, run


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


@pytest.fixture(scope="module")
def repo(dvc_repo, tmp_path_factory) -> Path:
    """This module's copy of the session's repository (its tests edit, commit and run experiments)."""
    return copy_of(dvc_repo, tmp_path_factory.mktemp("dvc-module") / "project")


def test_first_repro_runs_every_stage_and_reproduces_the_committed_lock(repo):
    assert ran((repo / ".git/first-repro.log").read_text()) == STAGES
    assert (repo / "dvc.lock").read_text() == (ROOT / "dvc.lock").read_text(), (
        "dvc.lock differs from the committed one: run `dvc repro` and commit dvc.lock and metrics/"
    )
    for path in sorted((ROOT / "metrics").rglob("*")):
        if path.is_file():
            assert (repo / path.relative_to(ROOT)).read_bytes() == path.read_bytes(), path


def test_stage_deps_are_exactly_the_modules_each_stage_imports(repo):
    """Editing a module reruns every stage that runs it and no other."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    probe = (
        "import runpy, sys, atexit\n"
        "atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith(('pipeline', 'matplotlib')))))\n"
        "sys.argv = [sys.argv[1]]\nrunpy.run_module(sys.argv[0], run_name='__main__')\n"
    )
    for name, stage in stages.items():
        module = stage["cmd"].split()[-1]
        # PIPELINE_ENGINE=numba: train's deps include the compiled engine, which auto skips for tiny runs
        out = run([sys.executable, "-c", probe, module], cwd=repo, PIPELINE_ENGINE="numba").stdout.strip()
        out = out.splitlines()[-1]
        loaded = set(ast.literal_eval(out))
        assert ("matplotlib" in loaded) == (name == "evaluate"), f"{name}: only evaluate draws with matplotlib"
        modules = {m for m in loaded if m.startswith("pipeline")} | {module}  # runpy runs the stage as __main__
        imported = {m.replace(".", "/") + ("/__init__.py" if m == "pipeline" else ".py") for m in modules}
        if "pipeline/native.py" in imported:  # the machine code it loads was built from the engine's sources
            imported |= {f"pipeline/{source}" for source in native.SOURCES}
        in_order = [d for d in stage["deps"] if d.startswith("pipeline/") and d.endswith(".py")]
        listed = set(in_order)
        if "pipeline" in stage["deps"]:  # check_params: the whole directory, every module it runs among them
            listed = {path.relative_to(repo).as_posix() for path in (repo / "pipeline").rglob("*.py")}
            assert imported <= listed, name
        else:
            assert listed == imported, name
            own = module.replace(".", "/") + ".py"  # read at a glance: the package, the stage, the rest sorted
            assert in_order == ["pipeline/__init__.py", own, *sorted(listed - {"pipeline/__init__.py", own})], name
    # The probe reran every stage: it must have rewritten the same bytes.
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout


def test_nothing_reruns_when_nothing_changed(repo):
    out = dvc(repo, "repro").stdout
    assert ran(out) == [] and "Data and pipelines are up to date." in out
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout


@pytest.mark.slow  # five runs of DVC through its run cache (about 15 s); the tour runs the same edit
def test_a_learning_rate_edit_reruns_exactly_the_downstream_stages(repo):
    git_commit(repo, "first repro")
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.1 ", "lr: 0.5 "))
    assert ran(dvc(repo, "repro").stdout) == ["check_params", "train", "evaluate", "predict", "explore"]

    params_diff = dvc(repo, "params", "diff", "--md").stdout
    assert re.search(r"\| params\.yaml\s*\|\s*train\.lr\s*\|\s*0\.1\s*\|\s*0\.5\s*\|", params_diff), params_diff
    metrics_diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    changed = metrics_diff["metrics/metrics.json"]
    assert changed["train.loss"]["new"] < changed["train.loss"]["old"]
    assert {"train.loss", "test.loss"} <= set(changed)

    run(["git", "checkout", "params.yaml"], cwd=repo)  # back to lr 0.1: the run cache restores train, ...
    out = dvc(repo, "repro").stdout
    # The check always runs (its stamp persists: never from the run cache, so its environment check runs too);
    # explore's plain `cache: false` out has no run cache either (1 s); the rest is restored.
    assert ran(out) == ["check_params", "explore"], out
    assert re.findall(r"Stage '(\w+)' is cached - skipping run", out) == ["train", "evaluate", "predict"]
    assert dvc(repo, "metrics", "diff", "--json").stdout.strip() in ("{}", "")
    params.write_text(params.read_text().replace("lr: 0.1 ", "lr: 0.5 "))
    assert ran(dvc(repo, "repro").stdout) == ["check_params", "explore"]  # and lr 0.5 again, from the run cache too
    git_commit(repo, "lr 0.5")


def test_plots_show_writes_a_page_with_every_plot(repo):
    dvc(repo, "plots", "show", "-o", "plots-out")
    page = (repo / "plots-out" / "index.html").read_text()
    titles = [
        "Training loss",
        "Training accuracy",
        "Test confusion",
        "Test accuracy against the share of flipped",
        "Sample glyphs: the letter read",
    ]
    for title in titles:
        assert page.count(title) == 1, title
    assert sorted(titles, key=page.index) == titles  # loss before accuracy
    for image in ("predictions", "misclassified", "moved", "hidden_weights", "curves", "confusion", "samples"):
        assert f"metrics_images_{image}.png" in page, image


def test_every_path_has_one_home_in_paths_py_and_dvc_yaml_agrees():
    """Renaming a file is an edit in pipeline/paths.py and one in dvc.yaml; this keeps the two in step."""
    from pipeline import paths

    named = {value.as_posix() for value in vars(paths).values() if isinstance(value, Path)}
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots", "deps"):
            declared |= {next(iter(e)) if isinstance(e, dict) else e for e in stage.get(kind, [])}
    files = {name for name in declared if name != "pipeline" and not name.startswith("pipeline/")}
    assert files <= named, f"in dvc.yaml, not in pipeline/paths.py: {sorted(files - named)}"
    not_stages = {
        "params.yaml",
        "dvc.yaml",
        "dvc.lock",
        ".dvc/plots/offline.html",
        "sweeps",
        "sweeps/plots",
        ".sweep-cache",
    }
    not_stages |= {".train-checkpoints"}
    assert named - files == not_stages, sorted(named - files)
    for module in sorted((ROOT / "pipeline").glob("*.py")):  # no other module spells a path out
        if module.name != "paths.py":
            assert not re.search(r'Path\("(data|models|metrics|params)', module.read_text()), module.name
