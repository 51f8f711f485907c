"""Files from elsewhere are hostile: a model file, a sample's name or a special file never runs code in a
reader's browser, hangs a stage, or reaches a page or a terminal as anything but plain text.

A model's class names and a sample's file name are refused at the loader unless they are what training
and the project write (one line, exit 2, nothing written). The explorer page is safe even without the
loader: it puts every string into the DOM as text and escapes `<`, `>` and `&` in its data, which the
browser tests check by rendering a page with hostile names directly. A FIFO or a device is refused
before it is opened, and every test that could hang has a timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import explore, glyph_files, paths
from pipeline.artifacts import load_history, load_split
from pipeline.checkpoint import load_network
from pipeline.errors import PipelineError
from pipeline.glyphs import PIXELS
from pipeline.params import load_params
from tests.conftest import copy_of, dvc, env, one_error_line
from tests.test_bad_input import snapshot
from tests.test_explorer import open_page
from tests.test_offline_plots import vega_ids

# Class names that would run code, or break a page, if written as markup or into a script unescaped.
HOSTILE_CLASSES = {
    "img-onerror": ("<img src=x onerror=alert(1)>", "B", "C"),
    "end-script": ("A", "B</script><script>alert(2)</script>", "C"),
    "comment-script": ("<!--<script>", "B", "C"),
    "quotes-and-amp": ('A" onmouseover="alert(3)', "B'&amp;", "C&lt;script&gt;"),
}
# Sample file names of the same kind, and names that would fake or garble a terminal's lines.
HOSTILE_SAMPLES = [
    "<!--<script>.txt",
    "<img src=x onerror=alert(4)>.txt",
    "<script>alert(5)<!--.txt",
    '" onclick="alert(6).txt',
    "it's.txt",
    "a&amp;b.txt",
    "two\nlines.txt",
    "\x1b[31mred.txt",
    "tab\there.txt",
    " space.txt",
    "\u202etxt.exe.txt",  # right-to-left override: shows as a different name
]
TIMEOUT = 30  # seconds: a stage that blocks on a FIFO fails the test instead of hanging the suite


def run_python(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m ...` in `cwd` with a timeout: a regression that hangs fails."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    proc.seconds = time.monotonic() - start
    return proc


@pytest.fixture
def copy(built, tmp_path) -> Path:
    return copy_of(built, tmp_path / "copy")


def hostile_model(source: Path, dest: Path, classes) -> Path:
    """`source`'s model with its class names replaced by `classes` (arrays as np.savez writes them)."""
    with np.load(source) as model:
        arrays = dict(model)
    np.savez(dest, **arrays | {"classes": np.array(classes)})
    return dest


# --- the model file: class names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "case, stage",
    [(case, "predict") for case in sorted(HOSTILE_CLASSES)] + [("end-script", "evaluate"), ("img-onerror", "explore")],
)
def test_a_model_with_markup_in_its_class_names_is_refused_by_every_stage(copy, case, stage):
    hostile_model(copy / paths.MODEL, copy / paths.MODEL, HOSTILE_CLASSES[case])
    before = snapshot(copy)
    proc = run_python("-m", f"pipeline.{stage}", cwd=copy)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert line.startswith("error: models/model.npz: not a model file (expected class names of 1 to 16"), line
    assert line.endswith("; rerun `dvc repro train`"), line
    assert snapshot(copy) == before


@pytest.mark.parametrize("stage", ["evaluate", "predict", "explore"])
def test_a_model_wider_than_params_allow_is_refused_before_any_stage_sizes_work_by_it(copy, stage):
    with np.load(copy / paths.MODEL) as model:
        arrays = dict(model)
    wide = np.zeros((30, 30_000))  # 7.2 MB: under the entry limit, 60 times the widest network params.yaml allows
    np.savez(
        copy / paths.MODEL, **arrays | {"w1": wide, "w2": np.zeros((30_000, 3)), "sizes": np.array([30, 30_000, 3])}
    )
    before = snapshot(copy)
    proc = run_python("-m", f"pipeline.{stage}", cwd=copy)
    line = one_error_line(proc)
    assert proc.returncode == 2 and proc.seconds < TIMEOUT, proc.stderr
    assert line.startswith("error: models/model.npz: not a model file (expected 1 to 512 hidden units"), line
    assert snapshot(copy) == before


def test_a_trace_longer_than_the_history_is_refused_and_the_page_kept(copy):
    history = (copy / paths.HISTORY).read_text().splitlines(keepends=True)
    (copy / paths.HISTORY).write_text("".join(history[:-10]))
    before = snapshot(copy)
    proc = run_python("-m", "pipeline.explore", cwd=copy)
    line = one_error_line(proc)
    assert proc.returncode == 2, proc.stderr
    assert line == (
        f"error: models/trace.npz: expected epochs up to {len(history) - 11}, metrics/history.tsv's last, found up to "
        f"{len(history) - 1}; rerun `dvc repro train`"
    ), line
    assert snapshot(copy) == before


