"""params.yaml: the committed file parses; every kind of bad value gets a one-line error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.params import load_params
from tests.conftest import ROOT


def write_params(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(doc)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_committed_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.evaluate.noise_levels == (0.0, 0.05, 0.1, 0.2, 0.3)
    assert params.train.loss == "bce" and params.train.batch_size == 1 and params.train.bias is False
    assert params.dataset.train_per_class == 0


def test_a_number_without_a_dot_is_accepted(tmp_path):
    path = write_params(tmp_path, lambda d: d["train"].update(lr="1e-3"))  # PyYAML reads 1e-3 as a string
    assert load_params(path).train.lr == 0.001


def test_an_integer_learning_rate_is_a_float(tmp_path):
    path = write_params(tmp_path, lambda d: d["train"].update(lr=1))
    assert load_params(path).train.lr == 1.0 and isinstance(load_params(path).train.lr, float)


def _set(section, key, value):
    return lambda d: d[section].update({key: value})


BAD = [
    (_set("train", "lr", "fast"), "train.lr: expected a number > 0.0, found 'fast' (str)"),
    (_set("train", "lr", 0), "train.lr: expected a number > 0.0, found 0 (int)"),
    (_set("train", "lr", -0.1), "train.lr: expected a number > 0.0, found -0.1 (float)"),
    (_set("train", "lr", ".nan"), "train.lr: expected a number > 0.0, found '.nan' (str)"),
    (_set("train", "lr", float("inf")), "train.lr: expected a number > 0.0, found inf (float)"),
    (_set("train", "lr", True), "train.lr: expected a number > 0.0, found True (bool)"),
    (_set("train", "epochs", -1), "train.epochs: expected an integer in [0, 10000], found -1 (int)"),
    (_set("train", "epochs", 2.5), "train.epochs: expected an integer in [0, 10000], found 2.5 (float)"),
    (_set("train", "epochs", True), "train.epochs: expected an integer in [0, 10000], found True (bool)"),
    (_set("train", "hidden", 0), "train.hidden: expected an integer in [1, 512], found 0 (int)"),
    (_set("train", "batch_size", 0), "train.batch_size: expected an integer >= 1, found 0 (int)"),
    (_set("train", "loss", "mae"), "train.loss: expected one of bce, mse, found 'mae' (str)"),
    (_set("train", "dtype", "float16"), "train.dtype: expected one of float64, float32, found 'float16' (str)"),
    (_set("train", "bias", "yes please"), "train.bias: expected true or false, found 'yes please' (str)"),
    (_set("train", "bias", 1), "train.bias: expected true or false, found 1 (int)"),
    (_set("train", "seed", None), "train.seed: expected an integer >= 0, found nothing (null)"),
    (_set("dataset", "noise", 1.5), "dataset.noise: expected a number in [0.0, 1.0], found 1.5 (float)"),
    (_set("dataset", "noise", -0.01), "dataset.noise: expected a number in [0.0, 1.0], found -0.01 (float)"),
    (_set("dataset", "test_per_class", 0), "dataset.test_per_class: expected an integer in [1, 10000], found 0 (int)"),
    (_set("dataset", "train_per_class", -3), "dataset.train_per_class: expected an integer >= 0, found -3"),
    (_set("dataset", "train_per_class", "10"), "dataset.train_per_class: expected an integer >= 0, found '10'"),
    (_set("dataset", "shift", -1), "dataset.shift: expected an integer in [0, 5], found -1 (int)"),
    (_set("dataset", "shift", 6), "dataset.shift: expected an integer in [0, 5], found 6 (int)"),
    (_set("dataset", "shift", 1.5), "dataset.shift: expected an integer in [0, 5], found 1.5 (float)"),
    (_set("dataset", "shift", True), "dataset.shift: expected an integer in [0, 5], found True (bool)"),
    (
        _set("train", "lrr", 0.1),
        "train.lrr: unknown key; allowed: hidden, lr, epochs, batch_size, loss, bias, seed, shuffle, dtype",
    ),
    (lambda d: d["train"].pop("lr"), "train.lr: missing; expected a number > 0.0"),
    (lambda d: d.pop("train"), "missing section 'train'"),
    (lambda d: d.update(trian={}), "unknown section 'trian'; allowed: dataset, train, evaluate"),
    (
        _set("evaluate", "noise_levels", []),
        "evaluate.noise_levels: expected a list of 1 to 20 numbers in [0.0, 1.0], found [] (list)",
    ),
    (
        _set("evaluate", "noise_levels", [0.1, 1.5]),
        "evaluate.noise_levels: expected a list of 1 to 20 numbers in [0.0, 1.0], found [0.1, 1.5] (list)",
    ),
    (
        _set("evaluate", "noise_levels", [0.1, True]),
        "evaluate.noise_levels: expected a list of 1 to 20 numbers in [0.0, 1.0], found [0.1, True] (list)",
    ),
    (
        _set("evaluate", "noise_levels", 0.1),
        "evaluate.noise_levels: expected a list of 1 to 20 numbers in [0.0, 1.0], found 0.1 (float)",
    ),
    (_set("evaluate", "per_class", 0), "evaluate.per_class: expected an integer >= 1, found 0 (int)"),
    (lambda d: d.update(train=[1, 2]), "train: expected a mapping of keys, found [1, 2] (list)"),
    # Upper bounds: git-tracked outputs stay small (docs/inputs-and-limits.md)
    (_set("train", "hidden", 513), "train.hidden: expected an integer in [1, 512], found 513 (int)"),
    (_set("train", "hidden", 10**9), "train.hidden: expected an integer in [1, 512], found 1000000000 (int)"),
    (_set("train", "epochs", 10_001), "train.epochs: expected an integer in [0, 10000], found 10001 (int)"),
    (_set("train", "epochs", 10**10), "train.epochs: expected an integer in [0, 10000], found 10000000000 (int)"),
    (
        _set("dataset", "test_per_class", 10**9),
        "dataset.test_per_class: expected an integer in [1, 10000], found 1000000000 (int)",
    ),
    (
        _set("evaluate", "noise_levels", [0.1] * 21),
        "evaluate.noise_levels: expected a list of 1 to 20 numbers in [0.0, 1.0], found [0.1, 0.1, 0.1, 0.1, ...]",
    ),
    # ... and a run fits in memory: estimated before anything is allocated
    (
        _set("dataset", "train_per_class", 10**9),
        "dataset.train_per_class: expected a run that needs at most 2 GiB of memory, found 1000000000 (int): "
        "3000000003 training glyphs need about 358 GiB, the whole run about 358 GiB",
    ),
    (
        _set("dataset", "train_per_class", 6_000_000),
        "dataset.train_per_class: expected a run that needs at most 2 GiB of memory, found 6000000 (int): "
        "18000003 training glyphs need about 2.15 GiB, the whole run about 2.28 GiB",
    ),
    (
        _set("evaluate", "per_class", 10**9),
        "evaluate.per_class: expected a run that needs at most 2 GiB of memory, found 1000000000 (int): "
        "the noisy glyphs of evaluate need about 954 GiB",
    ),
    (
        _set("dataset", "train_per_class", 10**400),
        "dataset.train_per_class: expected a run that needs at most 2 GiB of memory, found 1000000000000000000000",
    ),
    (
        lambda d: d["train"].update(batch_size=100_000, hidden=512) or d["dataset"].update(train_per_class=100_000),
        "train.batch_size: expected a run that needs at most 2 GiB of memory, found 100000 (int): "
        "batches of 100000 rows by 512 hidden units need about 6.15 GiB",
    ),
]


@pytest.mark.parametrize("edit,message", BAD, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_values_are_refused_by_name(tmp_path, edit, message):
    path = write_params(tmp_path, edit)
    with pytest.raises(PipelineError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: {message}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("train: [\n", "line 2: invalid YAML"),
        ("train:\n  lr: 0.1\n lr: 2\n", "line 3: invalid YAML"),
        ("", "expected a mapping of sections, found nothing (null)"),
        ("- 1\n- 2\n", "expected a mapping of sections, found [1, 2] (list)"),
    ],
)
def test_unreadable_yaml_is_refused_with_its_line(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(PipelineError, match="no such file; run from the project root"):
        load_params(tmp_path / "params.yaml")


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    import signal

    levels = ", ".join(f"&l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]" for i in range(1, 16))
    text = (ROOT / "params.yaml").read_text().replace("  lr: 0.1 ", f"  lr: [&l0 [x, x], {levels}] ")
    path = tmp_path / "params.yaml"
    path.write_text(text)

    def too_slow(*_):
        raise TimeoutError("4**15 leaves are being rendered whole")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        with pytest.raises(PipelineError) as err:
            load_params(path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert str(err.value).startswith(f"{path}: line 15: expected plain YAML, found the alias *l0; write the value out")
    assert "\n" not in str(err.value)


# --- YAML 1.2, as DVC reads it -----------------------------------------------------------------------

COMMITTED_TEXT = (ROOT / "params.yaml").read_text()


def typed(tmp_path: Path, section: str, key: str, raw: str) -> Path:
    """The committed params.yaml with `section.key` retyped by hand as `raw` (its comment kept)."""
    start = COMMITTED_TEXT.index(f"\n{section}:\n")
    line_start = COMMITTED_TEXT.index(f"\n  {key}: ", start) + 1
    value_start = line_start + len(f"  {key}: ")
    value_end = value_start + len(COMMITTED_TEXT[value_start:].split("#")[0].split("\n")[0].rstrip())
    path = tmp_path / "params.yaml"
    path.write_text(COMMITTED_TEXT[:value_start] + raw + COMMITTED_TEXT[value_end:])
    return path


def dvc_reads(path: Path):
    """What DVC records for the file (dvc.lock, `dvc params diff`): DVC's own YAML reader."""
    from dvc.utils.serialize import parse_yaml

    return parse_yaml(path.read_text(), str(path))


