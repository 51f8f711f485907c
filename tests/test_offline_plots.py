"""`dvc plots show` with the committed template renders every plot in headless Chromium with the network off.

The session's repository (the tracked files, the template among them, after `dvc repro`) runs
`dvc plots show` with no other step; a copy of the page with a checking script appended reports, from
inside the browser, whether each vega plot drew its marks (SVG elements, or coloured canvas pixels) and
each image loaded. The real page's screenshot goes to test-artifacts/plots.png.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import pictures
from tests.conftest import ROOT, copy_project, dvc, run

SCREENSHOT = ROOT / "test-artifacts" / "plots.png"
STATUS_ID = "offline-plots-status"
MIN_COLOURED = 200  # canvas pixels in colour: a drawn line, bar or cell has far more; the legend dot alone has less
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # the network is off
]
EXTERNAL = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)

# Collects script errors from the very start of the page, for the failure message.
ERRORS_JS = "<script>window.__errors = []; addEventListener('error', e => __errors.push(String(e.message)));</script>"
CHECK_JS = """
<pre id="STATUS_ID"></pre>
<script>
function coloured(canvas) {  // pixels whose channels differ: marks, not black text or grey axes
  if (!canvas.width || !canvas.height) return 0;
  const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] > 0 && Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 40) n++;
  }
  return n;
}
function plot(div) {
  const svg = div.querySelector("svg"), canvas = div.querySelector("canvas");
  return {id: div.id, svg: !!svg, canvas: !!canvas,
          marks: svg ? svg.querySelectorAll(".role-mark > *").length : 0,
          coloured: canvas ? coloured(canvas) : 0};
}
addEventListener("load", () => setTimeout(() => {
  const divs = [...document.querySelectorAll("div[id]")];  // vegaEmbed replaces a plot div's script: report all
  const images = [...document.images].map(img => ({src: img.getAttribute("src"),
                                                   loaded: img.complete && img.naturalWidth > 0}));
  document.getElementById("STATUS_ID").textContent =
    JSON.stringify({divs: divs.map(plot), images: images, errors: window.__errors || []});
}, 1000));
</script>
""".replace("STATUS_ID", STATUS_ID)


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium not found: this test needs headless Chromium; `.ci/run` installs it "
            "(or: apt-get install -y chromium)"
        )
    return path


def browse(page: Path, *flags: str, tmp_path: Path) -> str:
    """Run headless Chromium offline on `page` with a fresh profile; its stdout."""
    profile = tmp_path / f"profile-{page.stem}"
    args = [
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        *flags,
        page.as_uri(),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc.stdout


def page_status(page: Path, tmp_path: Path) -> dict:
    """What the checking script saw in a copy of `page` beside it (so relative image paths hold)."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"<head[^>]*>", lambda m: m.group(0) + ERRORS_JS, text, count=1)
    check = page.with_name("check.html")
    head, body_end, tail = text.rpartition("</body>")  # the last one: the inline bundle holds "</body>" too
    check.write_text(head + CHECK_JS + body_end + tail, encoding="utf-8")
    dom = browse(check, "--dump-dom", tmp_path=tmp_path)
    found = re.search(rf'<pre id="{STATUS_ID}">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), f"the checking script reported nothing; DOM tail:\n{dom[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def vega_ids(page: Path) -> list[str]:
    """The div ids that DVC's inline scripts pass to vegaEmbed."""
    return re.findall(r"vegaEmbed\('#([^']+)'", page.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def plots_page(dvc_repo, tmp_path_factory) -> Path:
    """The index.html of `dvc plots show` in the session's repository: the tracked files (the template
    among them) after a `dvc repro`, with no other step."""
    assert (dvc_repo / ".dvc/plots/offline.html").is_file(), "the page template is not tracked by git"
    out = tmp_path_factory.mktemp("plots") / "plots-out"
    dvc(dvc_repo, "plots", "show", "-o", str(out))
    return out / "index.html"


def test_the_page_loads_nothing_from_the_network(plots_page):
    page = plots_page.read_text(encoding="utf-8")
    assert vega_ids(plots_page), "dvc plots show wrote no vega plot"
    assert not EXTERNAL.findall(page), f"external script/link/img references: {EXTERNAL.findall(page)}"


def test_every_plot_renders_and_every_image_loads_offline(plots_page, tmp_path):
    chromium()  # fail first, and clearly, if it is missing
    status = page_status(plots_page, tmp_path)
    divs = {div["id"]: div for div in status["divs"]}
    plots = [divs.get(plot_id, {"id": plot_id, "missing": True}) for plot_id in vega_ids(plots_page)]
    undrawn = [p for p in plots if not (p.get("marks", 0) > 0 or p.get("coloured", 0) >= MIN_COLOURED)]
    assert plots, "dvc plots show wrote no vega plot"
    assert not undrawn, f"plots not drawn: {undrawn}; page errors: {status['errors']}"
    images = status["images"]
    assert images, "dvc plots show wrote no image plot"
    assert all(i["loaded"] for i in images), f"images not loaded: {[i for i in images if not i['loaded']]}"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    browse(plots_page, f"--screenshot={SCREENSHOT}", "--window-size=1280,4000", tmp_path=tmp_path)
    assert SCREENSHOT.stat().st_size > 0


def test_the_committed_template_is_what_plots_page_writes(tmp_path):
    project = copy_project(tmp_path / "project")
    committed = (project / ".dvc/plots/offline.html").read_bytes()
    (project / ".dvc/plots/offline.html").unlink()
    run([sys.executable, "scripts/plots_page.py"], cwd=project)
    assert (project / ".dvc/plots/offline.html").read_bytes() == committed, (
        "run `python scripts/plots_page.py` and commit .dvc/plots/offline.html"
    )


@pytest.fixture(scope="module")
def diff_page(dvc_repo, tmp_path_factory) -> Path:
    """The index.html of `dvc plots diff HEAD`: every plot with two revisions, HEAD and the workspace."""
    out = tmp_path_factory.mktemp("plots-diff") / "plots-out"
    dvc(dvc_repo, "plots", "diff", "HEAD", "-o", str(out))
    return out / "index.html"


@contextlib.contextmanager
def drawn(browser, page: Path, width: int = 1280):
    """A tab of `page` at `width` px once every vega plot has drawn, and the list that gets every console
    message (any level) and script error."""
    tab = browser.new_page(viewport={"width": width, "height": 900})
    messages: list[str] = []
    tab.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    tab.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    try:
        tab.goto(page.as_uri())
        every = "ids => ids.every(id => document.querySelector(`#${CSS.escape(id)} :is(svg, canvas)`))"
        tab.wait_for_function(every, arg=vega_ids(page), timeout=20_000)
        tab.wait_for_timeout(500)  # a warning vega logs after the first draw
        yield tab, messages
    finally:
        tab.close()


def test_image_captions_are_big_enough_to_read(tmp_path):
    """Pillow's captions were 10 px from the top of an A to the bottom of a g; a reader wants 13 or more."""
    path = tmp_path / "caption.png"
    cells = pictures.glyph_cells(np.zeros((1, 30), np.uint8))
    pictures.grid(path, cells, ["Ag"], [pictures.WRONG], columns=1, heading="")
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    red = rgb[..., 0] - rgb[..., 1] > 60  # the caption's ink, antialiased edges included
    rows = np.flatnonzero(red.any(axis=1))
    assert rows.size and rows.max() - rows.min() + 1 >= 13, rows


@pytest.mark.parametrize("width", [420, 1280])
def test_the_plots_pages_log_nothing_and_every_chart_fits_its_card_at_a_phones_width_and_a_laptops(
    browser, plots_page, diff_page, width
):
    """Nothing in the console: DVC's own linear and simple templates logged "Infinite extent for field
    step/loss/accuracy" and "Dropping {} from channel row/strokeDash", and Vega-Lite 5 under Vega 6 "The
    compiled spec uses Vega v5". At 420 px the page did not scroll sideways, but charts were clipped inside
    their cards (the sweep chart's title showed as "sw..."); at 1280 px the sweep chart was titled with its
    path and stood between the training curves. Screenshots: test-artifacts/plots-420.png and plots-1280.png."""
    for page in (plots_page, diff_page):
        text = page.read_text(encoding="utf-8")
        assert text.count('"x": {"field": "step", "type": "quantitative", "title": "epoch"}') == 2  # loss, accuracy
        if page == diff_page:
            assert text.count('"rev": "HEAD"') > 300 and text.count('"rev": "workspace"') > 300
        with drawn(browser, page, width) as (tab, messages):
            header = tab.inner_text("header")
            cards = tab.evaluate(
                """() => [...document.querySelectorAll('main > div')].map(card => {
                     const chart = card.querySelector('svg, canvas, img');
                     return {id: card.id, inner: card.clientWidth, scroll: card.scrollWidth,
                             chart: chart ? chart.getBoundingClientRect().width : 0,
                             titles: [...card.querySelectorAll('.role-title-text')]
                                     .map(t => t.getBoundingClientRect().left - card.getBoundingClientRect().left)};
                   })"""
            )
            page_width = tab.evaluate("document.documentElement.scrollWidth")
            if page == plots_page:
                SCREENSHOT.parent.mkdir(exist_ok=True)
                tab.screenshot(path=str(SCREENSHOT.with_name(f"plots-{width}.png")), full_page=True)
            order = tab.evaluate("[...document.querySelectorAll('main > div')].map(d => d.id)")
        assert messages == [], messages
        assert "dvc plots show or dvc plots diff" in header
        assert page_width <= width
        for card in cards:
            assert card["scroll"] <= card["inner"] + 1 and card["chart"] <= card["inner"] + 1, card
            assert all(left >= 0 for left in card["titles"]), card  # no title runs out of its card
        sweep = next(i for i, name in enumerate(order) if name.startswith("sweeps_plots"))
        assert order[:2] == ["dvc_yaml__metrics_history_tsv", "metrics_history_tsv"] and sweep == 2, order
    text = plots_page.read_text(encoding="utf-8")
    assert '"Sweeps: the ranking metric against each setting varied, a panel a setting"' in text
    assert '"kind": "category"' in text and '"kind": "number"' in text
