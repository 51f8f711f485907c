"""What the tests read from the docs, found by machine-readable markers and never by prose or headings.

- A fenced block whose info string names it, as in `console tour` or `yaml sweep-file`: `block(NAME)` is
  its text. Names are unique across the pages (scripts/doc_figures.py lists them: README.md, docs/,
  benchmarks/README.md).
- A `console` block is a session: a line starting `$ ` is a command, run whole by bash (a `# ...` after
  it is a comment for readers, which bash skips too); the lines below it, up to the next command, are what
  it prints, stdout then stderr, where a line `...` stands for any number of lines. A command with no lines
  below it is checked for its exit status only. `matches` compares a line ignoring runs of spaces and an
  experiment's hash and name (`1ff19bb [bushy-wife]`), which differ in every clone.
- `<!-- figures: NAME -->` ... `<!-- /figures -->` regions: `region(NAME)` and `table(NAME)`. Regions
  that scripts/doc_figures.py writes are checked by tests/test_docs.py; the others by the test that
  computes their figures.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("doc_figures", ROOT / "scripts/doc_figures.py")
doc_figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(doc_figures)

FENCE = re.compile(r"^```(\w+) ([\w-]+)\n(.*?)^```$", flags=re.M | re.S)
EXPERIMENT = re.compile(r"[0-9a-f]{7} \[[\w-]+\]")
RULE = re.compile(r"^\s*─+\s*$")


@dataclass
class Step:
    command: str
    printed: list[str] = field(default_factory=list)


def blocks(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """NAME -> (language, text) of every named fenced block of the docs."""
    found: dict[str, tuple[str, str]] = {}
    for page in doc_figures.pages(root):
        for language, name, text in FENCE.findall(page.read_text()):
            assert name not in found, f"{page}: a second block named {name!r}"
            found[name] = (language, text.removesuffix("\n"))
    return found


def block(name: str) -> str:
    return blocks()[name][1]


def session(name: str) -> list[Step]:
    """The commands of the console block NAME, each with the lines it is shown printing."""
    language, text = blocks()[name]
    assert language == "console", (name, language)
    steps: list[Step] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:]))
        else:
            assert steps, f"block {name!r}: output before its first command: {line!r}"
            steps[-1].printed.append(line)
    return steps


def _same(shown: str, printed: str) -> bool:
    if RULE.match(shown):
        return bool(RULE.match(printed))
    return " ".join(EXPERIMENT.sub("EXP", shown).split()) == " ".join(EXPERIMENT.sub("EXP", printed).split())


def matches(shown: list[str], printed: list[str]) -> bool:
    """Whether `printed` is what `shown` shows, a `...` line standing for any number of lines."""
    if not shown:
        return not printed
    if shown[0] == "...":
        return any(matches(shown[1:], printed[i:]) for i in range(len(printed) + 1))
    return bool(printed) and _same(shown[0], printed[0]) and matches(shown[1:], printed[1:])


def region(name: str) -> str:
    return doc_figures.regions()[name][1]


def table(name: str) -> list[list[str]]:
    """The body rows of the Markdown table in region NAME, each a list of its cells (no header)."""
    rows = [line for line in region(name).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def quoted(page: str) -> list[str]:
    """Every `code span` and "quotation" of a page: where a page shows a command or a program's words."""
    text = (ROOT / page).read_text()
    spans = [a or b for a, b in re.findall(r"``\s?(.+?)\s?``|`([^`\n]+)`", text)]
    return spans + re.findall(r'"([^"\n]+)"', text)