# (section, key, typed, what a stage gets: the value, or a fragment of the one-line refusal)
YAML_1_1_VS_1_2 = [
    ("dataset", "train_per_class", "017", 17),  # YAML 1.1 (PyYAML): octal 15
    ("dataset", "train_per_class", "0o17", 15),  # YAML 1.1: the string '0o17'
    ("dataset", "train_per_class", "0x1F", 31),
    ("dataset", "train_per_class", "1_000", 1000),
    ("dataset", "train_per_class", "1e3", "expected an integer >= 0, found 1000.0 (float)"),
    ("train", "epochs", "1:30", "expected an integer in [0, 10000], found '1:30' (str)"),  # YAML 1.1: sexagesimal 90
    ("train", "bias", "on", "train.bias: expected true or false, found 'on' (str)"),  # YAML 1.1: True
    ("train", "bias", "yes", "train.bias: expected true or false, found 'yes' (str)"),
    ("train", "shuffle", "no", "train.shuffle: expected true or false, found 'no' (str)"),
    ("train", "shuffle", "off", "train.shuffle: expected true or false, found 'off' (str)"),
    ("train", "bias", "True", True),
    ("train", "lr", "1e3", 1000.0),  # YAML 1.1: the string '1e3'
    ("train", "lr", "1E-1", 0.1),
    ("train", "lr", ".5", 0.5),
    ("train", "lr", "'0.5'", "train.lr: expected a number > 0.0, found '0.5' (str)"),  # a string, as DVC records it
    ("dataset", "noise", "1.e-1", 0.1),
]


