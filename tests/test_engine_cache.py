"""The compiled engine is compiled once per machine: every clone finds it in the user's cache, loads it
without Numba, and never takes (or overwrites) the entry of a clone whose engine sources differ."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from pipeline import compiled
from tests.conftest import ROOT, run

pytestmark = pytest.mark.slow  # a compile into an empty cache (half a minute): python -m pytest -m slow

PROBE = (
    "import sys, time, numpy as np\n"
    "start = time.perf_counter()\n"
    "from pipeline import native\n"
    "loaded = native.load(np.float64) is not None\n"
    "print(loaded, 'numba' in sys.modules, f'{time.perf_counter() - start:.3f}')\n"
)


def clone_of_the_package(dest: Path) -> Path:
    """A folder holding a copy of pipeline/: what another clone of the project runs."""
    shutil.copytree(ROOT / "pipeline", dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def probe(clone: Path, cache: Path) -> tuple[str, str]:
    """(whether the float64 engine loaded, whether Numba was imported) in a new process of `clone`."""
    loaded, imported, _ = run([sys.executable, "-c", PROBE], cwd=clone, PIPELINE_CACHE_DIR=str(cache)).stdout.split()
    return loaded, imported


def test_a_second_clone_loads_the_first_ones_compile_and_no_other_source_or_damaged_entry_is_loaded(tmp_path):
    cache, first, second = tmp_path / "cache", *(clone_of_the_package(tmp_path / n) for n in "ab")
    assert probe(first, cache) == ("False", "False")  # an empty cache: nothing to load, nothing compiled
    run([sys.executable, "-m", "pipeline.compiled", "float64"], cwd=first, PIPELINE_CACHE_DIR=str(cache))
    (entry,) = cache.glob("epoch-float64-*.o")  # one entry: float32 was not asked for
    code = entry.read_bytes()  # the code an import compiles: each batch kernel a function of its own
    assert b"\ncfunc._ZN8pipeline8compiled" in code, code[:200]
    assert not {
        name for name in compiled.KEPT_APART if b"_ZN8pipeline8compiled%d%s" % (len(name), name.encode()) not in code
    }
    assert probe(second, cache) == ("True", "False")  # another clone: a load, and Numba never imported
    edited = second / "pipeline" / "compiled.py"
    edited.write_text(edited.read_text() + "\n# an edit\n")
    assert probe(second, cache) == ("False", "False")  # its sources differ: the first clone's code is not its
    assert probe(first, cache) == ("True", "False") and list(cache.glob("*.o")) == [entry]
    data = bytearray(entry.read_bytes())
    data[-64] ^= 0xFF  # one flipped bit of code: its SHA-256 no longer matches
    entry.write_bytes(bytes(data))
    assert probe(first, cache) == ("False", "False")
    entry.write_bytes(b"abc-pipeline engine 1\n")  # a header and nothing else
    assert probe(first, cache) == ("False", "False")
