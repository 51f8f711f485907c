"""The docs' checked parts: figures equal their sources, every session is run by a test, links resolve.

None of this reads prose or headings: see tests/docs.py for the markers.
"""

from __future__ import annotations

import re

import pytest

from tests import docs
from tests.conftest import ROOT
from tests.test_readme import SESSIONS

LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_figure_a_renderer_writes_equals_its_source():
    """scripts/doc_figures.py, run now, would change no page: every figure is its source's."""
    regions = docs.doc_figures.regions()
    assert set(docs.doc_figures.RENDER) <= set(regions), "a renderer whose region no page holds"
    for page in docs.doc_figures.pages():
        text = page.read_text()
        assert docs.doc_figures.rewritten(text) == text, f"{page.relative_to(ROOT)}: run scripts/doc_figures.py"


def test_a_figure_that_differs_from_its_source_is_found(tmp_path):
    """The check above can fail: a page whose figure is not its source's is rewritten."""
    for name in ("metrics/metrics.json", "sweeps/robust.tsv", "params.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    page, _ = docs.doc_figures.regions()["metrics"]
    text = docs.doc_figures.rewritten(page.read_text())
    assert docs.doc_figures.rewritten(text, tmp_path) == text
    metrics = tmp_path / "metrics/metrics.json"
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.946667', '"accuracy": 0.9'))
    assert docs.doc_figures.rewritten(text, tmp_path) != text


def test_every_console_session_in_the_docs_is_run_by_a_test():
    sessions = {name for name, (language, _) in docs.blocks().items() if language == "console"}
    assert sessions == set(SESSIONS), "a console block that no test runs, or a session that no page holds"


def test_every_link_between_pages_names_a_file_that_exists():
    for page in docs.doc_figures.pages():
        for target in LINK.findall(page.read_text()):
            path = target.split("#")[0]
            if path and not re.match(r"\w+://", path):
                assert (page.parent / path).exists(), f"{page.relative_to(ROOT)}: {target}"


def test_the_readme_fits_a_few_screens():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize(
    "shown, printed, same",
    [
        (["a", "b"], ["a", "b"], True),
        (["a", "b"], ["a", "b", "c"], False),
        (["a"], ["b"], False),
        (["...", "c"], ["a", "b", "c"], True),
        (["a", "...", "c", "..."], ["a", "b", "c", "d"], True),
        (["a", "...", "d"], ["a", "b", "c"], False),
        (["x   1  2"], ["x 1 2   "], True),
        (["  └── 1ff19bb [bushy-wife]   0.96"], ["  └── 5707667 [pucka-lama]  0.96"], True),
        (["  └── 1ff19bb [bushy-wife]   0.96"], ["  └── 5707667 [pucka-lama]  0.97"], False),
        ([" ─────"], [" ──────────"], True),
    ],
)
def test_printed_lines_match_what_a_session_shows(shown, printed, same):
    assert docs.matches(shown, printed) is same
