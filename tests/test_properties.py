"""Property-based tests: no input makes the parsers raise anything but a one-line PipelineError.

params.yaml (load_params, parse_section), glyph files (parse_glyph, read_glyph) and the arrays passed
between stages (load_npy, load_npz) are where a person's file meets the code. Hypothesis feeds them
arbitrary YAML documents, values, text and bytes; each either parses into something that meets the
spec written out below (independently of the code's own checks), or is refused by a PipelineError
whose message is one line naming the file.
"""

from __future__ import annotations

import copy
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.artifacts import load_history
from pipeline.checkpoint import from_arrays, load_network, to_arrays
from pipeline.errors import PipelineError
from pipeline.glyph_files import read_glyph
from pipeline.glyphs import CLASSES, parse_glyph
from pipeline.model import init_network
from pipeline.params import DatasetParams, EvaluateParams, TrainParams, load_params, parse_section
from pipeline.reading import load_npy, load_npz
from pipeline.writing import save_npz
from tests.conftest import ROOT

# No example database (no .hypothesis/ in the project) and no deadline (first calls import lazily).
SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FEW = settings(SETTINGS, max_examples=100)

COMMITTED = yaml.safe_load((ROOT / "params.yaml").read_text())


def _count(low):
    return lambda v: type(v) is int and v >= low


def _count_in(low, high):
    return lambda v: type(v) is int and low <= v <= high


def _number(ok):
    return lambda v: type(v) is float and math.isfinite(v) and ok(v)


# What each key may hold once loaded, written from docs/inputs-and-limits.md and params.yaml, not from params.py.
SPEC = {
    ("dataset", "seed"): _count(0),
    ("dataset", "noise"): _number(lambda v: 0 <= v <= 1),
    ("dataset", "train_per_class"): _count(0),
    ("dataset", "test_per_class"): _count_in(1, 10_000),
    ("dataset", "shift"): lambda v: type(v) is int and 0 <= v <= 5,
    ("train", "hidden"): _count_in(1, 512),
    ("train", "lr"): _number(lambda v: v > 0),
    ("train", "epochs"): _count_in(0, 10_000),
    ("train", "batch_size"): _count(1),
    ("train", "loss"): lambda v: v in ("bce", "mse"),
    ("train", "bias"): lambda v: type(v) is bool,
    ("train", "seed"): _count(0),
    ("train", "shuffle"): lambda v: type(v) is bool,
    ("train", "dtype"): lambda v: v in ("float64", "float32"),
    ("evaluate", "noise_levels"): lambda v: (
        type(v) is tuple and 0 < len(v) <= 20 and all(_number(lambda x: 0 <= x <= 1)(x) for x in v)
    ),
    ("evaluate", "per_class"): _count(1),
    ("evaluate", "seed"): _count(0),
}
# The memory bound of a whole run (docs/inputs-and-limits.md): with the other keys at their defaults, about
# 5 million noisy copies per letter fit, and about 1.9 million evaluate glyphs per letter; far beyond, refused.
FITS = {("dataset", "train_per_class"): (5_000_000, 6_000_000), ("evaluate", "per_class"): (1_900_000, 2_100_000)}


def meets(key: tuple[str, str], value) -> bool:
    """Whether a value load_params accepted (the other keys at their defaults) is one it may accept."""
    return SPEC[key](value) and (key not in FITS or value <= FITS[key][1])


SECTIONS = {"dataset": DatasetParams, "train": TrainParams, "evaluate": EvaluateParams}


def _as_float(value) -> float | None:
    """An int or float YAML value as the float it stands for; None for others and for ints beyond floats."""
    if type(value) not in (int, float) or abs(value) > 1.7e308:
        return None
    return float(value)


def _acceptable_input(key: tuple[str, str], value) -> bool:
    """Whether a YAML value must be accepted for `key`: the loaded form of it meets SPEC."""
    if key in (("dataset", "noise"), ("train", "lr")):  # numbers: ints and floats alike
        return _as_float(value) is not None and SPEC[key](_as_float(value))
    if key in FITS:
        return SPEC[key](value) and value <= FITS[key][0]
    if key == ("evaluate", "noise_levels"):
        return (
            type(value) is list
            and 0 < len(value) <= 20
            and all(_as_float(x) is not None and SPEC[("dataset", "noise")](_as_float(x)) for x in value)
        )
    return SPEC[key](value)


