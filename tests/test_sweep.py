"""Sweeps (pipeline/sweep.py): the sweep file refused in one line naming the key, the seeded draws, a sweep on a
LocalCluster with invalid and diverging trials among good ones, stopped halfway and resumed, and its results against
`dvc exp run -S` for the kept experiment and a sampled trial, byte for byte.

A real multi-process cluster, and a worker killed during a trial, are in tests/test_sweep_cluster.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from pipeline import paths, sweep
from pipeline.errors import exit_on_error
from pipeline.params import read_yaml
from tests.conftest import ROOT, assert_one_line_error, copy_of, copy_project, dvc, env


def sweep_file(grid: str, random: str = "", metric: str = "test.accuracy", keep: int = 0) -> str:
    """A sweep file: its head, the grid's lines, then those of its random section if any."""
    text = f"metric: {metric}\ngoal: max\nkeep: {keep}\ngrid:\n{grid}"
    return text + (f"random:\n{random}" if random else "")


GOOD = sweep_file(
    """\
  train.loss: [bce, mse]
""",
    """\
  count: 2
  seed: 0
  ranges:
    train.lr: {low: 0.1, high: 1.0, scale: log}
""",
)


def run_main(project: Path, *args: str, monkeypatch, capsys) -> SimpleNamespace:
    """`python -m pipeline.sweep ARGS` in this process (a subprocess costs a second of imports)."""
    with monkeypatch.context() as m:
        m.chdir(project)
        m.setattr(sys, "argv", ["python -m pipeline.sweep", *args])
        capsys.readouterr()
        status = exit_on_error(sweep.main)
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=status, stdout=out, stderr=err)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda t: t.replace("metric:", "metrik:"), "s.yaml: metrik: unknown key; allowed: metric, goal, keep"),
        (lambda t: t.replace("keep: 0\n", ""), "s.yaml: keep: missing"),
        (lambda t: t.replace("train.loss:", "train.lrr:"), "s.yaml: grid.train.lrr: unknown params key; allowed: "),
        (lambda t: t.replace("[bce, mse]", "bce"), "grid.train.loss: expected a non-empty list of values, found 'bce'"),
        (lambda t: t.replace("[bce, mse]", "[bce, bce]"), "grid.train.loss: expected distinct values"),
        (lambda t: t.replace("high: 1.0", "high: 0.01"), "random.ranges.train.lr.high: expected a number >= low"),
        (lambda t: t.replace("low: 0.1", "low: 0"), "train.lr.low: expected a number > 0 for a log scale"),
        (lambda t: t.replace("scale: log", "scale: cubic"), "random.ranges.train.lr.scale: expected linear or log"),
        (
            lambda t: t.replace("low: 0.1", "low: fast"),
            "random.ranges.train.lr.low: expected a number between -2^53 and 2^53, found 'fast'",
        ),
        (
            lambda t: t.replace("low: 0.1", "low: " + "9" * 400),
            "train.lr.low: expected a number between -2^53 and 2^53, found 999",
        ),
        (
            lambda t: t.replace("grid:\n  train.loss: [bce, mse]\n", "grid: {}\n"),
            "s.yaml: grid: expected at least one params key, found none",
        ),
        (lambda t: t.replace("train.lr: {", "train.loss: {"), "random.ranges.train.loss: also in grid"),
        (lambda t: t.replace("count: 2", "count: 0"), "random.count: expected an integer in [1, 5000], found 0"),
        (lambda t: t.replace("count: 2", "count: 5000"), "grid: expected at most 5000 trials in all, found 10000"),
        (lambda t: t.replace("test.accuracy", "test.acc"), "metric: expected a key of metrics/metrics.json ("),
        (lambda t: t.replace("goal: max", "goal: up"), "s.yaml: goal: expected max or min, found 'up' (str)"),
        (lambda t: t.replace("keep: 0", "keep: 5"), "s.yaml: keep: expected an integer in [0, 4], found 5"),
        (lambda t: t.replace("  seed: 0\n", ""), "s.yaml: random.seed: missing"),
        (lambda t: t.replace("[bce, mse]", "[bce, mse"), "s.yaml: line 6: invalid YAML: "),
        (
            lambda t: "random:\n  count: 1\n  seed: 0\n  ranges: {}\n" + t[: t.index("grid")],
            "random.ranges: expected at least one key",
        ),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_key_and_nothing_runs(edit, fragment, tmp_path, monkeypatch, capsys):
    (tmp_path / "s.yaml").write_text(edit(GOOD))
    proc = run_main(ROOT, str(tmp_path / "s.yaml"), monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(proc, fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--scheduler", "ftp://127.0.0.1:8786"],
            "--scheduler ftp://127.0.0.1:8786: expected tcp://HOST:PORT or tls://HOST:PORT, found the scheme ftp",
        ),
        (
            ["--scheduler", "tcp://127.0.0.1:99999"],
            "--scheduler tcp://127.0.0.1:99999: expected tcp://HOST:PORT or tls://HOST:PORT, found the port 99999",
        ),
        (
            ["--scheduler", "tcp://127.0.0.1"],
            "--scheduler tcp://127.0.0.1: expected tcp://HOST:PORT or tls://HOST:PORT, found no port",
        ),
        (
            ["--scheduler", "127.0.0.1:8786"],
            "--scheduler 127.0.0.1:8786: expected tcp://HOST:PORT or tls://HOST:PORT, found no scheme",
        ),
        (["--scheduler", "tcp://\x1b[2J:1"], "--scheduler tcp://\\x1b[2J:1: expected"),
        (["--workers", "100000"], "--workers: expected 1 to "),
        (["--workers", "0"], "--workers: expected 1 to "),
    ],
)
def test_a_bad_address_or_worker_count_is_one_line_and_nothing_runs(args, fragment, tmp_path, monkeypatch, capsys):
    project = copy_project(tmp_path / "p")
    (project / "sweeps/s.yaml").write_text(GOOD)
    proc = run_main(project, "sweeps/s.yaml", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(proc, fragment)
    assert not (project / paths.SWEEP_CACHE).exists() and not (project / "sweeps/s.tsv").exists()


def test_a_bad_sweep_file_through_the_real_entry_point(tmp_path):
    (tmp_path / "a b.yaml").write_text(GOOD)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.sweep", str(tmp_path / "a b.yaml")],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_line_error(proc, "a b.yaml: expected a file name of letters, digits, '_' or '-'", "found 'a b'")
    assert list(tmp_path.iterdir()) == [tmp_path / "a b.yaml"]


def test_a_missing_sweep_file_is_one_line(tmp_path, monkeypatch, capsys):
    assert_one_line_error(
        run_main(ROOT, str(tmp_path / "none.yaml"), monkeypatch=monkeypatch, capsys=capsys), "none.yaml: no such file"
    )


def test_every_draw_meets_every_grid_point_and_the_draws_are_seeded_and_within_range(tmp_path):
    (tmp_path / "d.yaml").write_text(
        GOOD.replace("count: 2", "count: 40").replace(
            "    train.lr:", "    train.epochs: {low: 30, high: 200, scale: linear}\n    train.lr:"
        )
    )
    spec = _in(ROOT, lambda: sweep.load_sweep(tmp_path / "d.yaml"))
    drawn = sweep.settings(spec)
    assert len(drawn) == 80 and [d["train.loss"] for d in drawn[:4]] == ["bce", "mse", "bce", "mse"]
    assert drawn[0]["train.lr"] == drawn[1]["train.lr"] and drawn[0]["train.lr"] != drawn[2]["train.lr"]
    # The same stream, drawn independently: per draw, one uniform for epochs (linear), one for lr (log).
    u = np.random.default_rng(0).random(80).reshape(40, 2)
    epochs = [round(30 + a * 170) for a in u[:, 0]]
    lrs = [float(f"{0.1 * 10.0**b:.3g}") for b in u[:, 1]]
    assert [d["train.epochs"] for d in drawn[::2]] == epochs
    assert all(math.isclose(d["train.lr"], lr, rel_tol=1e-9) for d, lr in zip(drawn[::2], lrs))
    assert all(isinstance(d["train.epochs"], int) and 30 <= d["train.epochs"] <= 200 for d in drawn)
    assert sweep.settings(spec) == drawn  # seeded
    assert sweep.settings(dataclasses.replace(spec, seed=1)) != drawn


def _in(project: Path, f):
    """f() with `project` as the working directory."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        return f()
    finally:
        os.chdir(cwd)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_shows_done_failed_left_and_the_best_so_far(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    spec = SimpleNamespace(name="s", metric="test.accuracy", goal="max")
    started = time.monotonic() - 10  # 3 trials finished here in 10 s: 4 more take about 13 s
    tally = sweep.Tally(
        8, done=3, failed=1, reused=1, running=2, best=(0.95, 2), engine="engine NumPy", started=started
    )
    display = sweep.Display(spec, tally)
    display.bar.stream, display.bar.enabled = Terminal(), True
    display.tick()
    line = display.bar.stream.getvalue()
    assert line.startswith("\rsweep s [###############...............] 3 done, 2 running, 1 failed, 1 reused, 4 left")
    assert line.endswith("; best test.accuracy 0.95 (trial 2); engine NumPy; about 13 s left")
    monkeypatch.setenv("COLUMNS", "60")  # cut to the terminal's width: a wrapped line is not redrawn by "\r"
    display.tick()
    assert len(display.bar.stream.getvalue().split("\r")[-1].rstrip()) == 59


def tsv_rows(path: Path) -> list[dict[str, str]]:
    """sweeps/NAME.tsv as a row per trial, by column name."""
    lines = path.read_text().splitlines()
    return [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]


def metric_cell(row: dict[str, str], key: str) -> str:
    """The TSV's cell of metric `key`: train.loss, also a params key, is metrics/metrics.json:train.loss."""
    return row.get(f"{paths.METRICS}:{key}", row.get(key))


def sweep_cmd(project: Path, *args: str, **extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.sweep", *args],
        cwd=project,
        env=env() | extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> SimpleNamespace:
    out, err = proc.communicate(timeout=300)
    return SimpleNamespace(returncode=proc.returncode, stdout=out, stderr=err)


SLOW = sweep_file("  dataset.train_per_class: [20]\n  train.epochs: [30]\n  train.lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]\n")
# Trials of about a second (the NumPy engine), with lr -1 (invalid) and 1e300 (training diverges) among them.
STOPPED = SLOW.replace("0.5, 0.6]", "-1.0, 1.0e+300]\n  train.loss: [bce, mse]\n")


def test_a_sweep_stopped_halfway_reports_bad_trials_in_one_line_each_and_resumes_with_what_it_finished(tmp_path):
    project = copy_project(tmp_path / "p")
    (project / "sweeps/stopped.yaml").write_text(STOPPED)
    proc = sweep_cmd(project, "sweeps/stopped.yaml", "--workers", "2", PIPELINE_ENGINE="numpy")
    cache = project / paths.SWEEP_CACHE
    deadline = time.monotonic() + 120
    while len(list(cache.glob("*.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # as a batch system stops a job; Ctrl-C does the same
    stopped = finish(proc)
    done = len(list(cache.glob("*.json")))  # results of their params: the 2 invalid trials never ran
    assert stopped.returncode == 130, stopped.stderr
    assert 2 <= done < 10 and f"interrupted: {done + 2} of 12 trials done" in stopped.stderr, stopped.stderr

    again = finish(sweep_cmd(project, "sweeps/stopped.yaml", "--workers", "2", PIPELINE_ENGINE="numpy"))
    assert again.returncode == 0, again.stderr
    assert f"12 trials: {done} reused" in again.stdout and f"{10 - done} ran on a LocalCluster" in again.stdout
    errors = again.stderr.strip().splitlines()
    assert len(errors) == 4 and "Traceback" not in again.stderr, again.stderr
    for number in (9, 10, 11, 12):  # lr -1 with bce and mse, then lr 1e300
        line = next(e for e in errors if f"trial {number}:" in e)
        if number < 11:
            assert line.endswith(f"stopped.yaml: trial {number}: train.lr: expected a number > 0.0, found -1.0 (float)")
        else:
            assert line.startswith(f"error: sweeps/stopped.yaml: trial {number}: train: "), line
            assert line.endswith("try a smaller train.lr (now 1e+300)"), line

    tsv = (project / "sweeps/stopped.tsv").read_text()
    rows = tsv_rows(project / "sweeps/stopped.tsv")
    assert [r["status"] for r in rows] == ["ok"] * 8 + ["failed"] * 4
    assert sorted(int(r["rank"]) for r in rows[:8]) == list(range(1, 9))
    plot = json.loads((project / "sweeps/plots/stopped.json").read_text())
    labels = {"test.accuracy against train.lr", "test.accuracy against train.loss"}
    assert {p["key"] for p in plot} == labels and len(plot) == 16  # a panel for each key varied among the good
    assert {p["value"] for p in plot if p["key"].endswith("train.loss")} == {"bce", "mse"}  # a category's values
    assert {p["kind"] for p in plot} == {"category"}  # grid keys: lr's values are listed, not drawn from a range
    # Every trial's metrics are what the stages' functions give in this process: the workers' are the same bytes.
    spec = _in(project, lambda: sweep.load_sweep(Path("sweeps/stopped.yaml")))
    trials = _in(project, lambda: sweep.trials(spec, read_yaml(project / paths.PARAMS), ""))
    files = _in(project, sweep.code_files)
    for row, trial in zip(rows[:8:3], trials[:8:3]):
        here = json.loads(sweep.run_trial(trial.doc, files)["metrics"])
        assert row["test.accuracy"] == json.dumps(here["test"]["accuracy"]), row

    # Once more: every trial is known (same params, same code), so no cluster starts; the same results.
    last = finish(sweep_cmd(project, "sweeps/stopped.yaml"))
    assert last.returncode == 0 and "12 trials: 10 reused" in last.stdout and "0 ran" in last.stdout, last.stdout
    assert (project / "sweeps/stopped.tsv").read_text() == tsv


KEPT = sweep_file(
    """\
  train.dtype: [float32, float64]
  train.bias: [true, false]
  train.loss: [bce, mse]
  train.batch_size: [2]
  train.shuffle: [true]
  train.epochs: [60]
  train.lr: [0.7]
""",
    metric="moved.noisy",
    keep=1,
)


@pytest.mark.slow  # a Dask cluster of separate processes, then DVC experiments (about 20 s)
def test_the_kept_experiment_and_a_sampled_trial_equal_dvc_exp_run(dvc_repo, tmp_path):
    """The sweep runs its best as `dvc exp run --name` and checks the bytes itself; here a second, sampled
    trial runs through `dvc exp run -S` too, and `dvc exp show` reports the kept one's metric as the sweep did."""
    repo = copy_of(dvc_repo, tmp_path / "repo")
    (repo / "sweeps/kept.yaml").write_text(KEPT)
    proc = finish(sweep_cmd(repo, "sweeps/kept.yaml", "--workers", "2"))
    assert proc.returncode == 0, proc.stderr
    assert "kept kept-1 as DVC experiments" in proc.stdout, proc.stdout
    rows = tsv_rows(repo / "sweeps/kept.tsv")
    best = next(r for r in rows if r["rank"] == "1")
    assert best["experiment"] == "kept-1"
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    kept = next(e for e in exps if e.get("name") == "kept-1")
    metrics = kept["revs"][0]["data"]["metrics"]["metrics/metrics.json"]["data"]
    assert json.dumps(metrics["moved"]["noisy"]) == best["moved.noisy"]

    sampled = rows[int(np.random.default_rng(19).integers(len(rows)))]
    if sampled is best:
        sampled = rows[0] if best is not rows[0] else rows[1]
    args = [a for key in ("train.dtype", "train.bias", "train.loss") for a in ("-S", f"{key}={sampled[key]}")]
    dvc(
        repo,
        "exp",
        "run",
        *args,
        *["-S", "train.batch_size=2", "-S", "train.shuffle=true", "-S", "train.epochs=60", "-S", "train.lr=0.7"],
    )
    written = json.loads((repo / "metrics/metrics.json").read_text())
    for key, value in sweep.flat(written).items():
        assert metric_cell(sampled, key) == json.dumps(value), key
    # The bytes themselves: the trial's cached metrics.json text.
    texts = {json.loads(p.read_text())["metrics"] for p in (repo / paths.SWEEP_CACHE).glob("*.json")}
    assert (repo / "metrics/metrics.json").read_text() in texts


def test_local_workers_start_without_blas_variables_and_one_thread_each():
    importlib.import_module("distributed")
    with sweep.dask_client(None, 1) as client:
        seen = client.run(lambda: {k: os.environ.get(k) for k in sweep.NO_BLAS_ENV})
        assert list(client.nthreads().values()) == [1]
    assert list(seen.values()) == [{k: os.environ.get(k) for k in sweep.NO_BLAS_ENV}]


def test_the_docs_show_the_worked_sweep_and_its_committed_best_trials_which_this_code_reproduces(monkeypatch):
    """sweeps/robust.yaml is the docs' sweep file, the docs' table is written from sweeps/robust.tsv, and the
    best trial, computed here, is the committed row: the results in git are this code's."""
    from tests import docs

    assert yaml.safe_load(docs.block("sweep-file")) == yaml.safe_load((ROOT / "sweeps/robust.yaml").read_text())
    assert docs.region("robust-sweep") == docs.doc_figures.robust_sweep(ROOT)
    rows = sorted(tsv_rows(ROOT / "sweeps/robust.tsv"), key=lambda r: int(r["rank"]))
    monkeypatch.chdir(ROOT)
    spec = sweep.load_sweep(Path("sweeps/robust.yaml"))
    files = sweep.code_files()
    best = sweep.trials(spec, read_yaml(paths.PARAMS), sweep.code_hash(files))[int(rows[0]["trial"]) - 1]
    metrics = sweep.flat(json.loads(sweep.run_trial(best.doc, files)["metrics"]))
    assert rows[0]["code"] == sweep.code_hash(files), "sweeps/robust.tsv is older than the code: run the sweep again"
    assert all(metric_cell(rows[0], key) == json.dumps(value) for key, value in metrics.items())


def test_the_client_compiles_the_engine_once_when_the_sweeps_trials_together_pay_for_it(monkeypatch):
    from pipeline import compiled, native
    from pipeline.sweep import command

    asked = []
    monkeypatch.setattr(compiled, "compile_ahead", lambda dtypes: asked.extend(np.dtype(d).name for d in dtypes))
    monkeypatch.setattr(native, "is_ready", lambda dtype: False)
    monkeypatch.delenv("PIPELINE_ENGINE", raising=False)
    worked = sweep.trials(sweep.load_sweep(ROOT / "sweeps" / "robust.yaml"), read_yaml(ROOT / paths.PARAMS), "")
    command.make_engine_ready(worked)  # 48 trials of 6,003 glyphs: a minute of NumPy, a compile pays
    assert asked == ["float64"]
    command.make_engine_ready(worked[:2])  # two trials: a compile costs more than it saves
    assert asked == ["float64"]
    monkeypatch.setenv("PIPELINE_ENGINE", "numpy")  # a forced engine is the user's choice
    command.make_engine_ready(worked)
    assert asked == ["float64"]


def forged_results(good: str, code: str) -> list:
    """What a worker whose run_trial was replaced could send back, one per trial, and last a true result."""
    tree = json.loads(good)
    over = json.dumps(tree | {"test": tree["test"] | {"accuracy": 1.5}}, indent=2) + "\n"
    text = json.dumps(tree | {"test": tree["test"] | {"accuracy": "1.0"}}, indent=2) + "\n"
    extra = json.dumps(tree | {"note": "<script>alert(1)</script>"}, indent=2) + "\n"
    return [
        {"code": code, "metrics": over},  # a score out of range
        {"code": code, "metrics": "<script>alert(1)</script>\n\tsplit"},  # not JSON
        None,
        {"code": code},  # a key missing
        {"code": code, "metrics": text},  # a string where a number belongs
        {"code": code, "metrics": extra},  # a key evaluate does not write
        {"code": "0" * 16, "metrics": good},  # another code's result
        {"code": code, "metrics": good.replace("\n", "\r\n")},  # other bytes for the same numbers
        {"code": code, "error": "<script>x</script>\nfake\trow"},  # an error line, shown as one cell
        {"code": code, "metrics": good},
    ]


def test_what_a_worker_sends_back_is_checked_before_it_is_shown_ranked_written_or_cached(tmp_path, monkeypatch, capsys):
    project = copy_project(tmp_path / "p")
    (project / "sweeps/forged.yaml").write_text(sweep_file("  train.seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"))
    command = importlib.import_module("pipeline.sweep.command")
    got = {}

    def forged_run_all(todo, files, code, client, on_result, progress):
        last = next(trial for trial in todo if trial.number == 10)
        got["good"] = good = sweep.run_trial(last.doc, files)["metrics"]
        forged = forged_results(good, code)
        for trial in todo:  # trial n gets forged[n - 1]
            on_result(trial, forged[trial.number - 1], "tcp://127.0.0.1:9\n<b>")

    monkeypatch.setattr(command, "run_all", forged_run_all)
    monkeypatch.setattr(command, "dask_client", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(command, "wait_for_workers", lambda *a: None)
    ran = run_main(project, "sweeps/forged.yaml", monkeypatch=monkeypatch, capsys=capsys)
    assert ran.returncode == 0, ran.stderr
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 9, ran.stderr
    assert all("refused what tcp://127.0.0.1:9\\n<b> sent back: " in e for e in errors[:8]), errors
    for fragment in (
        "test.accuracy: expected a number in [0, 1], found 1.5",
        "text that is not JSON",
        "found nothing (null)",
        "test.accuracy: expected a number in [0, 1], found '1.0' (str)",
        "expected the metrics train.accuracy",
        "a worker runs other code (hash 0000000000000000",
        "expected the text evaluate writes",
    ):
        assert any(fragment in e for e in errors), (fragment, errors)
    assert f"best test.accuracy {json.loads(got['good'])['test']['accuracy']:g}: trial 10" in ran.stdout
    rows = tsv_rows(project / "sweeps/forged.tsv")
    assert [r["status"] for r in rows] == ["failed"] * 9 + ["ok"]  # ten rows: nothing split one
    text = (project / "sweeps/forged.tsv").read_text()
    assert "<" not in text and "\r" not in text and text.count("\n") == 11
    plot = json.loads((project / "sweeps/plots/forged.json").read_text())
    assert {row["trial"] for row in plot} <= {10}
    cached = sorted(p.read_text() for p in (project / paths.SWEEP_CACHE).glob("*.json"))
    assert len(cached) == 2 and any('"metrics"' in c for c in cached)  # the true result and the error line

    # A cached result is checked as it is read back: a forged file is said in one line and the trial runs again.
    spec = _in(project, lambda: sweep.load_sweep(Path("sweeps/forged.yaml")))
    trial = _in(
        project, lambda: sweep.trials(spec, read_yaml(project / paths.PARAMS), sweep.code_hash(sweep.code_files()))
    )[9]
    poisoned = project / paths.SWEEP_CACHE / f"{trial.key}.json"
    poisoned.write_text(json.dumps({"metrics": got["good"].replace("1.0", "1.5")}))
    again = run_main(project, "sweeps/forged.yaml", monkeypatch=monkeypatch, capsys=capsys)
    assert f"note: {paths.SWEEP_CACHE}/{trial.key}.json: not a result of trial 10 (" in again.stderr, again.stderr
    assert json.loads(poisoned.read_text()) == {"metrics": got["good"]}


# 700 bytes of YAML that stand for 10^9 values once expanded (each line's alias is ten of the line before).
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
)


@pytest.mark.parametrize("where", ["grid", "random.ranges", "params.yaml"])
def test_a_yaml_alias_bomb_is_one_line_under_a_memory_limit(where, tmp_path):
    import resource

    project = copy_project(tmp_path / "p")
    bomb = BOMB.replace("\n", "\n  ").rstrip() + "\n"
    if where == "params.yaml":
        (project / "params.yaml").write_text((project / "params.yaml").read_text() + "extra:\n  " + bomb)
        text, named = GOOD, "params.yaml: line "
    elif where == "grid":
        text, named = sweep_file("  " + bomb + "  train.lr: *a8\n"), "sweeps/bomb.yaml: line "
    else:
        ranges = "  count: 2\n  seed: 0\n  ranges:\n    " + bomb.replace("\n  ", "\n    ") + "    train.lr: *a8\n"
        text, named = sweep_file("  train.loss: [bce]\n", ranges), "sweeps/bomb.yaml: line "
    (project / "sweeps/bomb.yaml").write_text(text)
    limit = 1200 * 2**20

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.sweep", "sweeps/bomb.yaml"],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=cap,
    )
    assert_one_line_error(proc, f"error: {named}")
    assert "found the alias *a" in proc.stderr and time.monotonic() - start < 60


def test_params_yaml_edited_during_a_sweep_is_said_so_and_no_result_is_written(tmp_path, monkeypatch, capsys):
    """It was blamed on "another machine's arithmetic" when the kept experiment's metrics then differed."""
    project = copy_project(tmp_path / "p")
    (project / "sweeps/edited.yaml").write_text(sweep_file("  train.seed: [0, 1]\n", keep=1))
    command = importlib.import_module("pipeline.sweep.command")

    def editing_run_all(todo, files, code, client, on_result, progress):
        params = project / "params.yaml"
        params.write_text(params.read_text().replace("  lr: 0.1 ", "  lr: 0.3 ", 1))
        for trial in todo:
            on_result(trial, sweep.run_trial(trial.doc, files), "tcp://127.0.0.1:9")

    monkeypatch.setattr(command, "run_all", editing_run_all)
    monkeypatch.setattr(command, "dask_client", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(command, "wait_for_workers", lambda *a: None)
    ran = run_main(project, "sweeps/edited.yaml", monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(
        ran,
        "error: params.yaml: changed while the sweep edited ran (train.lr 0.1, now 0.3); nothing written. ",
        status=1,
    )
    assert not (project / "sweeps/edited.tsv").exists()


def test_a_failed_dvc_command_is_told_by_its_own_error_line_not_its_last_line():
    from pipeline.sweep.experiments import _reason

    dvc_out = "Reproducing experiment 'x'\nRunning stage 'train':\n"
    stage = "error: params.yaml: changed while train ran (train.lr 0.7, now 0.9); nothing written.\n"
    tail = "ERROR: failed to reproduce 'train': failed to run: python -m pipeline.train, exited with 1\n"
    assert _reason(subprocess.CompletedProcess([], 1, dvc_out, stage + tail)) == stage.strip()
    assert (
        _reason(subprocess.CompletedProcess([], 1, dvc_out, tail + "Having any troubles? Hit us up\n")) == tail.strip()
    )
    assert _reason(subprocess.CompletedProcess([], 1, dvc_out, "")) == "Running stage 'train':"


def test_on_a_terminal_the_sweep_draws_its_one_line_and_no_worker_draws_anything(tmp_path):
    """A new user's capture showed 30 lines broken by the workers' train bars over the sweep's line."""
    import pty

    project = copy_project(tmp_path / "p")
    (project / "sweeps/slow.yaml").write_text(SLOW.replace("0.3, 0.4, 0.5, 0.6]", "0.3, 0.4]"))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.sweep", "sweeps/slow.yaml", "--workers", "2"],
        cwd=project,
        env=env() | {"PIPELINE_ENGINE": "numpy", "COLUMNS": "120"},
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    captured = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the sweep ended
            break
        if not chunk:
            break
        captured += chunk
    proc.wait(timeout=300)
    os.close(leader)
    text = captured.decode()
    assert proc.returncode == 0, text
    draws = [piece for piece in re.split(r"[\r\n]+", text) if piece.strip()]
    bars = [piece for piece in draws if piece.startswith("sweep slow [")]
    assert bars and not any("train [" in piece for piece in draws), draws
    assert max(map(len, bars)) < 120  # no wider than the terminal (COLUMNS), so "\r" redraws the one line
    assert re.search(r"\d+ done, \d+ running, 0 failed, 0 reused, \d+ left", text), bars
    lines = [piece for piece in draws if not piece.startswith("sweep slow [")]  # after the line: the summary
    assert len(lines) == 3 and lines[0].startswith("sweep slow: 4 trials: 0 reused from .sweep-cache/"), draws
    assert lines[1] == "wrote sweeps/slow.tsv and sweeps/plots/slow.json"
    assert lines[2].startswith("best test.accuracy ") and ": trial " in lines[2], lines