@pytest.mark.parametrize(
    "classes, found",
    [
        (("A" * 100_000, "B", "C"), "found a name of 100000 characters"),
        (("A", "B", "C", "D"), "expected 3 class names, one per output, found 4"),
        (("A", "B"), "expected 3 class names, one per output, found 2"),
        (("A", "A", "C"), "found 'A' twice"),
        (("A", "B\nerror: fake", "C"), "found 'B\\nerror: fake'"),
        (("A", "", "C"), "found ''"),
        (np.array([b"A", b"B", b"C"]), "found bytes"),
    ],
    ids=["100000-characters", "4-names", "2-names", "twice", "newline", "empty", "bytes"],
)
def test_class_names_are_only_what_training_writes_and_a_huge_one_is_refused_at_once(built, tmp_path, classes, found):
    model = hostile_model(built / paths.MODEL, tmp_path / "model.npz", classes)
    proc = run_python("-m", "pipeline.predict", "--model", str(model), "data/samples/a.txt", cwd=built)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert line.startswith(f"error: {model}: not a model file ("), line
    assert found in line, line
    assert len(line) < 400, line
    assert proc.seconds < 10, f"took {proc.seconds:.1f} s"  # 64 s and 7 GB before


def test_a_model_whose_strings_are_huge_or_multiline_gets_a_short_single_line(built, tmp_path):
    with np.load(built / paths.MODEL) as model:
        arrays = dict(model)
    for key, value in {"loss": "bce\nerror: fake " + "x" * 10_000, "trained_on": "<script>" * 1000}.items():
        path = tmp_path / f"{key}.npz"
        np.savez(path, **arrays | {key: np.array(value)})
        proc = run_python("-m", "pipeline.predict", "--model", str(path), "data/samples/a.txt", cwd=built)
        assert proc.returncode == 2, proc.stderr
        line = one_error_line(proc)
        assert line.startswith(f"error: {path}: not a model file ("), line
        assert len(line) < 400, line


# --- sample file names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE_SAMPLES, ids=ascii)
def test_every_unsafe_sample_name_is_refused_in_one_printable_line(tmp_path, name):
    (tmp_path / "a.txt").write_bytes(b"")
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(PipelineError) as refused:
        glyph_files.sample_files(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path}/"), message
    assert "expected a file name of letters, digits, '.', '_' or '-'" in message, message
    assert message.isprintable(), ascii(message)


@pytest.mark.parametrize("name", ["<!--<script>.txt", "two\nlines.txt", "\x1b[31mred.txt"], ids=ascii)
@pytest.mark.parametrize("stage", ["predict", "explore"])
def test_a_sample_named_with_markup_or_control_characters_stops_the_stage(copy, name, stage):
    (copy / paths.SAMPLES / name).write_bytes((copy / paths.SAMPLES / "a.txt").read_bytes())
    before = snapshot(copy)
    proc = run_python("-m", f"pipeline.{stage}", cwd=copy)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)  # one line: a newline in the name is shown as \n
    assert line.startswith("error: data/samples/"), line
    assert "expected a file name of letters, digits, '.', '_' or '-'" in line, line
    assert line.isprintable(), ascii(line)
    assert snapshot(copy) == before


def test_every_committed_sample_name_is_in_the_safe_set(built):
    names = [p.name for p in glyph_files.sample_files(built / paths.SAMPLES)]
    assert len(names) >= 18


def test_an_adhoc_file_name_reaches_the_terminal_escaped(built, tmp_path):
    """predict FILE... prints the names it was given; a name cannot add a line or a terminal escape."""
    good = tmp_path / "two\nlines \x1b[31m.txt"
    good.write_bytes((built / "data/samples/a.txt").read_bytes())
    bad = tmp_path / "bad\nerror: fake.txt"
    bad.write_bytes(b"......\n" * 4)
    proc = run_python("-m", "pipeline.predict", str(good), str(bad), cwd=built)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.splitlines() == [f"{tmp_path}/two\\nlines \\x1b[31m.txt: A (0.96)"], proc.stdout
    assert one_error_line(proc).startswith(f"error: {tmp_path}/bad\\nerror: fake.txt: expected 5 rows")


# --- the explorer page, given hostile names directly (as if a loader let them through) ---------------