def assert_one_line_naming(err: PipelineError, prefix: str) -> None:
    message = str(err)
    assert message.startswith(prefix), message
    assert len(message.splitlines()) == 1 and "\n" not in message and "\r" not in message, repr(message)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["bce", "mse", "float32", "float64", "1e-3"])
)
yaml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=12,
)
section_names = st.sampled_from(["dataset", "train", "evaluate", "trian"]) | st.text(max_size=8)
# Whole documents: arbitrary structures, and mappings whose sections and keys are often the real ones.
documents = yaml_values | st.dictionaries(
    section_names,
    st.dictionaries(st.sampled_from([k for _, k in SPEC]) | st.text(max_size=6), yaml_values, max_size=10)
    | yaml_values,
    max_size=4,
)

# Values as a person types them after `key: `, so the YAML reader's own conversions are exercised too.
TRICKY_SCALARS = [
    "2023-13-01",
    "2023-01-01",
    "!!float abc",
    "!!int abc",
    "!!timestamp abc",
    "!!binary ~~~",
    "9" * 400,
    "-" + "9" * 400,
    "9" * 5000,
    "1e-3",
    "1e999",
    "-1e-3",
    ".nan",
    ".inf",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "1:30",
    "~",
    "yes",
    "no",
    "On",
    "'0.1'",
    "[1, 2]",
    "{a: 1}",
    "&a 1",
    "*a",
    "!!python/object:os.system x",
    "[",
    "{",
    "'",
    '"\\x"',
    "|",
    ">",
    "@",
    "`",
    "%x",
    "0.1 #",
]
raw_scalars = st.sampled_from(TRICKY_SCALARS) | st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="\x85"), max_size=16
)


