"""Bad input at every edge, run as a user runs the stages: one line on stderr, a clear exit status,
and no output written or truncated.

Covers what tests/test_params.py, tests/test_glyphs.py and tests/test_stages.py leave out: each kind
of bad params.yaml through a real stage, every kind of bad glyph file in one predict call, damaged
files between stages of the kinds a crash, a disk or a person makes, and the CLI's usage errors.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline import glyph_files
from pipeline.errors import PipelineError, exit_on_error
from tests.conftest import ROOT, STAGES, copy_of, one_error_line, run_module


@pytest.fixture
def copy(built, tmp_path) -> Path:
    """A fresh copy of the session's built project, for a test that edits it."""
    return copy_of(built, tmp_path / "copy")


def snapshot(project: Path) -> dict[str, str]:
    """Every file under the project and a digest of its bytes: no output may appear, vanish or change."""
    return {
        p.relative_to(project).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(project.rglob("*"))
        if p.is_file() and p.name != "params.yaml"
    }


@pytest.fixture
def stage_runner(monkeypatch, capsys):
    """Run a stage as `python -m` would, but in this process (a subprocess costs 0.3 s); a few cases
    of each kind below also run in a real subprocess, which proves the same for the real entry point."""

    def run_stage(stage: str, *args: str, cwd: Path, subprocess: bool = False):
        if subprocess:
            return run_module(f"pipeline.{stage}", *args, cwd=cwd)
        main = importlib.import_module(f"pipeline.{stage}").main
        with monkeypatch.context() as m:
            m.chdir(cwd)
            m.setattr(sys, "argv", [f"python -m pipeline.{stage}", *args])
            capsys.readouterr()
            status = exit_on_error(main)
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=status, stdout=out, stderr=err)

    return run_stage


# --- params.yaml, edited by hand ----------------------------------------------------------------

COMMITTED = (ROOT / "params.yaml").read_text()


def retype(key: str, value: str, text: str = COMMITTED) -> str:
    """params.yaml with `key: ...` (first occurrence, comment kept) retyped as `key: value`."""
    edited, n = re.subn(rf"^(  {key}:) [^#\n]*?(\s*#|$)", rf"\1 {value}\2", text, count=1, flags=re.M)
    assert n == 1, key
    return edited


def without_section(name: str) -> str:
    edited, n = re.subn(rf"^{name}:\n(  .*\n)+\n?", "", COMMITTED, flags=re.M)
    assert n == 1, name
    return edited


