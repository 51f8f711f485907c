"""Same bytes on every machine: the pipeline's files and 26 training configurations, compared across
NumPy dispatch levels, BLAS thread counts, two other BLAS kernels, and aarch64 (emulated) when the
workplace's arm64-python tool is there.

Each run happens in a subprocess, since NumPy reads NPY_DISABLE_CPU_FEATURES and the dynamic linker
reads LD_PRELOAD only at start-up. What is compared: every file the stages write (data/, models/,
metrics/ with its images), and tests/fingerprints.py's digests of training and evaluation under
both dtypes, both losses, biases on and off, and batch sizes 1, 64 and 1024 with shuffling.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_of, copy_project, env

pytestmark = pytest.mark.slow  # other CPUs, BLAS kernels, aarch64: cross-machine (python -m pytest -m slow)

ARM64_PYTHON = ROOT.parent / "shared" / "tools" / "arm64-python"
ARM64_PACKAGES = (
    "numpy pyyaml ruamel.yaml matplotlib pillow kiwisolver contourpy cycler fonttools packaging pyparsing"
    " python-dateutil six"
)


def declared_outputs(project: Path) -> list[str]:
    """Every file dvc.yaml's stages write (outs, metrics and plots)."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values()
    entries = [entry for stage in stages for kind in ("outs", "metrics", "plots") for entry in stage.get(kind, [])]
    return sorted(next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries)


def outputs(project: Path, python: list[str], extra_env: dict[str, str]) -> dict[str, str]:
    """Run the stages and tests/fingerprints.py with `python` (in one process: see its --stages);
    digests of everything they wrote."""
    for name in declared_outputs(project):
        (project / name).unlink(missing_ok=True)
    proc = subprocess.run(
        [*python, "tests/fingerprints.py", "--stages"],
        cwd=project,
        env={**env(), **extra_env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"under {python} {extra_env}:\n{proc.stderr}"
    digests = {f"config {name}": value for name, value in json.loads(proc.stdout).items()}
    for name in declared_outputs(project):
        digests[name] = hashlib.sha256((project / name).read_bytes()).hexdigest()[:16]
    return digests


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("reproducible") / "project")


@pytest.fixture(scope="module")
def reference(built: Path) -> dict[str, str]:
    """What this machine writes with every NumPy loop on and the bundled OpenBLAS: the session's build."""
    proc = subprocess.run(
        [sys.executable, "tests/fingerprints.py"], cwd=built, env=env(), capture_output=True, text=True, check=True
    )
    digests = {f"config {name}": value for name, value in json.loads(proc.stdout).items()}
    for name in declared_outputs(built):
        digests[name] = hashlib.sha256((built / name).read_bytes()).hexdigest()[:16]
    return digests


def differences(got: dict[str, str], want: dict[str, str]) -> list[str]:
    return [name for name in sorted(want.keys() | got.keys()) if got.get(name) != want.get(name)]


def cpu_features(python: list[str], extra_env: dict[str, str]) -> dict[str, bool]:
    code = "import json, numpy._core._multiarray_umath as m; print(json.dumps(m.__cpu_features__))"
    out = subprocess.run(
        [*python, "-c", code], env={**env(), **extra_env}, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def dispatch_levels() -> dict[str, str]:
    """NPY_DISABLE_CPU_FEATURES values: AVX-512 (or SVE) loops off, and every dispatched loop off."""
    from numpy._core._multiarray_umath import __cpu_dispatch__

    wide = [f for f in __cpu_dispatch__ if "512" in f or f in ("X86_V4", "SVE")]
    return {"wide-vector loops off": " ".join(wide), "only baseline loops": " ".join(__cpu_dispatch__)}


@pytest.mark.parametrize("level", list(dispatch_levels()))
def test_every_numpy_dispatch_level_writes_the_same_bytes(project, reference, level):
    disabled = dispatch_levels()[level]
    if not disabled:
        pytest.skip(f"this NumPy dispatches no {level.split()[0]} loops on this CPU")
    extra = {"NPY_DISABLE_CPU_FEATURES": disabled}
    features = cpu_features([sys.executable], extra)
    assert not any(features.get(name) for name in disabled.split()), "NumPy ignored NPY_DISABLE_CPU_FEATURES"
    assert differences(outputs(project, [sys.executable], extra), reference) == []


def test_one_blas_thread_writes_the_same_bytes(project, reference):
    assert differences(outputs(project, [sys.executable], {"OPENBLAS_NUM_THREADS": "1"}), reference) == []


@pytest.fixture(scope="module")
def other_blas(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc) to build tests/other_blas.c")
    library = tmp_path_factory.mktemp("blas") / "other_blas.so"
    subprocess.run(
        [
            compiler,
            "-O2",
            "-ffp-contract=off",
            "-shared",
            "-fPIC",
            "-o",
            str(library),
            str(ROOT / "tests" / "other_blas.c"),
            "-lm",
        ],
        check=True,
    )
    return library


@pytest.mark.parametrize("mode", ["reverse", "reverse-fma"])
def test_a_blas_kernel_that_rounds_differently_changes_no_stored_byte(project, reference, other_blas, tmp_path, mode):
    log = tmp_path / "calls.log"
    extra = {"LD_PRELOAD": str(other_blas), "OTHER_BLAS": mode, "OTHER_BLAS_LOG": str(log)}
    # The other kernel does move the bits of ordinary products: it is a real test, not a no-op ...
    probe = (
        "import numpy as np; r = np.random.default_rng(0); a, b = r.standard_normal((40, 30)), "
        "r.standard_normal((30, 5)); print((a @ b).tobytes().hex())"
    )
    plain = subprocess.run([sys.executable, "-c", probe], env=env(), capture_output=True, text=True, check=True)
    other = subprocess.run(
        [sys.executable, "-c", probe], env={**env(), **extra}, capture_output=True, text=True, check=True
    )
    assert other.stdout != plain.stdout
    # ... and the pipeline calls it, thousands of times, yet stores the same bytes.
    log.unlink()
    assert differences(outputs(project, [sys.executable], extra), reference) == []
    calls = log.read_text().split()
    assert calls.count("scipy_cblas_dgemm64_") > 100, sorted(set(calls))


@pytest.mark.skipif(not os.access(ARM64_PYTHON, os.X_OK), reason=f"no {ARM64_PYTHON} (aarch64 under qemu)")
def test_aarch64_writes_the_same_bytes(project, reference, tmp_path):
    """Slow: about 40 s under emulation (the two CPUs side by side), plus a few minutes the first time,
    to build its root."""
    arm_env = {"ARM64_PACKAGES": ARM64_PACKAGES}
    subprocess.run(
        [str(ARM64_PYTHON), "-c", "import numpy"],
        cwd=project,
        env={**env(), **arm_env},
        check=True,
        capture_output=True,
    )  # builds the emulated root once, before the two runs share it
    cpus = {"a CPU with SVE": [str(ARM64_PYTHON)], "cortex-a72": [str(ARM64_PYTHON), "--cpu", "cortex-a72"]}
    copies = {cpu: copy_of(project, tmp_path / cpu.replace(" ", "-")) for cpu in cpus}
    with ThreadPoolExecutor(len(cpus)) as pool:
        runs = {cpu: pool.submit(outputs, copies[cpu], python, arm_env) for cpu, python in cpus.items()}
        for cpu, run in runs.items():
            assert differences(run.result(), reference) == [], cpu
