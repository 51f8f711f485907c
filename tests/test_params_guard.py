"""A bad params.yaml under real `dvc repro` and `dvc exp run`: refused in one line, and nothing deleted.

DVC removes a stage's outputs before it looks at the stage's params, so without the check_params
stage a misspelled key cost the model and its history, and a key no stage reads passed unseen.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.params import Watch, load_params
from tests.conftest import ROOT, copy_of, dvc, env, one_error_line, run

GUARD = "check_params"
STAMP = "data/params.ok"


@pytest.fixture(scope="module")
def repo(dvc_repo, tmp_path_factory) -> Path:
    """This module's copy of the session's repository, after its first `dvc repro`."""
    return copy_of(dvc_repo, tmp_path_factory.mktemp("guard") / "project")


@pytest.fixture
def clean(repo) -> Path:
    """The repository with its committed params.yaml (and every output in place: the tests check it)."""
    run(["git", "checkout", "--", "params.yaml"], cwd=repo)
    return repo


def outputs(repo: Path) -> dict[str, str]:
    """Every output of every stage but the stamp, and a digest of its bytes."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values()
    names = [
        next(iter(entry)) if isinstance(entry, dict) else entry
        for stage in stages
        for kind in ("outs", "metrics", "plots")
        for entry in stage.get(kind, [])
    ]
    assert {"models/model.npz", "models/trace.npz", "metrics/history.tsv"} <= set(names)
    return {name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in names if name != STAMP}


def test_check_params_is_first_and_every_stage_that_reads_params_depends_on_it():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert next(iter(stages)) == GUARD
    guard = stages[GUARD]
    assert guard["params"] == [{"params.yaml": None}], "the whole file, so any key, read or not, reruns it"
    assert guard["outs"] == [{STAMP: {"persist": True}}], "never restored from the run cache: the check always runs"
    for name, stage in stages.items():
        if name != GUARD and stage.get("params"):
            assert STAMP in stage["deps"], f"{name} reads params but DVC may run it before {GUARD}"


def edit(repo: Path, old: str, new: str) -> None:
    params = repo / "params.yaml"
    text = params.read_text()
    assert old in text, old
    params.write_text(text.replace(old, new, 1))