# (edited params.yaml, fragments the one error line must contain, in order)
BAD_PARAMS = {
    "yaml-syntax": (retype("lr", "[0.1"), ["params.yaml: line ", "invalid YAML"]),
    "yaml-bad-date": (retype("lr", "2023-13-01"), ["params.yaml: invalid YAML: month must be in 1..12"]),
    "missing-section": (without_section("train"), ["params.yaml: missing section 'train'"]),
    "unknown-key": (
        COMMITTED.replace("  lr: ", "  lrr: ", 1),
        ["params.yaml: train.lrr: unknown key; allowed: hidden, lr, epochs,"],
    ),
    "missing-key": (
        re.sub(r"^  epochs: .*\n", "", COMMITTED, flags=re.M),
        ["params.yaml: train.epochs: missing; expected an integer in [0, 10000]"],
    ),
    "lr-fast": (retype("lr", "fast"), ["params.yaml: train.lr: expected a number > 0.0", "found 'fast' (str)"]),
    "lr-zero": (retype("lr", "0"), ["params.yaml: train.lr: expected a number > 0.0", "found 0 (int)"]),
    "lr-negative": (retype("lr", "-0.5"), ["params.yaml: train.lr: expected a number > 0.0", "found -0.5 (float)"]),
    "lr-huge-integer": (retype("lr", "9" * 400), ["params.yaml: train.lr: expected a number > 0.0", "(int)"]),
    "epochs-negative": (
        retype("epochs", "-1"),
        ["params.yaml: train.epochs: expected an integer in [0, 10000]", "found -1 (int)"],
    ),
    "epochs-fraction": (
        retype("epochs", "2.5"),
        ["params.yaml: train.epochs: expected an integer in [0, 10000]", "found 2.5 (float)"],
    ),
    "hidden-zero": (
        retype("hidden", "0"),
        ["params.yaml: train.hidden: expected an integer in [1, 512]", "found 0 (int)"],
    ),
    "hidden-boolean": (
        retype("hidden", "true"),
        ["params.yaml: train.hidden: expected an integer in [1, 512]", "found True (bool)"],
    ),
    "batch-size-zero": (
        retype("batch_size", "0"),
        ["params.yaml: train.batch_size: expected an integer >= 1", "found 0 (int)"],
    ),
    "noise-above-one": (
        retype("noise", "1.5"),
        ["params.yaml: dataset.noise: expected a number in [0.0, 1.0]", "found 1.5 (float)"],
    ),
    "noise-negative": (
        retype("noise", "-0.1"),
        ["params.yaml: dataset.noise: expected a number in [0.0, 1.0]", "found -0.1 (float)"],
    ),
    "noise-boolean": (
        retype("noise", "true"),
        ["params.yaml: dataset.noise: expected a number in [0.0, 1.0]", "found True (bool)"],
    ),
    "noise-yes": (  # YAML 1.2, as DVC reads it: a string, not a boolean
        retype("noise", "yes"),
        ["params.yaml: dataset.noise: expected a number in [0.0, 1.0]", "found 'yes' (str)"],
    ),
    "bias-on": (retype("bias", "on"), ["params.yaml: train.bias: expected true or false", "found 'on' (str)"]),
    "duplicate-key": (
        retype("lr", "0.1\n  lr: 0.5"),
        ["params.yaml: line ", 'invalid YAML: found duplicate key "lr"'],
    ),
    "loss-unknown": (retype("loss", "mae"), ["params.yaml: train.loss: expected one of bce, mse", "found 'mae' (str)"]),
    "count-negative": (
        retype("train_per_class", "-5"),
        ["params.yaml: dataset.train_per_class: expected an integer >= 0", "found -5 (int)"],
    ),
    "count-fraction": (
        retype("test_per_class", "2.5"),
        ["params.yaml: dataset.test_per_class: expected an integer in [1, 10000]", "found 2.5 (float)"],
    ),
    "shift-beyond-the-frame": (
        retype("shift", "9"),
        ["params.yaml: dataset.shift: expected an integer in [0, 5]", "found 9 (int)"],
    ),
}


IN_A_SUBPROCESS = {"yaml-syntax", "yaml-bad-date", "lr-fast", "count-negative", "npy-truncated", "npz-is-an-npy"}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params_get_one_line_naming_file_key_allowed_and_found_and_write_nothing(copy, stage_runner, case):
    text, fragments = BAD_PARAMS[case]
    (copy / "params.yaml").write_text(text)
    before = snapshot(copy)
    proc = stage_runner("make_dataset", cwd=copy, subprocess=case in IN_A_SUBPROCESS)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    at = 0
    for fragment in fragments:
        at = line.find(fragment, at)
        assert at >= 0, f"{fragment!r} not in {line!r}"
    assert snapshot(copy) == before


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_every_stage_that_reads_params_refuses_bad_yaml_before_writing(copy, stage_runner, stage):
    (copy / "params.yaml").write_text(retype("per_class", "[1"))
    before = snapshot(copy)
    proc = stage_runner(stage, cwd=copy)
    assert proc.returncode == 2 and one_error_line(proc).startswith("error: params.yaml: line "), proc.stderr
    assert snapshot(copy) == before


# --- glyph files for predict ---------------------------------------------------------------------

GOOD_A = (ROOT / "data/samples/a.txt").read_bytes()