def write_params(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def load_or_refuse(path: Path):
    try:
        return load_params(path)
    except PipelineError as err:
        assert_one_line_naming(err, f"{path}: ")
        return None


@FEW
@given(doc=documents)
@example(doc=COMMITTED)
def test_any_yaml_document_loads_or_is_refused_in_one_line(tmp_path, doc):
    params = load_or_refuse(write_params(tmp_path, yaml.safe_dump(doc)))
    if params is not None:
        for (section, key), ok in SPEC.items():
            assert ok(getattr(getattr(params, section), key)), (section, key)


@SETTINGS
@given(text=st.text())
@example(text="[" * 600 + "]" * 600)  # deeper than PyYAML's recursive composer can go
@example(text="train:\n  lr: 0.1\n lr: 2\n")
def test_any_text_as_params_yaml_loads_or_is_refused_in_one_line(tmp_path, text):
    load_or_refuse(write_params(tmp_path, text))


@FEW
@given(data=st.binary())
@example(data=b"\xff\xfe\x00train")
@example(data=b"train: {lr: 0.1}\x00")
def test_any_bytes_as_params_yaml_load_or_are_refused_in_one_line(tmp_path, data):
    load_or_refuse(write_params(tmp_path, data))


@settings(SETTINGS, max_examples=150)
@given(key=st.sampled_from(sorted(SPEC)), value=yaml_values)
@example(key=("train", "lr"), value=10**400)
@example(key=("train", "epochs"), value=True)
@example(key=("evaluate", "noise_levels"), value=[0.1, -(10**400)])
def test_any_value_for_any_key_is_accepted_exactly_when_the_spec_allows_it(tmp_path, key, value):
    section, name = key
    doc = copy.deepcopy(COMMITTED)
    doc[section][name] = value
    path = write_params(tmp_path, yaml.safe_dump(doc, sort_keys=False))
    try:
        loaded = getattr(getattr(load_params(path), section), name)
    except PipelineError as err:
        assert_one_line_naming(err, f"{path}: {section}.{name}: expected ")
        assert " found " in str(err)
        assert not _acceptable_input(key, value), f"{value!r} refused for {section}.{name}: {err}"
    else:
        assert meets(key, loaded), f"{value!r} accepted for {section}.{name} as {loaded!r}"


@settings(SETTINGS, max_examples=150)
@given(key=st.sampled_from(sorted(SPEC)), raw=raw_scalars)
def test_any_typed_value_for_any_key_loads_or_is_refused_in_one_line(tmp_path, key, raw):
    """The committed file with one value retyped by hand, so YAML's own scalar rules apply."""
    section, name = key
    text = (ROOT / "params.yaml").read_text()
    pattern = re.compile(rf"^(  {name}: )[^#\n]*", re.M)
    start = text.index(f"\n{section}:\n")
    edited = text[:start] + pattern.sub(lambda m: m.group(1) + raw + " ", text[start:], count=1)
    params = load_or_refuse(write_params(tmp_path, edited))
    if params is not None:
        assert meets(key, getattr(getattr(params, section), name)), raw


@SETTINGS
@given(section=st.sampled_from(sorted(SECTIONS)), raw=yaml_values)
def test_parse_section_builds_or_refuses_any_value(section, raw):
    try:
        parsed = parse_section(SECTIONS[section], section, raw, Path("p.yaml"))
    except PipelineError as err:
        assert_one_line_naming(err, f"p.yaml: {section}")
    else:
        for (sec, key), ok in SPEC.items():
            if sec == section:
                assert ok(getattr(parsed, key)), key


# Glyph files: mostly near-glyphs (a few lines of a few of the glyph characters), so the parser's
# deeper branches are reached, and plain arbitrary text.
glyph_chars = st.sampled_from(list("#1.0") * 6 + list(" \t\x0bx2\u00a0\u2028\ufeff"))
glyph_lines = st.lists(st.text(glyph_chars, min_size=0, max_size=8), min_size=0, max_size=8)
near_glyphs = st.builds(lambda lines, sep: sep.join(lines), glyph_lines, st.sampled_from(["\n", "\r\n", "\r"]))
glyph_texts = near_glyphs | st.text()


def reference_glyph(text: str) -> list[int] | None:
    """The pixels of `text` by the README's format, or None if it is not a glyph (independent of glyphs.py)."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    if len(lines) != 5 or any(len(line) != 6 or set(line) - set("#1.0") for line in lines):
        return None
    return [1 if ch in "#1" else 0 for line in lines for ch in line]


@SETTINGS
@given(text=glyph_texts)
@example(text="..##..\n.#..#.\n######\n#....#\n#....#\n")
def test_any_text_parses_as_the_format_says_or_is_refused_in_one_line(text):
    expected = reference_glyph(text)
    try:
        glyph = parse_glyph(text, "g.txt")
    except PipelineError as err:
        assert_one_line_naming(err, "g.txt: ")
        assert expected is None, f"a valid glyph refused: {err}"
        line = re.match(r"g\.txt: line (\d+): ", str(err))
        if line:  # the line named is one of the text's lines
            assert 1 <= int(line.group(1)) <= len(text.splitlines())
    else:
        assert glyph.dtype == np.uint8 and glyph.shape == (30,)
        assert glyph.tolist() == expected


@SETTINGS
@given(
    data=st.binary(max_size=200)
    | glyph_texts.map(lambda t: t.encode("utf-8"))
    | glyph_texts.map(lambda t: t.encode("utf-16"))
    | st.binary(min_size=4090, max_size=4200)
)
def test_any_bytes_in_a_glyph_file_read_or_are_refused_in_one_line(tmp_path, data):
    path = tmp_path / "glyph.txt"
    path.write_bytes(data)
    try:
        glyph = read_glyph(path)
    except PipelineError as err:
        assert_one_line_naming(err, f"{path}: ")
    else:
        assert glyph.tolist() == reference_glyph(data.decode("utf-8"))


# Files between stages: arbitrary bytes, and real .npy/.npz files truncated, with a byte changed,
# or of the other kind, are loaded and checked or refused naming the file and the stage to rerun.
def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD_NPY = _npy(np.eye(3, 30, dtype=np.uint8))
GOOD_NPZ = _npz(w1=np.ones((30, 5)), w2=np.ones((5, 3)))


def _damaged(good: bytes):
    return (
        st.binary(max_size=300)
        | st.integers(0, len(good) - 1).map(lambda n: good[:n])
        | st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)).map(
            lambda t: good[: t[0]] + bytes([good[t[0]] ^ t[1]]) + good[t[0] + 1 :]
        )
        | st.sampled_from([_npz(a=np.zeros(3)), _npy(np.zeros((3, 30), np.uint8)), _npy(np.zeros(2, object))])
    )


@FEW
@given(data=_damaged(GOOD_NPY))
@example(data=_npz(x=np.zeros((3, 30), np.uint8)))  # an .npz archive where an .npy belongs
@example(data=b"\x93NUMPY\x01\x00\x06\x00\x00\x00\x00'''")  # numpy's header tokenizer: TokenError
@example(data=b"\x93NUMPY\x01\x00\x07\x00   ''\n ")  # and IndentationError
def test_any_bytes_as_an_npy_file_load_checked_or_are_refused_in_one_line(tmp_path, data):
    path = tmp_path / "x.npy"
    path.write_bytes(data)
    try:
        array = load_npy(path, np.uint8, (None, 30), "make_dataset")
    except PipelineError as err:
        assert_one_line_naming(err, f"{path}: ")
        assert str(err).endswith("; rerun `dvc repro make_dataset`")
    else:
        assert isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.ndim == 2 and array.shape[1] == 30


@FEW
@given(data=_damaged(GOOD_NPZ))
@example(data=_npy(np.zeros((30, 5))))  # an .npy array where an .npz archive belongs
@example(data=GOOD_NPZ[: len(GOOD_NPZ) // 2])  # np.load leaked the file handle of a broken zip
def test_any_bytes_as_an_npz_file_load_or_are_refused_in_one_line(tmp_path, data):
    path = tmp_path / "model.npz"
    path.write_bytes(data)
    try:
        arrays = load_npz(path, "train", ("w1", "w2"), 1 << 20)
    except PipelineError as err:
        assert_one_line_naming(err, f"{path}: ")
        assert str(err).endswith("; rerun `dvc repro train`")
    else:
        assert all(isinstance(a, np.ndarray) for a in arrays.values())


def test_an_npy_header_promising_terabytes_is_refused_not_allocated(tmp_path):
    path = tmp_path / "x.npy"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (10**12, 30)})
    path.write_bytes(buf.getvalue() + bytes(90))
    with pytest.raises(PipelineError) as err:
        load_npy(path, np.uint8, (None, 30), "make_dataset")
    assert_one_line_naming(err.value, f"{path}: ")
    assert str(err.value).endswith("; rerun `dvc repro make_dataset`")


# --- hostile model, trace and history files (issue 17, items 8 to 10) ----------------------------------

DTYPES = ["<f8", "<f4", "<f2", ">f8", "<i8", "|u1", "|b1", "<U3", "|S3", "<c16"]
SPECIALS = [np.nan, np.inf, -np.inf, 1e308, -0.0, 5e-324]


@st.composite
def hostile_arrays(draw) -> np.ndarray:
    """An array of any small shape (empty axes too) and dtype, floats with NaN, infinities and extremes."""
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    array = np.zeros(shape, dtype)
    if array.size and dtype.kind in "fc":
        with np.errstate(over="ignore"):  # 1e308 is infinite in float16 and float32
            array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from(SPECIALS))
    return np.asfortranarray(array) if draw(st.booleans()) else array


def _valid_model(hidden: int, bias: bool) -> dict[str, np.ndarray]:
    net = init_network(np.random.default_rng(0), 30, hidden, CLASSES, "bce", bias)
    return to_arrays(net)


@st.composite
def hostile_archives(draw, valid: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`valid`'s arrays with some removed, some replaced by hostile ones or given a NaN, and others added."""
    arrays = dict(valid)
    for key in draw(st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True)):
        action = draw(st.sampled_from(["drop", "replace", "nan", "transpose"]))
        if action == "drop":
            del arrays[key]
        elif action == "replace":
            arrays[key] = draw(hostile_arrays())
        elif arrays[key].dtype.kind == "f" and arrays[key].size:
            arrays[key] = arrays[key].copy()
            with np.errstate(over="ignore"):
                arrays[key].flat[draw(st.integers(0, arrays[key].size - 1))] = draw(st.sampled_from(SPECIALS))
        else:
            arrays[key] = arrays[key].T
    for key in draw(st.lists(st.text("abcz_1", min_size=1, max_size=4), max_size=2)):
        arrays[key] = draw(hostile_arrays())
    return arrays