# (how params.yaml is broken, the DVC command, the project's one error line) -- each used to delete
# models/model.npz, models/trace.npz and metrics/history.tsv, or to pass as "up to date"/"successful"
BROKEN = {
    "misspelled-repro": (("  lr: 0.1 ", "  lrr: 0.1 "), ["repro"], "train.lrr: unknown key; allowed: hidden, lr,"),
    "misspelled-repro-train": (("  lr: 0.1 ", "  lrr: 0.1 "), ["repro", "train"], "train.lrr: unknown key"),
    "misspelled-repro-evaluate": (
        ("  per_class: ", "  per_klass: "),
        ["repro", "evaluate"],
        "evaluate.per_klass: unknown key",
    ),
    "misspelled-dataset-key": (("  noise: ", "  noize: "), ["repro"], "dataset.noize: unknown key"),
    "unread-key-repro": (("  lr: 0.1 ", "  momentum: 0.9\n  lr: 0.1 "), ["repro"], "train.momentum: unknown key"),
    "unknown-section": (("evaluate:\n", "extra:\n  x: 1\nevaluate:\n"), ["repro"], "unknown section 'extra'"),
    "bad-value-exp-run": ((), ["exp", "run", "-S", "train.hidden=0"], "train.hidden: expected an integer in [1, 512]"),
    "appended-key-exp-run": ((), ["exp", "run", "-S", "+train.newkey=1"], "train.newkey: unknown key"),
    "on-for-bias-exp-run": ((), ["exp", "run", "-S", "train.bias=on"], "train.bias: expected true or false"),
    "too-big-exp-run": (
        (),
        ["exp", "run", "-S", "dataset.train_per_class=1000000000"],
        "dataset.train_per_class: expected a run that needs at most 2 GiB of memory",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_bad_params_yaml_is_refused_before_any_output_is_removed(clean, case):
    change, command, message = BROKEN[case]
    before = outputs(clean)
    if change:
        edit(clean, *change)
    proc = dvc(clean, *command, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: params.yaml: ") and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"failed to reproduce '{GUARD}'" in proc.stderr, proc.stderr
    assert re.findall(r"Running stage '(\w+)'", proc.stdout) == [GUARD], proc.stdout
    assert outputs(clean) == before
    assert "nothing to commit" in run(["git", "status", "--", "metrics"], cwd=clean).stdout


def test_a_fixed_params_yaml_reruns_nothing_but_the_check(clean):
    edit(clean, "  lr: 0.1 ", "  lrr: 0.1 ")
    assert dvc(clean, "repro", check=False).returncode != 0
    edit(clean, "  lrr: 0.1 ", "  lr: 0.1 ")
    proc = dvc(clean, "repro")
    # The refused run deleted nothing, not even the check's stamp (it persists): nothing to run or restore.
    assert re.findall(r"Running stage '(\w+)'|Stage '(\w+)' is cached", proc.stdout) == [], proc.stdout
    assert "Data and pipelines are up to date." in dvc(clean, "status").stdout


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """The bin directory of a real Python with none of the project's packages: a new venv without them,
    the `python` that `.venv/bin/dvc repro` finds on the PATH when the environment is not active."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    return venv / "bin"


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


# Each edit reruns a stage, and used to let DVC delete its outputs before that stage's traceback
# (`No module named 'PIL'`, ten files of metrics/ gone after the module edit).
EDITS = {
    "params": lambda repo: edit(repo, "  lr: 0.1 ", "  lr: 0.5 "),
    "module": lambda repo: append(repo / "pipeline/evaluate.py", "# an edit\n"),
    "sample": lambda repo: append(repo / "data/samples/a.txt", "\n"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_a_python_without_the_packages_stops_dvc_in_one_line_before_anything_is_deleted(clean, bare_python, case):
    before = outputs(clean)
    EDITS[case](clean)
    path = {"PATH": f"{bare_python}{os.pathsep}/usr/bin{os.pathsep}/bin"}  # `python`: the bare one
    try:
        proc = dvc(clean, "repro", check=False, extra_env=path)
        assert proc.returncode != 0, proc.stdout + proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert errors[0].startswith(f"error: {bare_python / 'python'} has no module numpy, PIL"), errors[0]
        assert "`. .venv/bin/activate`" in errors[0]
        assert re.findall(r"Running stage '(\w+)'", proc.stdout) == [GUARD], proc.stdout
        assert outputs(clean) == before
        assert "nothing to commit" in run(["git", "status", "--", "metrics"], cwd=clean).stdout
        stage = run([str(bare_python / "python"), "-m", "pipeline.evaluate"], cwd=clean, check=False, **path)
        assert stage.returncode == 2 and one_error_line(stage) == errors[0]
    finally:
        run(["git", "checkout", "--", "pipeline", "data/samples"], cwd=clean)


def test_importing_the_package_without_the_packages_raises_import_error_where_they_are_used(bare_python):
    """A notebook or a Dask worker is not a stage: `import pipeline` never exits, and without Pillow only
    what draws fails, with Python's ImportError (here: a bare Python, and this one with PIL blocked)."""
    bare = run([str(bare_python / "python"), "-c", "import pipeline"], cwd=ROOT, check=False)
    assert bare.returncode == 0 and bare.stderr == "", bare.stderr
    probe = (
        "import sys\n"
        "sys.modules['PIL'] = None\n"  # `import PIL` now raises ImportError, as on a worker without Pillow
        "import pipeline.evaluate, pipeline.make_dataset, pipeline.train\n"
        "try:\n"
        "    import pipeline.pictures\n"
        "except ImportError as err:\n"
        "    print(type(err).__name__)\n"
    )
    proc = run([sys.executable, "-c", probe], cwd=ROOT, check=False)
    assert (proc.returncode, proc.stdout) == (0, "ModuleNotFoundError\n"), proc.stderr


@pytest.mark.slow
def test_the_environment_check_runs_even_when_the_run_cache_knows_the_params(clean, bare_python):
    """DVC's run cache restored the check's stamp for params it had seen, so the check never ran, and explore
    (which has no run cache) ran in the bare Python after DVC had deleted metrics/explorer.html."""
    edit(clean, "  lr: 0.1 ", "  lr: 0.5 ")
    dvc(clean, "repro")  # the run cache learns every stage at lr 0.5
    run(["git", "checkout", "--", "params.yaml"], cwd=clean)
    dvc(clean, "repro")
    before = outputs(clean)
    edit(clean, "  lr: 0.1 ", "  lr: 0.5 ")
    path = {"PATH": f"{bare_python}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    proc = dvc(clean, "repro", check=False, extra_env=path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith(f"error: {bare_python / 'python'} has no module numpy, PIL"), errors[0]
    assert re.findall(r"Running stage '(\w+)'", proc.stdout) == [GUARD], proc.stdout
    assert re.findall(r"Stage '(\w+)' is cached", proc.stdout) == [], proc.stdout
    assert outputs(clean) == before


def test_a_stage_whose_params_yaml_changes_under_it_writes_nothing(clean):
    """`dvc exp run -S` rewrites params.yaml before DVC takes its lock: a second one in the same workspace
    changes the params of the first one's running stage. The stage stops at the next epoch after it looks
    (`params.Watch`: twice a second), naming the key, and writes nothing; it does not train to its end."""
    edit(clean, "  epochs: 300 ", "  epochs: 10000 ")  # 30 million steps: half an hour with NumPy, so a
    edit(clean, "  train_per_class: 0 ", "  train_per_class: 1000 ")  # stage that trained on would time out
    run([sys.executable, "-m", "pipeline.make_dataset"], cwd=clean)
    before = outputs(clean)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train"],
        cwd=clean,
        env=env() | {"PIPELINE_ENGINE": "numpy"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr.readline().startswith("train: NumPy trains (about")  # it read params.yaml, and trains
        edit(clean, "  lr: 0.1 ", "  lr: 0.9 ")
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    line = one_error_line(subprocess.CompletedProcess(proc.args, 1, out, err))
    assert line.startswith("error: params.yaml: changed while train ran (train.lr 0.1, now 0.9); nothing written. "), (
        line
    )
    assert "`dvc exp run --queue` or `--temp`" in line
    assert outputs(clean) == before


def test_the_watch_looks_twice_a_second_and_stops_only_for_other_values(tmp_path):
    """params.Watch, on a clock of its own: nothing read before `every` has passed, a rewrite with the same
    values (an editor's save) passes, another value raises unchanged's error, naming the key."""
    path, now = tmp_path / "params.yaml", [0.0]
    path.write_text((ROOT / "params.yaml").read_text())
    watch = Watch(load_params(path), "train", path, every=0.5, clock=lambda: now[0])
    path.write_text(path.read_text().replace("  lr: 0.1 ", "  lr: 0.9 ", 1))
    now[0] = 0.4
    watch()  # too soon to look
    path.write_text((ROOT / "params.yaml").read_text() + "\n")  # the same values, another size
    now[0] = 0.6
    watch()
    path.write_text(path.read_text().replace("  lr: 0.1 ", "  lr: 0.95 ", 1))  # another size: a stamp that moves
    now[0] = 1.2
    with pytest.raises(PipelineError, match=r"changed while train ran \(train.lr 0.1, now 0.95\); nothing written"):
        watch()


def test_a_page_is_not_made_for_a_model_trained_with_other_params(clean):
    """A run that changed params.yaml between train and explore (or an edit without `dvc repro`): explore would
    teach with an lr the model was not trained with. dvc.lock records what train ran with, for this very model."""
    before = outputs(clean)
    edit(clean, "  lr: 0.1 ", "  lr: 0.7 ")
    proc = run([sys.executable, "-m", "pipeline.explore"], cwd=clean, check=False)
    assert proc.returncode == 1, proc.stderr
    assert one_error_line(proc).startswith(
        "error: models/model.npz: made by train with train.lr 0.1 (dvc.lock), but params.yaml says 0.7: "
        "run `dvc repro`."
    ), proc.stderr
    assert outputs(clean) == before


@pytest.mark.slow
def test_two_dvc_exp_runs_at_once_leave_no_stage_made_with_other_params(clean):
    """The case that lost both experiments and left dvc.lock with lr 0.7 for train and 0.9 for explore.

    The first run trains 3000 glyphs for 10000 epochs (NumPy: half an hour), so it is still training
    whenever the second one rewrites params.yaml (a run that trained on would time out); the second asks
    for the 3 glyphs. The second run's params.yaml, and the HEAD copy DVC's stash puts there for a moment,
    both first differ from the first run's at train_per_class, so the first's error is always the same."""
    common = {"cwd": clean, "env": env() | {"PIPELINE_ENGINE": "numpy"}, "text": True}
    long_run = ["-S", "dataset.train_per_class=1000", "-S", "train.lr=0.7", "-S", "train.epochs=10000"]
    first = subprocess.Popen(
        [sys.executable, "-m", "dvc", "exp", "run", *long_run],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **common,
    )
    try:
        seen = []
        for line in first.stdout:  # until its train stage runs
            seen.append(line)
            if line.startswith("Running stage 'train'"):
                break
        second = subprocess.run(
            [sys.executable, "-m", "dvc", "exp", "run", "-S", "dataset.train_per_class=0", "-S", "train.lr=0.9"],
            capture_output=True,
            timeout=300,
            check=False,
            **common,
        )
        rest, _ = first.communicate(timeout=120)
    finally:
        first.kill()
        first.wait()
    log = "".join(seen) + rest
    lock = yaml.safe_load((clean / "dvc.lock").read_text())["stages"]
    recorded = {name: lock[name]["params"]["params.yaml"].get("train.lr") for name in ("train", "explore")}
    # The second run either trains after the first stops, or finds a stage's files locked by the first.
    assert len(set(recorded.values())) == 1, (recorded, log, second.stdout + second.stderr)
    changed = "error: params.yaml: changed while train ran (dataset.train_per_class 1000, now 0)"
    assert first.returncode != 0 and changed in log, log
    run(["git", "checkout", "--", "params.yaml"], cwd=clean)
    dvc(clean, "checkout", "--force")