def test_predict_names_every_bad_glyph_file_and_its_line_and_still_predicts_the_good_ones(built, tmp_path):
    files = {
        "rows.txt": (b"......\n" * 4, "expected 5 rows of 6 pixels, found 4 rows"),
        "columns.txt": (b"......\n.....\n" + b"......\n" * 3, "line 2: expected 6 pixels, found 5 characters"),
        "letters.txt": (
            b"......\n......\n..x...\n......\n......\n",
            "line 3: expected only '#', '1', '.' or '0', found 'x'",
        ),
        "empty.txt": (b"", "expected 5 rows of 6 pixels, found 0 rows"),
        "binary.txt": (bytes(range(256)) * 4, "expected ASCII text, found byte 0x80 at offset 128"),
        "huge.txt": (GOOD_A * 200_000, "expected a glyph of about 40 bytes, found more than 4096 bytes"),
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "folder.txt").mkdir()
    expected = {name: message for name, (_, message) in files.items()}
    expected |= {"folder.txt": "expected a glyph file, found a directory", "missing.txt": "no such file"}

    args = ["data/samples/a.txt", *(str(tmp_path / name) for name in expected), "data/samples/c.txt"]
    proc = run_module("pipeline.predict", *args, cwd=built)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = proc.stderr.splitlines()
    assert len(errors) == len(expected), proc.stderr
    for line, (name, message) in zip(errors, expected.items()):
        assert line.startswith(f"error: {tmp_path / name}: {message}"), line
    assert [line.split(" (")[0] for line in proc.stdout.splitlines()] == [
        "data/samples/a.txt: A",
        "data/samples/c.txt: C",
    ]


def test_a_bad_sample_stops_the_predict_stage_without_touching_its_outputs(copy):
    (copy / "data/samples/zz_bad.txt").write_bytes(b"......\n" * 3 + b"..?...\n......\n")
    before = snapshot(copy)
    proc = run_module("pipeline.predict", cwd=copy)
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        "error: data/samples/zz_bad.txt: line 4: expected only '#', '1', '.' or '0', found '?'"
    )
    assert snapshot(copy) == before


def test_a_huge_glyph_file_is_refused_after_reading_only_what_a_glyph_needs(tmp_path, monkeypatch):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: reading it all would take seconds and a GiB of memory
    read = []

    class Counting(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            read.append(len(data))
            return data

        def readinto(self, buffer):
            n = super().readinto(buffer)
            read.append(n or 0)
            return n

        readall = None  # reading "everything" must not be how it reads

    monkeypatch.setattr(glyph_files, "open", lambda p, mode="rb", *a, **k: Counting(p, "r"), raising=False)
    with pytest.raises(PipelineError, match="found more than 4096 bytes"):
        glyph_files.read_glyph(path)
    assert read and sum(read) <= 64 * 1024, f"read {sum(read)} bytes of a 1 GiB file"


# --- files between stages --------------------------------------------------------------------------


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _huge_header() -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (10**12, 30)})
    return buf.getvalue() + bytes(90)