def _write_archive(path: Path, arrays: dict[str, np.ndarray], how: str) -> bytes:
    if how == "compressed":
        np.savez_compressed(path, **arrays)
    elif how == "savez":
        np.savez(path, **arrays)
    else:
        save_npz(path, arrays)
    return path.read_bytes()


@FEW
@given(
    valid=st.builds(_valid_model, st.integers(1, 6), st.booleans()).flatmap(hostile_archives),
    how=st.sampled_from(["ours", "savez", "compressed"]),
)
def test_a_hostile_model_file_loads_as_a_model_training_could_write_or_is_refused_in_one_line(tmp_path, valid, how):
    path = tmp_path / "model.npz"
    data = _write_archive(path, valid, how)
    try:
        net = load_network(path, 30)
    except PipelineError as err:
        assert_one_line_naming(err, f"{path}: ")
        assert str(err).endswith("; rerun `dvc repro train`")
    else:  # what docs/inputs-and-limits.md promises of a loaded model, checked without the loader's own code
        hidden = net.w1.shape[1]
        assert net.classes == ("A", "B", "C") and hidden >= 1 and net.w1.shape == (30, hidden)
        assert net.w1.dtype in (np.float64, np.float32) and net.w1.dtype.isnative
        for w in (net.w1, net.w2, net.b1, net.b2):
            assert w is None or (w.dtype == net.w1.dtype and w.flags.c_contiguous and (np.abs(w) < 2.0**64).all())
        assert net.w2.shape == (hidden, 3) and (net.b1 is None or net.b1.shape == (hidden,))
    assert path.read_bytes() == data  # nothing changed or removed


