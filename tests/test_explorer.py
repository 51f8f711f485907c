"""metrics/explorer.html in a real browser: Debian's Chromium, driven by Playwright, offline.

The page's arithmetic is pipeline/portable.js (tests/test_portable_js.py checks it function by
function); here every number the page shows is compared with the Python model's, with exact equality:
the scores of every sample, the scores after clicking and dragging and typing, Learn steps against
model.sgd_step (all three scores before and after, the loss, every gradient), each epoch's weights
against models/trace.npz, for a float64 and a float32 model. And the page itself: it always says which
weights it shows, never drops taught steps without saying so, has a chart with axes and a slider on
its epochs, one clickable label per letter, and fits a 420 px window. Any console message of any level
fails a test. Screenshots go to test-artifacts/explorer-*.png: 1280 (a sample read), learn, replay,
replay-discarded (the notice after the slider discarded taught steps), 420-learn and 420-replay.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import explore
from pipeline.checkpoint import load_network
from pipeline.glyph_files import read_glyph
from pipeline.glyphs import PIXELS, clean_glyphs
from pipeline.model import LOSSES, Network, backward, logits, loss_value, sgd_step, sigmoid
from tests.conftest import ROOT, copy_project, edit_params, run_module

ARTIFACTS = ROOT / "test-artifacts"
STAGES = ["make_dataset", "train", "explore"]
WIDE, NARROW = 1280, 420  # a desktop window and a phone's


def build(project: Path) -> Path:
    for stage in STAGES:
        proc = run_module(f"pipeline.{stage}", cwd=project)
        assert proc.returncode == 0, proc.stderr
    return project


@pytest.fixture(scope="module")
def default(built) -> Path:
    """The session's built project: every stage ran with the committed params."""
    return built


@pytest.fixture(scope="module")
def float32(tmp_path_factory) -> Path:
    """A float32 model with biases and the mse loss, trained one glyph at a time: the page replays its
    training in float32."""
    project = copy_project(tmp_path_factory.mktemp("float32") / "project")
    edit_params(project, "train", dtype="float32", bias=True, loss="mse", epochs=120, lr=0.5)
    return build(project)


def open_page(browser, project: Path, name: str = "explorer.html", width: int = WIDE):
    """The page metrics/`name`, opened from disk; any console message (of any level), page error,
    dialog (an alert a crafted name ran) or network request fails the test."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
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


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"explorer-{name}.png"), full_page=True)


def values(page, selector: str) -> list[float]:
    """The exact numbers behind the shown ones: data-value holds JavaScript's shortest round-trip form."""
    return [float(v) for v in page.eval_on_selector_all(selector, "es => es.map(e => e.dataset.value)")]


def shown_scores(page) -> list[float]:
    return values(page, "#scores td.score")


def python_scores(net: Network, glyph: np.ndarray) -> list[float]:
    return sigmoid(logits(net, glyph.reshape(1, PIXELS)))[0].tolist()


def shown_pixels(page) -> np.ndarray:
    pressed = page.eval_on_selector_all("#grid button", "cells => cells.map(c => c.getAttribute('aria-pressed'))")
    return np.array([p == "true" for p in pressed], dtype=np.uint8)


def same_weights(shown: dict[str, list[float]], net: Network) -> bool:
    """Every weight equal, bit for bit (float equality; -0.0 and 0.0 are the same weight)."""
    arrays = {k: getattr(net, k) for k in ("w1", "w2", "b1", "b2") if getattr(net, k) is not None}
    return shown.keys() == arrays.keys() and all(shown[k] == arrays[k].ravel().tolist() for k in arrays)


def trace_network(project: Path, index: int) -> Network:
    """The network after the `index`th recorded epoch of models/trace.npz."""
    net = load_network(project / "models/model.npz", PIXELS)
    with np.load(project / "models/trace.npz") as trace:
        for name in ("w1", "w2", "b1", "b2"):
            if name in trace.files:
                setattr(net, name, trace[name][index].copy())
    return net


def status(page) -> str:
    return page.text_content("#model-status")