@pytest.mark.parametrize("section,key,raw,outcome", YAML_1_1_VS_1_2, ids=[f"{k}={r}" for _, k, r, _ in YAML_1_1_VS_1_2])
def test_values_are_read_as_dvc_reads_them(tmp_path, section, key, raw, outcome):
    path = typed(tmp_path, section, key, raw)
    recorded = dvc_reads(path)[section][key]
    if isinstance(outcome, str):
        with pytest.raises(PipelineError) as err:
            load_params(path)
        assert f"{path}: {section}.{key}: " in str(err.value) and outcome in str(err.value), str(err.value)
        assert repr(recorded) in str(err.value)  # the refusal shows the value DVC records
    else:
        loaded = getattr(getattr(load_params(path), section), key)
        assert loaded == recorded == outcome and type(loaded) is type(outcome), (loaded, recorded)


def test_a_duplicate_key_is_refused_with_its_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(COMMITTED_TEXT.replace("  lr: 0.1 ", "  lr: 0.1\n  lr: 0.5 "))
    line = COMMITTED_TEXT[: COMMITTED_TEXT.index("  lr: 0.1 ")].count("\n") + 2
    with pytest.raises(PipelineError) as err:
        load_params(path)
    assert str(err.value).startswith(f'{path}: line {line}: invalid YAML: found duplicate key "lr"'), str(err.value)
    assert "\n" not in str(err.value)


def test_a_reused_anchor_is_refused_in_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(COMMITTED_TEXT.replace("  seed: 0 ", "  seed: &s 0 ", 1).replace("  hidden: 5 ", "  hidden: &s 5 "))
    with pytest.raises(PipelineError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: invalid YAML: found duplicate anchor 's'"), str(err.value)


@pytest.mark.parametrize(
    "section,values",
    [
        ("train", {"hidden": 512, "epochs": 10_000}),
        ("dataset", {"test_per_class": 10_000, "train_per_class": 5_000_000}),
        ("evaluate", {"noise_levels": [0.0] * 20, "per_class": 1_000_000}),
        ("train", {"batch_size": 10**9}),  # a batch is at most the training set: 3 glyphs
    ],
)
def test_the_largest_allowed_values_load(tmp_path, section, values):
    path = write_params(tmp_path, lambda d: d[section].update(values))
    loaded = getattr(load_params(path), section)
    assert {key: getattr(loaded, key) for key in values} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
    }