def hostile_page(project: Path, classes: tuple[str, ...], sample_names: list[str]) -> Path:
    """The explorer of `project` rendered with these class and sample names, bypassing the loaders."""
    with contextlib.chdir(project):
        params = load_params().train
        net = load_network(paths.MODEL, PIXELS)
        x_train, y_train = load_split("train")
        glyphs = [glyph_files.read_glyph(path) for path in glyph_files.sample_files()]
        samples = [(name, glyphs[i % len(glyphs)]) for i, name in enumerate(sample_names)]
        net = dataclasses.replace(net, classes=classes)
        history = load_history()
        trace = explore.load_trace(net, len(history["loss"]))
        data = explore.page_data(params, net, trace, history, x_train, y_train, samples)
        page = project / "metrics" / "hostile.html"
        page.write_text(explore.render_page(data), encoding="utf-8")
    return page


def test_the_page_template_never_writes_markup_from_strings():
    template = explore.TEMPLATE.read_text(encoding="utf-8")
    assert not re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(", template)


def test_the_pages_data_escapes_every_character_that_could_end_a_script():
    data = {"classes": ["</script><!--<script>", "a&b>c"], "x": 1.5}
    page = explore.render_page(data)
    payload = page.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    assert not set("<>&") & set(payload), payload
    assert json.loads(payload) == data


@pytest.mark.parametrize("case", sorted(HOSTILE_CLASSES))
def test_the_explorer_shows_hostile_names_as_text_and_runs_no_script(built, tmp_path, browser, case):
    project = copy_of(built, tmp_path / "copy")
    classes = HOSTILE_CLASSES[case]
    page_path = hostile_page(project, classes, [*HOSTILE_SAMPLES, "a.txt"])
    page, problems = open_page(browser, project, page_path.name)
    assert page.evaluate("typeof window.explorer") == "object"
    assert page.evaluate("document.querySelectorAll('script').length") == 2  # no script was added
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0
    loaders = page.eval_on_selector_all("#loaders button", "bs => bs.map(b => b.textContent)")
    assert loaders[: len(classes)] == [f"{c} (trained on)" for c in classes]
    assert loaders[len(classes) : -2] == [*HOSTILE_SAMPLES, "a.txt"]
    for k, c in enumerate(classes):
        page.click(f"#loaders button >> nth={k}")
        assert page.text_content("#letter") == c
        score = page.locator("#scores td.score").nth(k)
        assert score.get_attribute("data-letter") == c
        assert 0 < float(score.get_attribute("data-value")) < 1
    assert page.eval_on_selector_all("#scores tr td:first-child", "tds => tds.map(t => t.textContent)") == list(classes)
    assert page.eval_on_selector_all("#truth label", "ls => ls.map(l => l.textContent.trim())") == list(classes)
    for i in range(len(HOSTILE_SAMPLES)):  # each loads (an onclick in a name would fire here)
        page.locator(f"#loaders button >> nth={len(classes) + i}").click()
    page.check('input[name="truth"][value="1"]')
    page.click("#learn")
    assert classes[1] in page.text_content("#step-report")
    assert page.eval_on_selector_all(".w2 tr:first-child td", "tds => tds.map(t => t.textContent)")[1:] == list(classes)
    page.hover("#scores")  # an onmouseover in a class name would fire here
    assert problems == []  # no dialog, no console error, no request


# --- FIFOs and other files that are not regular files --------------------------------------------


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def test_a_fifo_among_the_samples_is_refused_not_waited_on(copy):
    fifo(copy / paths.SAMPLES / "f.txt")
    before = snapshot(copy)
    for stage in ("predict", "explore"):
        proc = run_python("-m", f"pipeline.{stage}", cwd=copy)
        assert proc.returncode == 2, proc.stderr
        assert one_error_line(proc) == "error: data/samples/f.txt: expected a glyph file, found a FIFO"
    assert snapshot(copy) == before


def test_predict_refuses_a_fifo_or_a_device_given_as_a_glyph_or_a_model(built, tmp_path):
    pipe = fifo(tmp_path / "some.fifo")
    glyph = run_python("-m", "pipeline.predict", str(pipe), "data/samples/a.txt", cwd=built)
    assert glyph.returncode == 2, glyph.stderr
    assert glyph.stderr == f"error: {pipe}: expected a glyph file, found a FIFO\n"
    assert glyph.stdout.startswith("data/samples/a.txt: A")
    for model, kind in ((pipe, "a FIFO"), (Path("/dev/zero"), "a character device")):
        proc = run_python("-m", "pipeline.predict", "--model", str(model), "data/samples/a.txt", cwd=built)
        assert proc.returncode == 2, proc.stderr
        assert one_error_line(proc) == f"error: {model}: expected a regular file, found {kind}; rerun `dvc repro train`"


@pytest.mark.parametrize(
    "name, stage",
    [
        ("data/x_train.npy", "train"),
        ("data/y_test.npy", "evaluate"),
        ("models/model.npz", "evaluate"),
        ("models/trace.npz", "explore"),
        ("metrics/history.tsv", "explore"),
    ],
)
def test_a_fifo_between_stages_is_refused_not_waited_on(copy, name, stage):
    fifo(copy / name)
    before = snapshot(copy)
    proc = run_python("-m", f"pipeline.{stage}", cwd=copy)
    assert proc.returncode == 2, proc.stderr
    producer = "make_dataset" if name.startswith("data/") else "train"
    assert one_error_line(proc) == f"error: {name}: expected a regular file, found a FIFO; rerun `dvc repro {producer}`"
    assert snapshot(copy) == before


def test_a_fifo_for_params_yaml_is_refused_not_waited_on(copy):
    fifo(copy / "params.yaml")
    proc = run_python("-m", "pipeline.train", cwd=copy)
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc) == "error: params.yaml: expected a regular file, found a FIFO"