def check_samples(project: Path, page) -> None:
    net = load_network(project / "models/model.npz", PIXELS)
    samples = sorted((project / "data/samples").glob("*.txt"))
    for path in samples:
        page.click(f'button[data-load="{path.name}"]')
        glyph = read_glyph(path)
        assert np.array_equal(shown_pixels(page), glyph), path.name
        assert shown_scores(page) == python_scores(net, glyph), path.name
        assert page.text_content("#letter") == "ABC"[int(np.argmax(python_scores(net, glyph)))], path.name
    assert len(samples) >= 18


def test_every_sample_reads_as_in_python(default, browser):
    page, problems = open_page(browser, default)
    check_samples(default, page)
    assert status(page) == "the trained model, after epoch 300 of 300"
    page.click('button[data-load="b_shifted_left.txt"]')
    screenshot(page, str(WIDE))
    assert problems == []


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
    assert shown_scores(page) == python_scores(net, expected)
    page.click('button[data-load="invert"]')
    assert np.array_equal(shown_pixels(page), 1 - expected)
    assert shown_scores(page) == python_scores(net, 1 - expected)
    assert problems == []


def learn(page, letter: str) -> None:
    """Say the glyph on the grid is `letter` (by clicking its label) and press Learn."""
    page.click(f'#truth label:has(input[value="{"ABC".index(letter)}"])')
    page.click("#learn")


def check_learn_step(page, net: Network, glyph: np.ndarray, letter: str, lr: float) -> None:
    """Learn on the page and model.sgd_step on `net` (in place) give the same bits: the weights, all three
    scores before and after, the loss before and after, and every gradient shown."""
    X, y = glyph.reshape(1, PIXELS).astype(np.float64), np.array(["ABC".index(letter)])
    before, loss_before = python_scores(net, glyph), loss_value(net.loss, logits(net, X), y)
    grads = backward(net, X, y)
    learn(page, letter)
    sgd_step(net, X, y, lr)
    assert same_weights(page.evaluate("explorer.weights()"), net)
    assert shown_scores(page) == python_scores(net, glyph)
    assert values(page, "#step-report td.before") == before
    assert values(page, "#step-report td.after") == python_scores(net, glyph)
    assert values(page, "#step-report td.loss-before") == [loss_before]
    assert values(page, "#step-report td.loss-after") == [loss_value(net.loss, logits(net, X), y)]
    inked = np.flatnonzero(glyph)
    per_unit = grads["dW1"][inked[0]] if len(inked) else np.zeros(net.sizes[1])
    assert values(page, "#gradients .gradient-value") == per_unit.tolist()
    maps = np.array(values(page, "#gradients .map span")).reshape(net.sizes[1], PIXELS).T  # (30, H)
    assert maps.tolist() == grads["dW1"].tolist()
    assert (maps[glyph == 0] == 0).all() and (maps[inked] == per_unit).all()  # what the page says about dW1
    assert values(page, "#gradient-w2 td[data-value]") == grads["dW2"].ravel().tolist()


def test_a_learn_step_is_model_sgd_step_and_the_page_says_what_dw1_shows(default, browser):
    page, problems = open_page(browser, default)
    trained = page.evaluate("explorer.weights()")
    net = load_network(default / "models/model.npz", PIXELS)
    page.click('button[data-load="b_shifted_left.txt"]')
    check_learn_step(page, net, read_glyph(default / "data/samples/b_shifted_left.txt"), "B", 0.1)
    assert status(page) == "the trained model, after epoch 300 of 300, plus 1 taught step from there"
    report = page.text_content("#step-report")
    assert "every blank pixel (0) gets a gradient of exactly 0" in report
    assert page.locator("#gradients .map").count() == 5
    screenshot(page, "learn")
    page.click('button[data-load="b_shifted_left.txt"]')  # the same glyph: the report still describes it
    assert "Taught step 1" in page.text_content("#step-report")
    page.click('button[data-load="A"]')  # another glyph: the report would be stale, the taught step stays
    assert page.text_content("#step-report") == "" and page.locator("#gradients .map").count() == 0
    assert status(page).endswith("plus 1 taught step from there")
    page.click("#reset")
    assert page.evaluate("explorer.weights()") == trained
    assert status(page) == "the trained model, after epoch 300 of 300"
    assert "discarded the 1 taught step" in page.text_content("#notice")
    assert page.text_content("#step-report") == ""
    assert problems == []


