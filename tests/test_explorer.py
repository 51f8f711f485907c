"""metrics/explorer.html in a real browser: Debian's Chromium, driven by Playwright, offline.

The page's JavaScript redoes the pipeline's arithmetic; every number it shows is compared with the
Python model's: the scores of every sample, the scores after clicking and dragging and typing, one
"learn" step against model.sgd_step, and each epoch's weights against models/trace.npz. The two should
agree to the last bit; the test allows 1e-12 and writes the largest difference it saw, with
screenshots, to test-artifacts/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.checkpoint import load_network
from pipeline.glyph_files import read_glyph
from pipeline.glyphs import PIXELS, clean_glyphs
from pipeline.model import Network, logits, sgd_step, sigmoid
from tests.conftest import ROOT, copy_project, edit_params, run_module

ARTIFACTS = ROOT / "test-artifacts"
TOLERANCE = 1e-12
STAGES = ["make_dataset", "train", "explore"]
LARGEST: dict[str, float] = {}  # the largest JS-vs-Python difference seen, per comparison


def build(project: Path) -> Path:
    for stage in STAGES:
        proc = run_module(f"pipeline.{stage}", cwd=project)
        assert proc.returncode == 0, proc.stderr
    return project


@pytest.fixture(scope="module")
def default(built) -> Path:
    """The session's built project: every stage ran with the committed params."""
    return built


@pytest.fixture(scope="module", autouse=True)
def differences():
    """After the module: the largest difference of each comparison, in test-artifacts/."""
    yield
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "explorer-differences.json").write_text(json.dumps(LARGEST, indent=2) + "\n")


def open_page(browser, project: Path, name: str = "explorer.html"):
    """The page metrics/`name`, opened from disk; any console error, page error, dialog (an alert a
    crafted name ran) or network request fails the test."""
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog {d.type}: {d.message}"), d.dismiss()))
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("file:")
            else (problems.append(f"network: {route.request.url}"), route.abort())
        ),
    )
    page.goto((project / "metrics" / name).as_uri())
    page.wait_for_function("window.explorer !== undefined")
    return page, problems


def differ(name: str, got, want) -> float:
    """The largest |got - want|, recorded under `name`."""
    largest = float(np.max(np.abs(np.asarray(got, dtype=float) - np.asarray(want, dtype=float)), initial=0.0))
    LARGEST[name] = max(LARGEST.get(name, 0.0), largest)
    return largest


def shown_scores(page) -> list[float]:
    return [float(page.get_attribute(f'.score[data-letter="{c}"]', "data-value")) for c in "ABC"]


def python_scores(net: Network, glyph: np.ndarray) -> np.ndarray:
    return sigmoid(logits(net, glyph.reshape(1, 30)))[0]


def shown_pixels(page) -> np.ndarray:
    return np.array(
        [
            p == "true"
            for p in page.eval_on_selector_all(
                "#grid button", "cells => cells.map(c => c.getAttribute('aria-pressed'))"
            )
        ],
        dtype=np.uint8,
    )


def test_every_sample_reads_as_in_python(default, browser):
    page, problems = open_page(browser, default)
    net = load_network(default / "models/model.npz", PIXELS)
    samples = sorted((default / "data/samples").glob("*.txt"))
    for path in samples:
        page.click(f'button[data-load="{path.name}"]')
        glyph = read_glyph(path)
        assert np.array_equal(shown_pixels(page), glyph), path.name
        assert differ("sample scores", shown_scores(page), python_scores(net, glyph)) <= TOLERANCE, path.name
        letter = page.text_content("#letter")
        assert letter == "ABC"[int(np.argmax(python_scores(net, glyph)))], path.name
    page.click('button[data-load="b_shifted_left.txt"]')
    page.screenshot(path=str(ARTIFACTS / "explorer-read.png"), full_page=True)
    assert len(samples) >= 18 and problems == []


def test_clicks_drags_and_keys_change_the_glyph_and_the_scores_as_the_model_says(default, browser):
    page, problems = open_page(browser, default)
    net = load_network(default / "models/model.npz", PIXELS)
    page.click('button[data-load="clear"]')
    expected = np.zeros(30, np.uint8)
    cells = page.query_selector_all("#grid button")
    cells[7].click()  # one click flips one pixel
    expected[7] = 1
    box = [cells[i].bounding_box() for i in (12, 13, 14)]
    page.mouse.move(box[0]["x"] + 5, box[0]["y"] + 5)  # a drag paints every pixel it crosses
    page.mouse.down()
    for b in box[1:]:
        page.mouse.move(b["x"] + 5, b["y"] + 5, steps=4)
    page.mouse.up()
    expected[[12, 13, 14]] = 1
    cells[14].focus()  # keys: right, down, Space flips pixel 21
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Space")
    expected[21] = 1
    assert np.array_equal(shown_pixels(page), expected)
    assert differ("scores after drawing", shown_scores(page), python_scores(net, expected)) <= TOLERANCE
    page.click('button[data-load="invert"]')
    assert np.array_equal(shown_pixels(page), 1 - expected)
    assert differ("scores after drawing", shown_scores(page), python_scores(net, 1 - expected)) <= TOLERANCE
    assert problems == []


