"""The package's layers: a module imports only from layers below its own (CONTRIBUTING.md has the table).

A folder of pipeline/ is one entry of a layer: its modules import from the layers below the folder's and
from the modules of the folder listed before their own (FOLDERS), and its `__init__` and `__main__` from
its own modules only.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "pipeline"
LAYERS = [
    {"errors", "paths", "portable", "progress"},  # leaves: no pipeline imports
    {"glyphs", "model", "native", "writing", "reading"},  # the glyphs, the math, the engine's code, file primitives
    {"compiled"},  # the math compiled (Numba), into native's cache
    {"artifacts", "glyph_files", "sgd"},  # our files between stages, glyph files, the loop
    {
        "checkpoint",
        "params",
        "pictures",
        "resume",
    },  # the model file, params.yaml (sized by sgd's blocks, the trace), pictures, a run's checkpoints
    {"figures"},  # charts
    {"check_params", "make_dataset", "train", "evaluate", "predict", "explore"},  # stages
    {"sweep"},  # a folder: runs the stages' functions as trials on Dask
]
FOLDERS = {"sweep": ["work", "sweep_file", "trials", "received", "cluster", "results", "experiments", "command"]}
DOORS = {"__init__", "__main__"}  # a folder's: they import its modules, and the rest of the package through them


def imports(path: Path) -> tuple[set[str], set[str]]:
    """The package's top-level modules (or folders) that the file at `path` imports, and the modules of
    its own folder it imports."""
    folder = path.parent.name if path.parent != PACKAGE else None
    found, own = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline."):
            names = [node.module.removeprefix("pipeline.")]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("pipeline.") for a in node.names if a.name.startswith("pipeline.")]
        for name in names:
            top, _, sub = name.partition(".")
            if folder is not None and top == folder and sub:
                own.add(sub.split(".")[0])
            else:
                found.add(top)
    return found, own


def test_every_module_is_in_a_layer_and_imports_only_from_the_layers_below():
    entries = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    entries -= {"__pycache__"}
    assert set().union(*LAYERS) == entries
    for level, layer in enumerate(LAYERS):
        below = set().union(*LAYERS[:level])
        for entry in sorted(layer):
            files = [PACKAGE / f"{entry}.py"] if entry not in FOLDERS else sorted((PACKAGE / entry).glob("*.py"))
            for path in files:
                found, own = imports(path)
                where = path.relative_to(ROOT)
                assert found <= below, f"{where} imports {sorted(found - below)} from its layer or above"
                if entry in FOLDERS and path.stem not in DOORS:
                    earlier = FOLDERS[entry][: FOLDERS[entry].index(path.stem)]
                    assert own <= set(earlier), f"{where} imports {sorted(own - set(earlier))} of its folder"


def test_every_module_of_a_folder_is_in_its_order():
    for folder, order in FOLDERS.items():
        assert {p.stem for p in (PACKAGE / folder).glob("*.py")} - DOORS == set(order)
