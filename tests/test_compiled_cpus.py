"""The compiled engine's code for other CPUs (NUMBA_CPU_NAME): no fused multiply-add in any kernel, and
the NumPy engine's digests wherever this machine can run the code. Each CPU compiles in a child process
into an empty cache, once: the assembly is read from the code the digests then run. This file is apart so
that xdist runs it beside the others.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from pipeline import compiled
from tests.conftest import ROOT, run

pytestmark = pytest.mark.slow  # four compiles for other CPUs: cross-machine (python -m pytest -m slow)
FINGERPRINTS = ROOT / "tests" / "fingerprints.py"
FMA = re.compile(r"\b(v?f(n)?m(add|sub)\w*|fml[as]\w*)\b")  # x86 vfmadd..., aarch64 fmadd/fmsub/fmla/fmls

ASSEMBLY_PROBE = """
import json, sys
import numpy as np
from pipeline import compiled, native
asm = {}
for dtype in (np.float64, np.float32):  # the entry point, compiled for NUMBA_CPU_NAME by compiled.build's own step
    entry = compiled.entry_point(dtype)
    asm[f"entry{dtype.__name__}"] = entry._library.get_asm_str()
    # and stored where a run with this environment loads it: the digests below run this very code (and
    # each CPU compiles once, not twice)
    native.store(dtype, entry.native_name, entry._library.serialize_using_object_code()[2][0])
for name, f in vars(compiled).items():  # and each kernel's own module, as the entry point linked it
    if hasattr(f, "inspect_asm"):
        for sig, text in f.inspect_asm().items():
            asm[f"{name}{sig}"] = text
json.dump(asm, sys.stdout)
"""

CPUS = {"generic": [], "haswell": ["avx2", "fma"], "skylake-avx512": ["avx512f", "avx512dq", "avx512bw", "avx512vl"]}


def host_can_run(cpu: str) -> bool:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    return set(CPUS[cpu]) <= flags


@pytest.fixture(scope="module")
def numpy_digests() -> str:
    return run([sys.executable, str(FINGERPRINTS)], cwd=ROOT, PIPELINE_ENGINE="numpy").stdout


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the CPU names are x86's")
@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_code_for_other_cpus_has_no_fused_multiply_add_and_gives_the_same_digests(cpu, tmp_path, numpy_digests):
    """Numba compiles for `cpu` (NUMBA_CPU_FEATURES="": none of this machine's features added) into an
    empty cache: no kernel's assembly has an FMA instruction (for haswell and skylake-avx512, CPUs that
    have them), and where this machine can run the code, the 26 fingerprint configurations give the
    NumPy engine's digests."""
    env = {
        "NUMBA_CPU_NAME": cpu,
        "NUMBA_CPU_FEATURES": "",
        "NUMBA_CACHE_DIR": str(tmp_path),
        "PIPELINE_CACHE_DIR": str(tmp_path / "engine"),  # the probe's entry points, which the digests load
        "PIPELINE_ENGINE": "numba",
    }
    asm = json.loads(run([sys.executable, "-c", ASSEMBLY_PROBE], cwd=ROOT, **env).stdout)
    assert len(asm) > 20 and any("ymm" in text or "zmm" in text for text in asm.values()) == (cpu != "generic")
    fused = {name: FMA.findall(text) for name, text in asm.items() if FMA.search(text)}
    assert not fused
    if host_can_run(cpu):
        assert run([sys.executable, str(FINGERPRINTS)], cwd=ROOT, **env).stdout == numpy_digests


@pytest.mark.skipif(
    "NUMBA_CPU_NAME" in os.environ, reason="NUMBA_CPU_NAME is set: this CPU's own code is not what runs"
)
def test_code_for_this_cpu_has_no_fused_multiply_add(tmp_path):
    """The code Numba compiles for the machine the suite runs on (every feature it has, FMA included,
    on any recent x86-64 or aarch64) has no fused multiply-add either; and in the entry point, each kernel
    of compiled.KEPT_APART is a function of its own, not inlined."""
    asm = json.loads(run([sys.executable, "-c", ASSEMBLY_PROBE], cwd=ROOT, NUMBA_CACHE_DIR=str(tmp_path)).stdout)
    assert len(asm) > 20
    assert not {name: FMA.findall(text) for name, text in asm.items() if FMA.search(text)}
    for dtype in ("float64", "float32"):
        own = {
            compiled._kernel_name(s) for s in re.findall(r"^(_ZN8pipeline8compiled\w+):", asm[f"entry{dtype}"], re.M)
        }
        assert own >= compiled.KEPT_APART, sorted(compiled.KEPT_APART - own)
