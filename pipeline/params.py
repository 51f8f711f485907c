"""params.yaml -> frozen, validated dataclasses.

Every key is required and every unknown key is refused by name, so a typo such as `train.lrr`
fails loudly instead of silently training with a default. Errors are one line naming the file,
the key, what is allowed and what was found.

The file is read as DVC reads it (ruamel.yaml, YAML 1.2, the very call DVC makes), so the values a
stage uses are the ones `dvc.lock`, `dvc params diff` and `dvc exp show` record: `017` is 17, `on` and
`yes` are strings (refused where true or false is expected), `1e3` is 1000.0, `1:30` is a string, and
a duplicate key is refused. PyYAML (YAML 1.1) read each of these differently.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.events import AliasEvent

from pipeline import paths
from pipeline.artifacts import TRACE_POINTS
from pipeline.errors import PipelineError, clipped, describe, first_line, one_line, shown
from pipeline.glyphs import CLASSES, PIXELS
from pipeline.model import LOSSES, MAX_HIDDEN
from pipeline.sgd import BLOCK_ROWS

Check = tuple[Callable[[Any], bool], str]


def _ge(low: float) -> Check:
    return (lambda v: v >= low), f">= {low}"


def _gt(low: float) -> Check:
    return (lambda v: v > low), f"> {low}"


def _within(low: float, high: float) -> Check:
    return (lambda v: low <= v <= high), f"in [{low}, {high}]"


def _one_of(*allowed: str) -> Check:
    return (lambda v: v in allowed), "one of " + ", ".join(allowed)


def _key(check: Check | None = None, most: int | None = None) -> Any:
    """A required key; `most`: how many items a list may hold."""
    return field(metadata={"check": check, "most": most})


# Upper bounds. Every git-tracked output stays small whatever the params, and a run fits in memory:
MAX_TEST_PER_CLASS = 10_000  # metrics/confusion.json has a row per test glyph: 30,000 rows, about 1.5 MB
MAX_EPOCHS = 10_000  # metrics/history.tsv and the explorer's curves have a row per epoch (about 230 kB)
MAX_NOISE_LEVELS = 20  # a point each in metrics/robustness.json and a key each in metrics.json
MAX_YAML_BYTES = 1 << 20  # params.yaml is about 2 kB and a sweep file a few hundred bytes
MEMORY_LIMIT = 2 * 2**30  # bytes the hungriest stage may need, as `memory_needed` estimates it


@dataclass(frozen=True)
class DatasetParams:
    seed: int = _key(_ge(0))
    noise: float = _key(_within(0.0, 1.0))
    train_per_class: int = _key(_ge(0))
    test_per_class: int = _key(_within(1, MAX_TEST_PER_CLASS))
    shift: int = _key(_within(0, 5))


@dataclass(frozen=True)
class TrainParams:
    hidden: int = _key(_within(1, MAX_HIDDEN))
    lr: float = _key(_gt(0.0))
    epochs: int = _key(_within(0, MAX_EPOCHS))
    batch_size: int = _key(_ge(1))
    loss: str = _key(_one_of(*LOSSES))
    bias: bool = _key()
    seed: int = _key(_ge(0))
    shuffle: bool = _key()
    dtype: str = _key(_one_of("float64", "float32"))


@dataclass(frozen=True)
class EvaluateParams:
    noise_levels: tuple[float, ...] = _key(_within(0.0, 1.0), most=MAX_NOISE_LEVELS)
    per_class: int = _key(_ge(1))
    seed: int = _key(_ge(0))


@dataclass(frozen=True)
class Params:
    dataset: DatasetParams
    train: TrainParams
    evaluate: EvaluateParams


SECTION_TYPES = {"dataset": DatasetParams, "train": TrainParams, "evaluate": EvaluateParams}


def load_params(path: Path = paths.PARAMS) -> Params:
    """Read and validate `path`; raise PipelineError with a one-line message on any problem."""
    return parse_params(read_yaml(path), path)


def parse_params(doc: dict, path: Path | str = paths.PARAMS) -> Params:
    """Validate `doc`, a params.yaml read as `read_yaml` reads it; messages name `path` as where it came from."""
    unknown = sorted(set(doc) - set(SECTION_TYPES), key=str)
    if unknown:
        raise PipelineError(f"{path}: unknown section {unknown[0]!r}; allowed: {', '.join(SECTION_TYPES)}")
    sections = {}
    for name, cls in SECTION_TYPES.items():
        if name not in doc:
            raise PipelineError(f"{path}: missing section {name!r}")
        sections[name] = parse_section(cls, name, doc[name], path)
    params = Params(**sections)
    _check_memory(params, path)
    return params


SIDE_BY_SIDE = "run experiments side by side with `dvc exp run --queue` or `--temp`, not in one workspace at once"


def unchanged(
    params: Params,
    stage: str,
    path: Path = paths.PARAMS,
    consequence: str = "nothing written",
    apart_from: frozenset[str] = frozenset(),
) -> None:
    """Refuse to write `stage`'s outputs when `path` no longer holds the `params` the stage read at its start
    (keys `apart_from` aside): `dvc exp run -S` rewrites params.yaml before DVC takes its lock, so another run
    in this workspace can change it under a running stage, whose outputs would then be recorded with values
    they were not made with."""
    try:
        now = load_params(path)
    except PipelineError:
        change = "it is no longer valid"
    else:
        change = first_change(params, now, apart_from)
    if change is not None:
        raise PipelineError(
            f"{path}: changed while {stage} ran ({change}); {consequence}. Another run in this workspace? "
            f"{SIDE_BY_SIDE}",
            status=1,
        )


class Watch:
    """`unchanged` while a stage runs, for one that runs long (train): called after each epoch, it looks at
    `path` at most every `every` seconds, reads it only when its size or time has moved, and raises
    `unchanged`'s error as soon as its values differ. A run whose params.yaml changed under it cannot
    write its outputs, so it stops then rather than train to its end first."""

    def __init__(
        self, params: Params, stage: str, path: Path = paths.PARAMS, every: float = 0.5, clock=time.monotonic
    ) -> None:
        self.params, self.stage, self.path, self.every, self.clock = params, stage, path, every, clock
        self.seen, self.next = self._stamp(), clock() + every

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_size, info.st_mtime_ns

    def __call__(self) -> None:
        if self.clock() < self.next:
            return
        self.next = self.clock() + self.every
        stamp = self._stamp()
        if stamp != self.seen:
            self.seen = stamp
            unchanged(self.params, self.stage, self.path)


def first_change(before: Params, after: Params, apart_from: frozenset[str] = frozenset()) -> str | None:
    """The first key (not of `apart_from`) whose value differs, as 'train.lr 0.7, now 0.9'; None if none does."""
    for section in SECTION_TYPES:
        old, new = getattr(before, section), getattr(after, section)
        for f in fields(old):
            if f"{section}.{f.name}" not in apart_from and getattr(old, f.name) != getattr(new, f.name):
                return f"{section}.{f.name} {getattr(old, f.name)!r}, now {getattr(new, f.name)!r}"
    return None


def made_with(params: Params, keys: tuple[str, ...], upstream: str, output: Path) -> None:
    """Refuse to go on when `output`, written by stage `upstream`, is the file dvc.lock records for it and
    dvc.lock records other values of `keys` for that stage than `params` holds: a stage would describe
    (explore teaching with train.lr) a model made with other values. Nothing to compare without a dvc.lock
    that names this very file (a run outside DVC, or an output made since)."""
    try:
        stage = read_yaml(paths.DVC_LOCK).get("stages", {}).get(upstream, {})
        outs = {out.get("path"): out.get("md5") for out in stage.get("outs", []) if isinstance(out, dict)}
        recorded = stage.get("params", {}).get(str(paths.PARAMS), {})
        if outs.get(str(output)) != hashlib.md5(output.read_bytes()).hexdigest() or not isinstance(recorded, dict):
            return
    except (PipelineError, OSError, AttributeError):
        return
    for key in keys:
        section, name = key.split(".")
        value = getattr(getattr(params, section), name)
        if key in recorded and recorded[key] != (list(value) if isinstance(value, tuple) else value):
            raise PipelineError(
                f"{output}: made by {upstream} with {key} {recorded[key]!r} ({paths.DVC_LOCK}), but {paths.PARAMS} "
                f"says {value!r}: run `dvc repro`. If another run in this workspace changed {paths.PARAMS}, "
                f"{SIDE_BY_SIDE}",
                status=1,
            )


# Peak memory, measured with /usr/bin/time on 900,000 training glyphs and on batches of 90,000 rows
# by 64 hidden units (the coefficients round the measurements up):
BASE_BYTES = 128 * 2**20  # Python, NumPy, Pillow and matplotlib: 80 MB in evaluate
GLYPH_BYTES = 128  # per training or test glyph: 108 in explore (np.unique), 94 in train, 62 in make_dataset
BATCH_UNIT_BYTES = 128  # per batch row and hidden unit: about 13 float64 arrays of (batch, hidden) in a step
EVALUATE_ROWS = 8  # noisy glyphs per `evaluate.per_class` at once: 3 letters per noise level, 4 moved glyphs
SNAPSHOTS = TRACE_POINTS + 1  # weight snapshots in models/trace.npz at most: the initial weights too
EPOCH_BYTES = 256  # per epoch: the history arrays and their TSV text


def memory_needed(p: Params) -> list[tuple[int, str, str]]:
    """The estimated peak memory of a run, in parts: (bytes, the key that sets it, what it is)."""
    train_glyphs = 3 * ((2 * p.dataset.shift + 1) ** 2 + p.dataset.train_per_class)  # at most, with every move
    rows = min(p.train.batch_size, train_glyphs)
    block = min(max(1, BLOCK_ROWS // p.train.batch_size) * p.train.batch_size, train_glyphs)  # as sgd converts
    weights = (PIXELS + 1) * p.train.hidden + (p.train.hidden + 1) * len(CLASSES)  # w1, b1, w2, b2
    return [
        (train_glyphs * GLYPH_BYTES, "dataset.train_per_class", f"{train_glyphs} training glyphs"),
        (3 * p.dataset.test_per_class * GLYPH_BYTES, "dataset.test_per_class", "the test glyphs"),
        (EVALUATE_ROWS * p.evaluate.per_class * GLYPH_BYTES, "evaluate.per_class", "the noisy glyphs of evaluate"),
        (
            rows * p.train.hidden * BATCH_UNIT_BYTES + block * PIXELS * 8 * 2,
            "train.batch_size",
            f"batches of {rows} rows by {p.train.hidden} hidden units",
        ),
        (3 * SNAPSHOTS * weights * 8, "train.hidden", "the weight snapshots"),
        (p.train.epochs * EPOCH_BYTES, "train.epochs", "the history"),
    ]


def _check_memory(p: Params, path: Path | str) -> None:
    parts = memory_needed(p)
    total = BASE_BYTES + sum(size for size, _, _ in parts)
    if total > MEMORY_LIMIT:
        size, key, what = max(parts)
        section, name = key.split(".")
        found = describe(getattr(getattr(p, section), name))
        raise PipelineError(
            f"{path}: {key}: expected a run that needs at most {MEMORY_LIMIT / 2**30:g} GiB of memory, "
            f"found {found}: {clipped(what, 80)} need {_gib(size)}, the whole run {_gib(total)}"
        )


def _gib(size: int) -> str:
    try:
        return f"about {size / 2**30:.3g} GiB"
    except OverflowError:  # an integer beyond the float range
        return "over 10^300 GiB"


def allowed_values() -> str:
    """Every key and what it may hold, a line each: `train.lr: a number > 0.0`; then the memory bound."""
    keys = [f"{name}.{f.name}: {_expected(f)}\n" for name, cls in SECTION_TYPES.items() for f in fields(cls)]
    memory = f"the run: at most {MEMORY_LIMIT / 2**30:g} GiB of memory, as pipeline/params.py estimates it\n"
    return "".join(keys) + memory


def read_yaml(path: Path) -> dict:
    """The mapping in YAML file `path`, read as DVC reads params.yaml; a one-line PipelineError otherwise."""
    try:
        kind = paths.special(path)  # before opening: a FIFO would block forever
        if kind is not None:
            raise PipelineError(f"{path}: expected a regular file, found {kind}")
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise PipelineError(f"{path}: expected at most {MAX_YAML_BYTES} bytes of YAML, found more")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file; run from the project root") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read: {err}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # ruamel warns of a reused anchor: refused, as stderr gets one line
            for event in YAML(typ="safe").parse(text):  # streamed: an alias is found before anything expands
                if isinstance(event, AliasEvent):
                    raise PipelineError(
                        f"{path}: line {event.start_mark.line + 1}: expected plain YAML, found the alias "
                        f"*{shown(str(event.anchor), 40)}; write the value out (aliases are refused: a few lines of "
                        "them can stand for more values than memory holds)"
                    )
            doc = YAML(typ="safe").load(text)  # DVC's own reader and call (dvc.utils.serialize.parse_yaml)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or first_line(err)
        raise PipelineError(f"{path}: {where}invalid YAML: {one_line(problem)}") from None
    # The scalar constructors raise plain errors for some values (`2023-13-01`, `!!float abc`, an
    # integer of over 4300 digits), warnings are errors here, and the composer recurses once per level.
    except (ValueError, TypeError, AttributeError, RecursionError, Warning) as err:
        raise PipelineError(f"{path}: invalid YAML: {one_line(first_line(err))}") from None
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: expected a mapping of sections, found {describe(doc)}")
    return doc


def parse_section(cls: type, name: str, raw: Any, path: Path | str = paths.PARAMS) -> Any:
    """Build dataclass `cls` from mapping `raw`, the section `name` of `path`."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: {name}: expected a mapping of keys, found {describe(raw)}")
    allowed = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in allowed:
            shown = key if isinstance(key, str) and key.isprintable() else repr(key)  # keep the message one line
            raise PipelineError(f"{path}: {name}.{shown}: unknown key; allowed: {', '.join(allowed)}")
    values = {}
    for key, f in allowed.items():
        if key not in raw:
            raise PipelineError(f"{path}: {name}.{key}: missing; expected {_expected(f)}")
        values[key] = _convert(raw[key], f, f"{path}: {name}.{key}")
    return cls(**values)


