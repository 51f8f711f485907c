"""The README's two commands are the ones CI runs, and its tour's claims hold."""

from __future__ import annotations

import re

from tests.conftest import ROOT, clone_with_outputs, run


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [
        line for line in re.findall(r"^```\n(.*?)\n```", text, flags=re.M | re.S) if line.startswith("python3 -m venv")
    ]


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    install, tests = readme_commands()
    assert install.endswith("&& dvc repro")
    assert tests.endswith("&& python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_every_stage_in_the_readme_exists_in_dvc_yaml():
    text = (ROOT / "dvc.yaml").read_text()
    for stage in ("make_dataset", "train", "evaluate", "predict", "explore"):
        assert f"  {stage}:\n    cmd: python -m pipeline.{stage}\n" in text


# --- the tour, run in order ----------------------------------------------------------------------

README = (ROOT / "README.md").read_text()
RULE = re.compile(r"^\s*─+\s*$")
GIT_USER = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def blocks_after(heading: str) -> list[str]:
    """The code blocks of the README from `heading` on."""
    return re.findall(r"^```\n(.*?)\n```", README[README.index(heading) :], flags=re.M | re.S)


def tour_steps() -> list[tuple[str, str, list[str]]]:
    """(command, its comment, the lines the tour shows it printing: `# ` lines below it) of the tour."""
    steps: list[tuple[str, str, list[str]]] = []
    for line in blocks_after("## A short tour")[0].splitlines():
        if line.startswith("# "):
            steps[-1][2].append(line[2:])
        elif line:
            command, _, comment = line.partition("  # ")
            steps.append((command.rstrip(), comment.strip(), []))
    return steps


def table_rows(text: str) -> list[str]:
    """An exp show table's rows, spaces collapsed, an experiment's hash and name (`1ff19bb [bushy-wife]`)
    written EXP: the figures and the order are what must agree."""
    rows = [re.sub(r"[0-9a-f]{7} \[[\w-]+\]", "EXP", line) for line in text.splitlines() if not RULE.match(line)]
    return [" ".join(row.split()) for row in rows if row.strip()]


def changes(comment: str) -> list[tuple[str, str, str]]:
    """`key old -> new` in a tour comment."""
    return re.findall(r"([\w.]+) (\S+) -> ([^\s,]+)", comment)


def check_step(command: str, comment: str, printed: list[str], proc) -> None:
    """What the tour's comment and `# ` lines say about `command`, against what it did."""
    out = proc.stdout
    assert proc.returncode == 0, f"{command}\n{out}\n{proc.stderr}"
    if printed:
        assert out.splitlines() + proc.stderr.splitlines() == printed, command
    ran = re.findall(r"Running stage '(\w+)'", out)
    if "runs nothing" in comment:
        assert ran == [] and "Data and pipelines are up to date." in out
    if reruns := re.search(r"reruns ([\w, ]+); not (\w+)", comment):
        assert ran == ["check_params"] * ("checks params.yaml" in comment) + reruns.group(1).split(", "), out
        assert reruns.group(2) not in ran
    for key, old, new in changes(comment):
        assert re.search(rf"^\S+\s+{re.escape(key)}\s+{old}\s+{new}(\s|$)", out, flags=re.M), (command, key, out)
    for quoted in re.findall(r'"([^"]+)"', comment):
        assert quoted in out, (command, quoted)


def test_the_tour_and_the_robust_recipe_run_in_order_give_the_readmes_figures(dvc_repo, tmp_path):
    """Every command of the tour, in order, in one fresh clone, then the robust recipe after it (which
    must start from the committed params whatever the tour left), each checked against the README."""
    clone = clone_with_outputs(dvc_repo, tmp_path / "tour")
    steps = tour_steps()
    assert [command for command, _, _ in steps][:2] == [
        "python -m pipeline.predict data/samples/b.txt data/samples/a_round_top.txt",
        "dvc repro",
    ]
    shell = ["bash", "-c"]
    for command, comment, printed in steps:
        proc = run([*shell, command], cwd=clone, **GIT_USER)
        check_step(command, comment, printed, proc)
        if command.startswith("dvc plots show"):
            assert (clone / "dvc_plots/index.html").is_file()
    shown = proc.stdout  # the last step: the experiment table
    assert steps[-1][0].startswith("dvc exp show")
    assert max(map(len, shown.splitlines())) <= 120, "the tour's exp show table must fit 120 columns, piped too"
    assert table_rows(shown) == table_rows(blocks_after("## A short tour")[1])

    recipe = next(line for line in README.splitlines() if "dvc exp run -S dataset.train_per_class=" in line)
    run([*shell, recipe], cwd=clone, **GIT_USER)
    diff = run(["dvc", "metrics", "diff"], cwd=clone).stdout
    expected = next(b for b in blocks_after("A robust recipe") if b.startswith("Path "))
    assert [line.rstrip() for line in diff.splitlines()] == expected.splitlines()