def set_epoch(page, index: int) -> None:
    """Move the slider as a drag does: its value, then an input event."""
    page.eval_on_selector(
        "#epoch", "(slider, i) => { slider.value = i; slider.dispatchEvent(new Event('input')); }", index
    )


def test_replay_never_drops_taught_steps_silently_and_learn_teaches_the_weights_shown(default, browser):
    """The issue's case: six Learn presses on C, the slider to epoch 5 and back."""
    page, problems = open_page(browser, default)
    glyph = clean_glyphs()[2]
    page.click('button[data-load="C"]')
    net = load_network(default / "models/model.npz", PIXELS)
    for _ in range(6):
        check_learn_step(page, net, glyph, "C", 0.1)
    assert status(page) == "the trained model, after epoch 300 of 300, plus 6 taught steps from there"
    set_epoch(page, 5)
    assert status(page) == "the model after epoch 5 of 300"
    assert page.text_content("#notice").startswith("Moving to epoch 5 discarded the 6 taught steps")
    assert page.text_content("#step-report") == "" and page.locator("#gradients .map").count() == 0
    screenshot(page, "replay-discarded")
    net = trace_network(default, 5)
    assert same_weights(page.evaluate("explorer.weights()"), net)
    check_learn_step(page, net, glyph, "C", 0.1)  # Learn at epoch 5 teaches the epoch-5 weights
    assert status(page) == "the model after epoch 5 of 300, plus 1 taught step from there"
    assert page.text_content("#notice") == ""
    set_epoch(page, 300)
    assert status(page) == "the trained model, after epoch 300 of 300"
    assert "discarded the 1 taught step" in page.text_content("#notice")
    set_epoch(page, 0)
    assert status(page) == "the initial weights (epoch 0 of 300), before training"
    assert page.text_content("#notice") == ""  # nothing was taught: nothing to say
    assert problems == []


