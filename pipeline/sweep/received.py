"""What a worker sends back, or .sweep-cache/ gives back, checked as data before anything shows, ranks,
writes or caches it.

Any client of a Dask scheduler can replace a worker's functions (`client.run`), so a result is a claim:
it is taken only if it is a mapping of exactly the code hash and either the metrics text or an error
line; the hash is this client's; the metrics text is JSON of the shape evaluate writes for the trial's
params (the same keys, in order), every number finite and in its range (accuracies, precisions and
recalls in [0, 1], losses at least 0), and the text is the very bytes evaluate writes for those numbers.
Anything else is refused with one line saying what was found, and the trial counts as failed.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pipeline import paths
from pipeline.errors import describe, one_line
from pipeline.params import parse_params
from pipeline.sweep.sweep_file import metric_keys
from pipeline.sweep.work import flat
from pipeline.writing import json_text

MAX_METRICS = 16 * 1024  # metrics.json's text: about 500 bytes for three classes and five noise levels
MAX_ERROR = 2000  # a stage's error is one line of about 200 characters


class Refused(ValueError):
    """A result that is not one a trial of this code could give; its message says what was found."""


def checked(result: Any, code: str | None, doc: dict, keys: dict[str, list[str]]) -> dict[str, str]:
    """`result` as {"metrics": text} or {"error": line}, or Refused. `code` is this client's code hash (None
    for a cached result, whose file name holds it); `doc` the trial's params; `keys` caches the metrics keys
    evaluate writes, by the params that decide them."""
    wanted = ("metrics", "error") if code is None else ("code", "metrics", "error")
    if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
        raise Refused(f"expected a mapping of {', '.join(wanted)}, found {describe(result)}")
    need = set() if code is None else {"code"}
    if set(result) not in (need | {"metrics"}, need | {"error"}):
        raise Refused(
            f"expected the keys {' and '.join(sorted(need | {'metrics'}))} or error, found {describe(sorted(result))}"
        )
    if code is not None and result["code"] != code:
        found = one_line(result["code"]) if isinstance(result["code"], str) else describe(result["code"])
        raise Refused(f"a worker runs other code (hash {found}, here {code}); install this commit there")
    if "error" in result:
        error = result["error"]
        if not isinstance(error, str) or not error or len(error) > MAX_ERROR:
            raise Refused(f"expected an error line of 1 to {MAX_ERROR} characters, found {describe(error)}")
        return {"error": one_line(error)}
    return {"metrics": _metrics(result["metrics"], doc, keys)}


def _metrics(text: Any, doc: dict, keys: dict[str, list[str]]) -> str:
    if not isinstance(text, str) or len(text) > MAX_METRICS:
        raise Refused(f"expected {paths.METRICS}'s text, at most {MAX_METRICS} characters, found {describe(text)}")
    try:
        tree = json.loads(text)
    except ValueError as err:
        raise Refused(f"expected {paths.METRICS}'s JSON, found text that is not JSON ({one_line(str(err))})") from None
    if not isinstance(tree, dict):
        raise Refused(f"expected {paths.METRICS}'s mapping, found {describe(tree)}")
    values = flat(tree)
    expected = _expected(doc, keys)
    if list(values) != expected:
        raise Refused(f"expected the metrics {', '.join(expected)}, found {one_line(', '.join(map(str, values)))}")
    for key, value in values.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        low, high = (0.0, math.inf) if key.endswith("loss") else (0.0, 1.0)
        if not number or not (math.isfinite(value) and low <= value <= high):
            span = "a number at least 0" if high == math.inf else "a number in [0, 1]"
            raise Refused(f"{key}: expected {span}, found {describe(value)}")
    if json_text(paths.METRICS, tree) != text:
        raise Refused(f"expected the text evaluate writes for these numbers, found other bytes ({len(text)})")
    return text


def _expected(doc: dict, keys: dict[str, list[str]]) -> list[str]:
    """The metrics keys evaluate writes for params `doc`: they follow the classes and the evaluate section."""
    which = json.dumps(doc.get("evaluate"), sort_keys=True)
    if which not in keys:
        keys[which] = metric_keys(parse_params(doc))
    return keys[which]