def learn(page, sample: str, letter: str) -> None:
    page.click(f'button[data-load="{sample}"]')
    page.check(f'input[name="truth"][value="{"ABC".index(letter)}"]')
    page.click("#learn")


def check_learn_step(project: Path, page, sample: str, letter: str) -> None:
    net = load_network(project / "models/model.npz", PIXELS)
    lr = float(json.loads(page.text_content("#data"))["lr"])
    glyph = read_glyph(project / "data/samples" / sample)
    learn(page, sample, letter)
    sgd_step(net, glyph.reshape(1, 30).astype(float), np.array(["ABC".index(letter)]), lr)
    shown = page.evaluate("explorer.weights()")
    for name in ("w1", "w2", "b1", "b2"):
        if getattr(net, name) is not None:
            assert differ("weights after one learn step", shown[name], getattr(net, name).ravel()) <= TOLERANCE, name
    assert differ("scores after one learn step", shown_scores(page), python_scores(net, glyph)) <= TOLERANCE
    after = float(page.get_attribute(".after-score", "data-value"))
    assert after == shown_scores(page)["ABC".index(letter)]


def test_one_learn_step_is_model_sgd_step_and_reset_restores_the_trained_model(default, browser):
    page, problems = open_page(browser, default)
    trained = page.evaluate("explorer.weights()")
    check_learn_step(default, page, "b_shifted_left.txt", "B")
    assert page.locator("#gradients .map").count() == 5
    page.screenshot(path=str(ARTIFACTS / "explorer-learn.png"), full_page=True)
    page.click("#reset")
    assert page.evaluate("explorer.weights()") == trained
    assert problems == []


def check_replay(project: Path, page) -> None:
    with np.load(project / "models/trace.npz") as trace:
        epochs, weights = trace["epoch"], {k: trace[k] for k in trace.files if k != "epoch"}
    history = (project / "metrics/history.tsv").read_text().splitlines()
    for i in sorted({0, 1, len(epochs) // 2, len(epochs) - 1}):
        set_epoch(page, i)
        shown = page.evaluate("explorer.weights()")
        for name, values in weights.items():
            assert differ("replayed epoch weights", shown[name], values[i].ravel()) <= TOLERANCE, (i, name)
        label = page.text_content("#epoch-label")
        if epochs[i]:
            loss = float(history[epochs[i]].split("\t")[1])
            assert label.startswith(f"{epochs[i]} of {len(history) - 1}: loss {loss:.4f}"), label
        else:
            assert label.startswith("0 of"), label


def set_epoch(page, index: int) -> None:
    """Move the slider as a drag does: its value, then an input event."""
    page.eval_on_selector(
        "#epoch", "(slider, i) => { slider.value = i; slider.dispatchEvent(new Event('input')); }", index
    )


def test_the_replay_slider_shows_each_epochs_weights(default, browser):
    page, problems = open_page(browser, default)
    assert "replay" in json.loads(page.text_content("#data"))["trace"]  # rebuilt in the browser, step by step
    check_replay(default, page)
    set_epoch(page, 40)
    page.click('button[data-load="a_narrow_right.txt"]')
    page.screenshot(path=str(ARTIFACTS / "explorer-replay.png"), full_page=True)
    assert problems == []


def test_a_batched_biased_mse_run_keeps_its_weights_inline_and_still_agrees(tmp_path, browser):
    project = copy_project(tmp_path / "project")
    edit_params(project, "dataset", train_per_class=40)
    edit_params(project, "train", batch_size=8, shuffle=True, bias=True, loss="mse", epochs=30, lr=0.5)
    build(project)
    page, problems = open_page(browser, project)
    assert "weights" in json.loads(page.text_content("#data"))["trace"]
    check_replay(project, page)
    set_epoch(page, 30)
    check_learn_step(project, page, "c_round.txt", "C")
    assert problems == []


def test_the_page_is_small_and_self_contained(default):
    page = (default / "metrics/explorer.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert len(page.encode()) < 100_000
    data = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert data["glyphs"] == ["".join(map(str, g)) for g in clean_glyphs().tolist()]