_KINDS = {
    "int": (int, "an integer"),
    "float": (float, "a number"),
    "bool": (bool, "true or false"),
    "str": (str, "a string"),
    "tuple[float, ...]": (float, "a non-empty list of numbers"),
}  # annotations are strings


def _expected(f: Any) -> str:
    check, (kind, words) = f.metadata["check"], _KINDS[f.type]
    if f.metadata["most"] is not None:
        words = f"a list of 1 to {f.metadata['most']} numbers"
    if check is None:
        return words
    return check[1] if kind is str else f"{words} {check[1]}"


def _convert(value: Any, f: Any, where: str) -> Any:
    kind, check = _KINDS[f.type][0], f.metadata["check"]
    items = value if f.type.startswith("tuple") else [value]
    most = f.metadata["most"] or 1
    converted = [_coerce(v, kind) for v in items] if isinstance(items, list) and 0 < len(items) <= most else [None]
    if any(c is None or (check is not None and not check[0](c)) for c in converted):
        raise PipelineError(f"{where}: expected {_expected(f)}, found {describe(value)}")
    return tuple(converted) if f.type.startswith("tuple") else converted[0]


def _coerce(value: Any, kind: type) -> Any:
    """`value` as `kind`, or None if it is not one. Booleans are never numbers."""
    if kind is bool or kind is str:
        return value if type(value) is kind else None
    if isinstance(value, bool):
        return None
    if kind is int:
        return value if isinstance(value, int) else None
    if isinstance(value, int):  # a string is never a number: DVC records it as the string it is
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            return None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None