def check_replay(project: Path, page) -> None:
    with np.load(project / "models/trace.npz") as trace:
        epochs = trace["epoch"]
    history = (project / "metrics/history.tsv").read_text().splitlines()
    for i in sorted({0, 1, len(epochs) // 2, len(epochs) - 1}):
        set_epoch(page, i)
        assert same_weights(page.evaluate("explorer.weights()"), trace_network(project, i)), i
        label = page.text_content("#epoch-label")
        if epochs[i]:
            loss = float(history[epochs[i]].split("\t")[1])
            assert label.startswith(f"{epochs[i]} of {len(history) - 1}: loss {loss:.4f}"), label
        else:
            assert label.startswith("0 of"), label


def check_chart(page) -> None:
    """Two panels with labelled axes; no label inside a panel; the slider's thumb on the marked epoch."""
    panels = page.eval_on_selector_all("#chart rect", "rs => rs.map(r => r.getBoundingClientRect().toJSON())")
    assert len(panels) == 2
    texts = page.eval_on_selector_all(
        "#chart text", "ts => ts.map(t => [t.textContent, t.getBoundingClientRect().toJSON()])"
    )
    words = [t for t, _ in texts]
    assert {"loss", "accuracy", "epoch", "0", "0.5", "1", "100", "200", "300"} <= set(words), words
    for word, box in texts:
        for panel in panels:
            inside_x = box["right"] > panel["left"] + 1 and box["left"] < panel["right"] - 1
            inside_y = box["bottom"] > panel["top"] + 1 and box["top"] < panel["bottom"] - 1
            assert not (inside_x and inside_y), f"{word!r} is drawn over a panel"
    slider = page.locator("#epoch")
    top = int(slider.get_attribute("max"))
    for i in (0, top // 3, top):
        set_epoch(page, i)
        box, marker = slider.bounding_box(), page.locator("#marker").bounding_box()
        thumb = box["x"] + 8 + i / top * (box["width"] - 16)  # the thumb is 16 px wide (the page's CSS)
        assert abs(thumb - (marker["x"] + marker["width"] / 2)) <= 1, (i, thumb, marker)


def test_the_replay_slider_shows_each_epochs_weights_under_a_chart_with_axes(default, browser):
    page, problems = open_page(browser, default)
    assert "replay" in json.loads(page.text_content("#data"))["trace"]  # rebuilt in the browser, step by step
    check_replay(default, page)
    check_chart(page)
    set_epoch(page, 40)
    page.click('button[data-load="a_narrow_right.txt"]')
    assert shown_scores(page) == python_scores(
        trace_network(default, 40), read_glyph(default / "data/samples/a_narrow_right.txt")
    )
    screenshot(page, "replay")
    assert problems == []


def test_each_letter_is_one_clickable_label_apart_from_the_next(default, browser):
    page, problems = open_page(browser, default)
    labels = page.locator("#truth label")
    boxes = [labels.nth(k).bounding_box() for k in range(3)]
    for left, right in itertools.pairwise(boxes):
        assert right["x"] - (left["x"] + left["width"]) >= 4 or right["y"] >= left["y"] + left["height"]
    for k in (2, 1, 0):  # a click on the letter, at the label's right end, picks it
        box = boxes[k]
        page.mouse.click(box["x"] + box["width"] - 4, box["y"] + box["height"] / 2)
        assert page.eval_on_selector("#truth input:checked", "i => i.value") == str(k)
        assert page.text_content("#truth label:has(input:checked)").strip() == "ABC"[k]
    assert problems == []


def test_the_page_fits_a_420px_window(default, browser):
    page, problems = open_page(browser, default, width=NARROW)
    widths = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    scroll, client = page.evaluate(widths)
    assert scroll <= client == NARROW
    page.click('button[data-load="c_wide.txt"]')
    learn(page, "C")
    scroll, client = page.evaluate(widths)
    assert scroll <= client, "the report after Learn scrolls sideways"
    assert page.locator("#gradients .map").count() == 5
    screenshot(page, f"{NARROW}-learn")
    check_chart(page)
    set_epoch(page, 40)
    assert page.evaluate(widths)[0] <= client
    screenshot(page, f"{NARROW}-replay")
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
    page.click('button[data-load="c_round.txt"]')
    check_learn_step(page, trace_network(project, 30), read_glyph(project / "data/samples/c_round.txt"), "C", 0.5)
    assert problems == []


def test_a_float32_model_is_computed_in_float32_bit_for_bit(float32, browser):
    page, problems = open_page(browser, float32)
    data = json.loads(page.text_content("#data"))
    assert data["portable"]["dtype"] == "float32" and "replay" in data["trace"]  # replayed in float32
    assert "float32" in page.text_content("header")
    check_samples(float32, page)
    check_replay(float32, page)
    set_epoch(page, 120)
    page.click('button[data-load="b_thick.txt"]')
    net = load_network(float32 / "models/model.npz", PIXELS)
    assert net.w1.dtype == np.float32
    check_learn_step(page, net, read_glyph(float32 / "data/samples/b_thick.txt"), "B", 0.5)
    assert problems == []


def test_the_page_is_small_and_self_contained_and_its_arithmetic_lives_in_portable_js(default):
    page = (default / "metrics/explorer.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert len(page.encode()) < 100_000
    data = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert data["glyphs"] == ["".join(map(str, g)) for g in clean_glyphs().tolist()]
    arithmetic = explore.ARITHMETIC.read_text(encoding="utf-8")
    assert page.count(arithmetic) == 1  # inlined once
    template = explore.TEMPLATE.read_text(encoding="utf-8")
    for name in ("exp", "log1p", "sigmoid", "softplus", "forward", "backward", "sgd_step", "nearest", "slices"):
        assert f"function {name}" not in template and f"function _{name}" not in template, name
    for name in LOSSES:  # loss names come from the model (D.loss) and portable.js's one table
        assert f'"{name}"' not in template and arithmetic.count(f"{name}: {{") == 1, name