def test_a_special_file_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    """Opening a FIFO blocks, and opening a device can act on it (a tape rewinds): look, don't open."""
    pipe = fifo(tmp_path / "f.txt")

    def no_open(*args, **kwargs):
        raise AssertionError(f"opened {args[0]}")

    monkeypatch.setattr(glyph_files, "open", no_open, raising=False)
    monkeypatch.setattr("builtins.open", no_open)
    with pytest.raises(PipelineError, match=r"f\.txt: expected a glyph file, found a FIFO"):
        glyph_files.read_glyph(pipe)
    from pipeline import artifacts, reading

    with pytest.raises(PipelineError, match="expected a regular file, found a FIFO"):
        reading.load_npz(pipe, "train", ("w1",), 1 << 20)
    with pytest.raises(PipelineError, match="expected a regular file, found a FIFO"):
        artifacts.load_history(pipe)


def test_the_dvc_plots_page_survives_a_hostile_model_and_a_hostile_sample(dvc_repo, tmp_path, browser):
    """DVC embeds predictions.json and confusion.json in its page unescaped: hostile names must never
    get there. The stages refuse them, the page keeps the last good data, and it works."""
    repo = copy_of(dvc_repo, tmp_path / "repo")
    (repo / paths.MODEL).unlink()  # it may share its bytes with the DVC cache
    hostile_model(dvc_repo / paths.MODEL, repo / paths.MODEL, HOSTILE_CLASSES["end-script"])
    (repo / paths.SAMPLES / "<!--<script>.txt").write_bytes((repo / paths.SAMPLES / "a.txt").read_bytes())
    stages = [run_python("-m", f"pipeline.{stage}", cwd=repo) for stage in ("evaluate", "predict")]
    out = tmp_path / "plots"
    dvc(repo, "plots", "show", "-o", str(out))
    index = out / "index.html"
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("dialog", lambda d: (problems.append(f"dialog {d.type}: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.goto(index.as_uri())
    ids = vega_ids(index)
    drawn = "ids => ids.every(id => document.querySelector(`#${id} canvas, #${id} svg`))"
    page.wait_for_function(drawn, arg=ids, timeout=20_000)
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert len(ids) >= 5 and len(images) >= 7 and all(images), (ids, images)
    assert problems == []
    for proc in stages:
        assert proc.returncode == 2, proc.stderr


@pytest.mark.parametrize("stage", ["predict", "explore"])
def test_a_sample_that_links_outside_the_project_is_refused_and_never_quoted(copy, tmp_path, stage):
    secret = tmp_path / "secret.txt"
    secret.write_text("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG\n")
    (copy / "data/samples/zz_link.txt").symlink_to(secret)
    (copy / "data/samples/zz_inside.txt").symlink_to(copy / "data/samples/a.txt")  # inside: a link like any file
    before = snapshot(copy)
    proc = run_python("-m", f"pipeline.{stage}", cwd=copy)
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc) == (
        "error: data/samples/zz_link.txt: a link to a file outside the project (not read); copy the glyph in instead"
    )
    assert "wJalr" not in proc.stdout + proc.stderr and snapshot(copy) == before
    (copy / "data/samples/zz_link.txt").unlink()
    assert run_python("-m", f"pipeline.{stage}", cwd=copy).returncode == 0


def test_a_refused_glyph_row_is_quoted_only_when_it_is_pixels(tmp_path):
    from pipeline.glyph_files import read_glyph

    for row, shown_row in (("AWS_SECRET=wJalrXUtnF", ""), ("..##", " '..##'")):
        path = tmp_path / "g.txt"
        path.write_text(row + "\n" + "......\n" * 4)
        with pytest.raises(PipelineError) as err:
            read_glyph(path)
        assert str(err.value).endswith(f"found {len(row)} characters{shown_row}"), str(err.value)
