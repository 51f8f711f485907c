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
import struct
import sys
import time
import zipfile
import zlib
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


IN_A_SUBPROCESS = {
    "yaml-syntax",
    "yaml-bad-date",
    "lr-fast",
    "count-negative",
    "npy-truncated",
    "npz-is-an-npy",
    "npz-2-classes",
    "npz-trace-no-epochs",
}


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
        "columns.txt": (
            b"......\n.....\n" + b"......\n" * 3,
            "line 2: expected 6 pixels ('#' or '1' for ink, '.' or '0' for blank), found 5 characters",
        ),
        "letters.txt": (
            b"......\n......\n..x...\n......\n......\n",
            "line 3: expected only '#' or '1' for ink, '.' or '0' for blank, found 'x'",
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
        "error: data/samples/zz_bad.txt: line 4: expected only '#' or '1' for ink, '.' or '0' for blank, found '?'"
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


def _model_edited(path: Path, **changes) -> bytes:
    """The model at `path` with some arrays replaced (a function of the old arrays each)."""
    with np.load(path) as model:
        arrays = dict(model)
    return _npz(**arrays | {key: change(arrays) for key, change in changes.items()})


def _model_without(path: Path, key: str) -> bytes:
    with np.load(path) as model:
        return _npz(**{name: model[name] for name in model if name != key})


def _model_with_classes(names: tuple[str, ...]):
    """A model consistent in itself (w2, sizes and names agree) but with `names` as its classes."""

    def w2(a):
        return np.resize(a["w2"], (a["w2"].shape[0], len(names)))

    return lambda p: _model_edited(
        p / "models/model.npz",
        w2=w2,
        classes=lambda a: np.array(names, dtype="<U1"),
        sizes=lambda a: np.array([30, a["w1"].shape[1], len(names)]),
    )


def _with_nan(key: str, value: float = np.nan):
    def change(a):
        array = a[key].copy()
        array.flat[0] = value
        return array

    return change


def _trace_edited(project: Path, **changes) -> bytes:
    with np.load(project / "models/trace.npz") as trace:
        arrays = dict(trace)
    return _npz(**arrays | {key: change(arrays) for key, change in changes.items()})


def _history_with(line: str):
    def content(project: Path) -> bytes:
        lines = (project / "metrics/history.tsv").read_text().splitlines()
        lines[2] = line
        return ("\n".join(lines) + "\n").encode()

    return content


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
    # crafted models that are zip-sound and self-consistent, but not what training writes (issue 17, item 8)
    "npz-0-classes": (
        "models/model.npz",
        _model_with_classes(()),
        "predict",
        "models/model.npz: not a model file (expected the classes training writes, A, B, C, found )",
    ),
    "npz-2-classes": (
        "models/model.npz",
        _model_with_classes(("A", "B")),
        "evaluate",
        "models/model.npz: not a model file (expected the classes training writes, A, B, C, found A, B)",
    ),
    "npz-4-classes": (
        "models/model.npz",
        _model_with_classes(("A", "B", "C", "D")),
        "evaluate",
        "models/model.npz: not a model file (expected the classes training writes, A, B, C, found A, B, C, D)",
    ),
    "npz-0-hidden": (
        "models/model.npz",
        lambda p: _model_edited(
            p / "models/model.npz",
            w1=lambda a: a["w1"][:, :0],
            w2=lambda a: a["w2"][:0],
            sizes=lambda a: np.array([30, 0, 3]),
        ),
        "predict",
        "models/model.npz: not a model file (expected 1 to 512 hidden units (train.hidden's limits), found 0)",
    ),
    "npz-sizes-a-string": (
        "models/model.npz",
        lambda p: _model_edited(p / "models/model.npz", sizes=lambda a: np.array("30 5 3")),
        "predict",
        "models/model.npz: not a model file (inconsistent layer sizes: w1 (30, 5), w2 (5, 3), sizes '30 5 3')",
    ),
    # NaN weights: predict printed `A (nan)` and evaluate wrote `NaN` into metrics.json (item 10)
    "npz-nan-weight": (
        "models/model.npz",
        lambda p: _model_edited(p / "models/model.npz", w1=_with_nan("w1")),
        "predict",
        "models/model.npz: not a model file (expected finite float64 weights below 2^64 in size, found NaN in w1)",
    ),
    "npz-infinite-weight": (
        "models/model.npz",
        lambda p: _model_edited(p / "models/model.npz", w2=_with_nan("w2", -np.inf)),
        "evaluate",
        "models/model.npz: not a model file (expected finite float64 weights below 2^64 in size, found -inf in w2)",
    ),
    "npz-huge-weight": (  # finite, but the forward pass overflows: predict printed `A (nan)`
        "models/model.npz",
        lambda p: _model_edited(p / "models/model.npz", w1=_with_nan("w1", 1e308)),
        "predict",
        "models/model.npz: not a model file (expected finite float64 weights below 2^64 in size, found 1e+308 in w1)",
    ),
    "npz-float16-weights": (
        "models/model.npz",
        lambda p: _model_edited(
            p / "models/model.npz", w1=lambda a: a["w1"].astype(np.float16), w2=lambda a: a["w2"].astype(np.float16)
        ),
        "predict",
        "models/model.npz: not a model file (expected 2-d float weights, found w1 float16(30, 5)",
    ),
    "npz-glyphs-without-labels": (
        "models/model.npz",
        lambda p: _model_without(p / "models/model.npz", "train_labels"),
        "predict",
        "models/model.npz: not a model file (expected train_glyphs and train_labels together, found only train_glyphs)",
    ),
    "npz-glyphs-float": (
        "models/model.npz",
        lambda p: _model_edited(p / "models/model.npz", train_glyphs=lambda a: a["train_glyphs"].astype(float)),
        "predict",
        "models/model.npz: not a model file (expected train_glyphs, uint8 (1 to 65536, 30), found float64(3, 30))",
    ),
    "npz-glyphs-none": (
        "models/model.npz",
        lambda p: _model_edited(
            p / "models/model.npz",
            train_glyphs=lambda a: a["train_glyphs"][:0],
            train_labels=lambda a: a["train_labels"][:0],
        ),
        "evaluate",
        "models/model.npz: not a model file (expected train_glyphs, uint8 (1 to 65536, 30), found uint8(0, 30))",
    ),
    "npz-glyph-labels-short": (
        "models/model.npz",
        lambda p: _model_edited(p / "models/model.npz", train_labels=lambda a: a["train_labels"][:2]),
        "predict",
        "models/model.npz: not a model file (expected train_labels, uint8 (3,), found uint8(2,))",
    ),
    "npz-glyphs-not-pixels": (
        "models/model.npz",
        lambda p: _model_edited(p / "models/model.npz", train_glyphs=lambda a: a["train_glyphs"] * 255),
        "predict",
        "models/model.npz: not a model file (expected pixels 0 or 1 and labels below 3, found 255 and 2)",
    ),
    "npz-glyph-labels-beyond-the-classes": (
        "models/model.npz",
        lambda p: _model_edited(p / "models/model.npz", train_labels=lambda a: a["train_labels"] + 7),
        "explore",
        "models/model.npz: not a model file (expected pixels 0 or 1 and labels below 3, found 1 and 9)",
    ),
    "npz-trace-no-epochs": (
        "models/trace.npz",
        lambda p: _trace_edited(p, **{key: (lambda a, k=key: a[k][:0]) for key in ("epoch", "w1", "w2")}),
        "explore",
        "models/trace.npz: expected epochs 0, 1, ... in order, found int64(0,)",
    ),
    "npz-trace-nan": (
        "models/trace.npz",
        lambda p: _trace_edited(p, w2=_with_nan("w2")),
        "explore",
        "models/trace.npz: w2: expected finite weights, found NaN or infinity",
    ),
    "npz-trace-w2-missing": (
        "models/trace.npz",
        lambda p: _trace_edited(p, w2=lambda a: a["w2"][:, :, :2]),
        "explore",
        "models/trace.npz: w2: expected the weights of models/model.npz per epoch, float64(301, 5, 3), found",
    ),
    "npy-empty-training-set": (
        "data/x_train.npy",
        _npy(np.zeros((0, 30), np.uint8)),
        "train",
        "data/x_train.npy: expected at least one glyph, found none",
    ),
    "npy-empty-test-set": (
        "data/x_test.npy",
        _npy(np.zeros((0, 30), np.uint8)),
        "evaluate",
        "data/x_test.npy: expected at least one glyph, found none",
    ),
    "tsv-nan": (
        "metrics/history.tsv",
        _history_with("2\tnan\t0.5"),
        "explore",
        "metrics/history.tsv: line 3: expected finite numbers, found 2, nan, 0.5",
    ),
    "tsv-infinite": (
        "metrics/history.tsv",
        _history_with("2\t0.5\tinf"),
        "evaluate",
        "metrics/history.tsv: line 3: expected finite numbers, found 2, 0.5, inf",
    ),
    "tsv-step-out-of-order": (
        "metrics/history.tsv",
        _history_with("9.223372036854776e+18\t0.5\t1"),
        "evaluate",
        "metrics/history.tsv: line 3: expected step 2, found 9.22337e+18",
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
    producer = "make_dataset" if name.startswith("data/") else "train"  # models/ and metrics/history.tsv
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


@pytest.mark.parametrize(
    "directory,module,args",
    [
        ("data/samples", "pipeline.predict", ["a.txt"]),
        ("data/samples", "pipeline.predict", []),
    ],
)
def test_a_command_run_outside_the_project_root_says_to_run_it_from_the_root(built, directory, module, args):
    proc = run_module(module, *args, cwd=built / directory)
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: models/model.npz: missing here, in {built / directory}, which is not the project root "
        "(no dvc.yaml); run the command from the project root"
    )
    assert proc.stdout == ""
    stage = run_module("pipeline.evaluate", cwd=built / directory)  # a stage reads params.yaml first
    assert one_error_line(stage) == "error: params.yaml: no such file; run from the project root"


# --- arrays that load, but not as the stages wrote them ----------------------------------------------


def test_a_fortran_order_training_set_gives_the_same_outputs_as_the_c_order_one(built, copy):
    """np.save of a transposed array writes Fortran order: the same values, which predict and explore
    crashed on (a view needs the last axis contiguous). The loader makes it C-contiguous, so every stage
    computes exactly what it does on the file make_dataset writes."""
    x = np.load(copy / "data/x_train.npy")
    np.save(copy / "data/x_train.npy", np.asfortranarray(x))
    assert np.load(copy / "data/x_train.npy").flags.f_contiguous
    for stage in ("predict", "explore", "evaluate"):
        proc = run_module(f"pipeline.{stage}", cwd=copy)
        assert proc.returncode == 0, proc.stderr
    for name in (
        "metrics/predictions.json",
        "metrics/explorer.html",
        "metrics/metrics.json",
        "metrics/images/samples.png",
    ):
        assert (copy / name).read_bytes() == (built / name).read_bytes(), name


def zip_bomb(npz: bytes, size: int, name: str = "bomb.npy") -> bytes:
    """The archive `npz` plus an entry `name`: a valid .npy of `size` zero bytes (a multiple of 1 MiB),
    deflated to about size / 1000 bytes, as the issue's 2 MB file with a 2 GiB entry."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
    header = header.getvalue()
    mib = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    chunk = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)  # after a full flush, every MiB deflates the same
    stream = head + chunk * (size >> 20) + c.flush()
    crc = zlib.crc32(header)
    for _ in range(size >> 20):
        crc = zlib.crc32(mib, crc)
    buf = io.BytesIO(npz)
    with zipfile.ZipFile(buf, "a") as archive:  # written stored, then its headers say deflated, CRC and size
        archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), stream)
        local = archive.getinfo(name).header_offset
    data = bytearray(buf.getvalue())
    central = data.rindex(b"PK\x01\x02")  # the new entry's central directory record, the last one
    for method in (local + 8, central + 10):  # then CRC at +6, compressed size at +10, size at +14
        data[method : method + 2] = struct.pack("<H", zipfile.ZIP_DEFLATED)
        data[method + 6 : method + 10] = struct.pack("<I", crc)
        data[method + 14 : method + 18] = struct.pack("<I", len(header) + size)
    return bytes(data)


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The names of the zip entries opened for reading from now on."""
    names: list[str] = []
    real_open = zipfile.ZipFile.open

    def recording_open(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            names.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    return names


def test_a_zip_bomb_beside_the_model_is_never_inflated(built, tmp_path, opened):
    """A 2 MB model file with an extra entry of 2 GiB cost 2.1 GB and 8-14 s in every stage: the
    loader read every entry. Now it reads only the entries a model has."""
    from pipeline.checkpoint import load_network

    model_entries = {
        f"{key}.npy"
        for key in ("w1", "w2", "sizes", "classes", "loss", "activation", "bias", "trained_on", "train_glyphs")
    } | {"train_labels.npy"}

    bomb = tmp_path / "model.npz"
    bomb.write_bytes(zip_bomb((built / "models/model.npz").read_bytes(), 2 << 30))
    assert bomb.stat().st_size < 3_000_000
    with zipfile.ZipFile(bomb) as archive:
        assert archive.getinfo("bomb.npy").file_size > 2 << 30
    net = load_network(bomb, 30)
    assert net.classes == ("A", "B", "C")
    assert "bomb.npy" not in opened and set(opened) <= model_entries
    start = time.perf_counter()
    proc = run_module("pipeline.predict", "--model", str(bomb), "data/samples/b.txt", cwd=built)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "data/samples/b.txt: B (0.94)\n"
    assert time.perf_counter() - start < 5


def test_a_zip_bomb_in_the_trace_is_never_inflated(copy, stage_runner, opened):
    trace = copy / "models/trace.npz"
    trace.write_bytes(zip_bomb(trace.read_bytes(), 1 << 30))
    proc = stage_runner("explore", cwd=copy)
    assert proc.returncode == 0, proc.stderr
    assert "bomb.npy" not in opened


def _entry_replaced(npz: bytes, name: str, content: bytes, deflated: bool = False) -> bytes:
    """`npz` with its entry `name` holding `content` instead."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(npz)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename == name:
                dst.writestr(name, content, zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED)
            else:
                dst.writestr(info, src.read(info))
    return out.getvalue()


@pytest.mark.parametrize(
    "content, deflated, found",
    [
        # a needed entry beyond any model training writes (512 hidden units: 123 kB): refused unread
        (_npy(np.zeros((30, 40_000))), True, "w1.npy: expected at most 8388608 bytes, found an entry of 9600128"),
        # the .npy header and the zip entry disagree on the size: trailing bytes, or a shape the data lacks
        (
            _npy(np.zeros((30, 5))) + bytes(1000),
            False,
            "w1.npy: its .npy header declares 1200 bytes of data, its zip entry holds 2200",
        ),
        (
            _npy(np.zeros((30, 5)))[:-8],
            False,
            "w1.npy: its .npy header declares 1200 bytes of data, its zip entry holds 1192",
        ),
    ],
    ids=["too-large", "trailing-bytes", "short"],
)
def test_each_model_entry_is_checked_against_its_declared_sizes_before_it_is_read(
    built, tmp_path, content, deflated, found
):
    path = tmp_path / "model.npz"
    path.write_bytes(_entry_replaced((built / "models/model.npz").read_bytes(), "w1.npy", content, deflated))
    proc = run_module("pipeline.predict", "--model", str(path), "data/samples/b.txt", cwd=built)
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc) == f"error: {path}: {found}; rerun `dvc repro train`"


def test_json_never_gets_nan_or_infinity(tmp_path):
    """Python's json writes NaN and Infinity, which no JSON reader (DVC's, a browser's) accepts."""
    from pipeline.writing import save_json

    path = tmp_path / "metrics.json"
    path.write_text("{}\n")
    for value, shown in ((float("nan"), "nan"), (np.float32("inf"), "inf"), (-np.inf, "-inf")):
        with pytest.raises(PipelineError) as err:
            save_json(path, {"train": {"loss": 0.5, "per_noise": [1.0, value]}})
        assert str(err.value) == f"{path}: train.per_noise[1]: expected a finite number, found {shown}; not written"
        assert path.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_explorer_page_never_gets_nan(copy, stage_runner, monkeypatch):
    """Were a NaN to pass the loaders (here: a history loader that lets one through), the page would
    fail in the browser (`JSON.parse`); the stage refuses it in one line and keeps the old page."""
    from pipeline import artifacts, explore

    def history_with_nan(path=None):
        history = artifacts.load_history()
        history["loss"][1] = np.nan
        return history

    monkeypatch.setattr(explore, "load_history", history_with_nan)
    before = snapshot(copy)
    proc = stage_runner("explore", cwd=copy)
    assert proc.returncode == 2, proc.stderr
    assert (
        one_error_line(proc)
        == "error: metrics/explorer.html: history.loss[1]: expected a finite number, found nan; not written"
    )
    assert snapshot(copy) == before