def _truncated(project: Path, name: str) -> bytes:
    data = (project / name).read_bytes()
    return data[: len(data) * 2 // 3]


def _bit_flipped_entry(project: Path, name: str) -> bytes:
    data = bytearray((project / name).read_bytes())
    data[data.index(b"\x93NUMPY") + 200] ^= 0xFF  # inside the first array: the zip CRC no longer matches
    return bytes(data)


def _with_integer_weights(path: Path) -> bytes:
    with np.load(path) as model:
        arrays = dict(model)
    return _npz(**arrays | {"w1": arrays["w1"].astype(np.int64)})


MISSING = object()  # the file deleted

# (file, its new content or a function of the project giving it, stage run, fragment of the one error line)
BAD_FILES = {
    "npy-missing": ("data/x_train.npy", MISSING, "train", "data/x_train.npy: missing; rerun `dvc repro make_dataset`"),
    "npy-labels-int64": (
        "data/y_train.npy",
        _npy(np.zeros(3, np.int64)),
        "train",
        "data/y_train.npy: expected dtype uint8, found int64",
    ),
    "npy-labels-too-many": (
        "data/y_train.npy",
        _npy(np.zeros(4, np.uint8)),
        "train",
        "data/y_train.npy: expected shape (3,), found (4,)",
    ),
    "npy-29-pixels": (
        "data/x_test.npy",
        _npy(np.zeros((4, 29), np.uint8)),
        "evaluate",
        "data/x_test.npy: expected shape (N, 30), found (4, 29)",
    ),
    "npy-pixel-7": (
        "data/x_test.npy",
        _npy(np.full((300, 30), 7, np.uint8)),
        "evaluate",
        "data/x_test.npy: expected pixels 0 or 1, found 7",
    ),
    "npz-no-w2": (
        "models/model.npz",
        _npz(w1=np.zeros((30, 5))),
        "predict",
        "models/model.npz: not a model file (missing array 'w2')",
    ),
    "npy-truncated": (
        "data/x_test.npy",
        lambda p: _truncated(p, "data/x_test.npy"),
        "evaluate",
        "data/x_test.npy: unreadable (Failed to read all data for array",
    ),
    "npy-empty": ("data/x_train.npy", b"", "train", "data/x_train.npy: unreadable (No data left in file)"),
    "npy-is-a-directory": (
        "data/y_train.npy",
        None,
        "train",
        "data/y_train.npy: expected a regular file, found a directory",
    ),
    "npy-pickled-objects": (
        "data/x_train.npy",
        _npy(np.array([{"a": 1}], dtype=object), True),
        "train",
        "data/x_train.npy: unreadable (",
    ),
    "npy-huge-header": (
        "data/x_train.npy",
        _huge_header(),
        "train",
        "data/x_train.npy: unreadable (Unable to allocate",
    ),
    "npy-is-an-npz": (
        "data/x_train.npy",
        _npz(x=np.zeros((3, 30), np.uint8)),
        "train",
        "data/x_train.npy: expected a .npy array, found an .npz archive",
    ),
    "npy-wrong-dtype": (
        "data/x_train.npy",
        _npy(np.zeros((3, 30), np.float64)),
        "train",
        "data/x_train.npy: expected dtype uint8, found float64",
    ),
    "npz-truncated": (
        "models/model.npz",
        lambda p: _truncated(p, "models/model.npz"),
        "predict",
        "models/model.npz: unreadable (File is not a zip file)",
    ),
    "npz-bit-flipped": (
        "models/model.npz",
        lambda p: _bit_flipped_entry(p, "models/model.npz"),
        "predict",
        "models/model.npz: unreadable (Bad CRC-32 for file ",
    ),
    "npz-is-an-npy": (
        "models/model.npz",
        _npy(np.zeros((30, 5))),
        "predict",
        "models/model.npz: expected an .npz archive, found a .npy array",
    ),
    "npz-wrong-weights": (
        "models/model.npz",
        lambda p: _with_integer_weights(p / "models/model.npz"),
        "predict",
        "models/model.npz: not a model file (expected 2-d float weights",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_damaged_file_between_stages_names_the_file_and_the_stage_to_rerun(copy, stage_runner, case):
    name, content, stage, fragment = BAD_FILES[case]
    path = copy / name
    content = content(copy) if callable(content) else content
    path.unlink()
    if content is None:
        path.mkdir()
    elif content is not MISSING:
        path.write_bytes(content)
    before = snapshot(copy)
    proc = stage_runner(stage, cwd=copy, subprocess=case in IN_A_SUBPROCESS)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert line.startswith(f"error: {fragment}"), line
    producer = "make_dataset" if name.startswith("data/") else "train"
    assert line.endswith(f"; rerun `dvc repro {producer}`"), line
    assert snapshot(copy) == before


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_unknown_options_get_argparse_usage_and_name_the_option(built, stage):
    proc = run_module(f"pipeline.{stage}", "-x", "--bogus=1", cwd=built)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"usage: python -m pipeline.{stage}"), proc.stderr
    assert lines[-1] == f"python -m pipeline.{stage}: error: unrecognized arguments: -x --bogus=1", proc.stderr
    assert proc.stdout == ""


def test_predict_model_option_errors(built, tmp_path):
    missing_value = run_module("pipeline.predict", "data/samples/a.txt", "--model", cwd=built)
    assert missing_value.returncode == 2
    assert missing_value.stderr.splitlines()[-1] == (
        "python -m pipeline.predict: error: argument --model: expected one argument"
    )
    a_directory = run_module("pipeline.predict", "--model", str(tmp_path), "data/samples/a.txt", cwd=built)
    assert a_directory.returncode == 2
    assert one_error_line(a_directory) == (
        f"error: {tmp_path}: expected a regular file, found a directory; rerun `dvc repro train`"
    )
