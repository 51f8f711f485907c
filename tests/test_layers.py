"""The package's layers: a module imports only from layers below its own (CONTRIBUTING.md has the table)."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

LAYERS = [
    {"errors", "paths", "portable", "progress"},  # leaves: no pipeline imports
    {"glyphs", "model", "native"},  # the glyphs, the math, the compiled engine's tables and machine code
    {"compiled"},  # the math compiled (Numba), into native's cache
    {"artifacts", "glyph_files", "params", "sgd"},  # files between stages, glyph files, params.yaml, the loop
    {"checkpoint", "pictures"},  # the model file, pictures
    {"figures"},  # charts, in pictures' palette
    {"check_params", "make_dataset", "train", "evaluate", "predict", "explore"},  # stages
    {"sweep"},  # runs the stages' functions as trials on Dask
]


def imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "pipeline" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline."):
            found.add(node.module.split(".")[1])
    return found


def test_every_module_is_in_a_layer_and_imports_only_from_the_layers_below():
    modules = {path.stem for path in (ROOT / "pipeline").glob("*.py")} - {"__init__"}
    assert set().union(*LAYERS) == modules
    for level, layer in enumerate(LAYERS):
        below = set().union(*LAYERS[:level])
        for module in sorted(layer):
            assert imports(module) <= below, (
                f"{module} imports {sorted(imports(module) - below)} from its layer or above"
            )