@FEW
@given(data=st.data(), hidden=st.integers(1, 4), epochs=st.integers(1, 4), how=st.sampled_from(["ours", "savez"]))
def test_a_hostile_trace_loads_checked_or_is_refused_in_one_line(tmp_path, monkeypatch, data, hidden, epochs, how):
    from pipeline.explore import load_trace

    monkeypatch.chdir(tmp_path)
    net = from_arrays(_valid_model(hidden, False), 30)
    valid = {
        "epoch": np.arange(epochs, dtype=np.int64),
        "w1": np.stack([net.w1] * epochs),
        "w2": np.stack([net.w2] * epochs),
    }
    Path("models").mkdir(exist_ok=True)
    written = _write_archive(Path("models/trace.npz"), data.draw(hostile_archives(valid)), how)
    try:
        trace = load_trace(net, epochs - 1)
    except PipelineError as err:
        assert_one_line_naming(err, "models/trace.npz: ")
        assert str(err).endswith("; rerun `dvc repro train`")
    else:
        n = len(trace["epoch"])
        assert n >= 1 and trace["epoch"][0] == 0 and (np.diff(trace["epoch"]) > 0).all()
        assert trace["w1"].shape == (n, 30, hidden) and np.isfinite(trace["w1"]).all()
        assert np.array_equal(trace["w1"][-1], net.w1) and np.array_equal(trace["w2"][-1], net.w2)
    assert Path("models/trace.npz").read_bytes() == written


history_cells = st.sampled_from(["1", "0.5", "nan", "NaN", "inf", "-inf", "1e999", "", "x", "2"]) | st.floats().map(str)


@FEW
@given(rows=st.lists(st.lists(history_cells, min_size=2, max_size=4), max_size=5))
@example(rows=[["1", "nan", "0.5"]])  # a NaN made the explorer's JSON.parse fail
@example(rows=[["9.223372036854776e+18", "1", "1"]])  # a step no int64 holds
def test_a_hostile_history_loads_finite_or_is_refused_in_one_line(tmp_path, rows):
    path = tmp_path / "history.tsv"
    text = "step\tloss\taccuracy\n" + "".join("\t".join(row) + "\n" for row in rows)
    path.write_text(text)
    try:
        history = load_history(path)
    except PipelineError as err:
        assert_one_line_naming(err, f"{path}: ")
    else:  # the explorer embeds these as JSON, which has no NaN or Infinity
        assert all(np.isfinite(history[name]).all() for name in ("loss", "accuracy"))
        assert len(history["step"]) == len(rows)
    assert path.read_text() == text
