"""Stage explore: metrics/explorer.html, a page to draw a glyph, watch the network read it and teach it one step.

    python -m pipeline.explore

Reads models/model.npz, models/trace.npz, metrics/history.tsv, data/{x,y}_train.npy, data/samples/*.txt
and `train.lr` (plus `train.batch_size` and `train.shuffle`, to know whether training can be replayed).
The page is self-contained: its JavaScript (pipeline/explorer.html's interface and pipeline/portable.js's
arithmetic) and every number it needs are inline, so it opens from disk in any browser, with no
network. portable.js does the same operations in the same order as pipeline/portable.py and model.py,
in the model's own float type (float64 or float32), so the page's scores and its "learn" step are the
Python model's to the last bit (tests/test_portable_js.py and test_explorer.py check that in Chromium).

For each epoch the page needs the weights. When training visited the examples one at a time in
their stored order (batch 1, no shuffling), the page rebuilds them by running the training again from
the initial weights, which takes a few kilobytes (the default run). Otherwise the weights after each
recorded epoch are inline, 8 bytes each.
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import numpy as np

from pipeline import paths, pictures, portable
from pipeline.artifacts import load_history, load_split
from pipeline.checkpoint import load_network, to_arrays
from pipeline.errors import exit_on_error
from pipeline.glyph_files import read_glyph, sample_files
from pipeline.glyphs import FAR, PIXELS, clean_glyphs, codes
from pipeline.model import PARAMETERS, Network
from pipeline.params import TrainParams, load_params, made_with, unchanged
from pipeline.reading import load_npz, stale
from pipeline.writing import check_finite, save_text

TEMPLATE = Path(__file__).with_name("explorer.html")
ARITHMETIC = Path(__file__).with_name("portable.js")  # inlined where the template says /*PORTABLE*/
REPLAY_STEPS = 20_000  # training steps the page may replay on load (about 0.1 s); more: inline weights
NEAREST_GLYPHS = 5_000  # distinct training glyphs the page compares a drawing with, at most (35 kB)
TRACE_ENTRY = 64 * 1024 * 1024  # bytes of one trace entry at most: w1 of 512 hidden units and 301 epochs is 37 MB
PAGE_WEIGHTS = 512 * 1024  # bytes of inline float64 weights at most (700 kB of base64); the robust recipe's 397 kB fit


def float64s(array: np.ndarray) -> str:
    """Little-endian float64 bytes in base64: exact, and 11 characters a number."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode("ascii")


def bits(glyphs: np.ndarray) -> list[str]:
    return ["".join(map(str, row)) for row in glyphs.tolist()]


def packed(glyphs: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """Glyphs as little-endian uint32 (pixel i is bit i) and labels as uint8, in base64: 7 characters a glyph."""
    return {
        "codes": base64.b64encode(codes(glyphs).tobytes()).decode("ascii"),
        "labels": base64.b64encode(labels.astype(np.uint8).tobytes()).decode("ascii"),
    }


def trace_data(p: TrainParams, net: Network, trace: dict[str, np.ndarray], x_train: np.ndarray) -> dict:
    """The weights of every recorded epoch: how to rebuild them, or the weights themselves."""
    epochs = trace["epoch"].tolist()
    weights = {name: trace[name] for name in PARAMETERS if name in trace}
    replayable = (
        p.batch_size == 1
        and not p.shuffle
        and epochs == list(range(len(epochs)))
        and len(x_train) * epochs[-1] <= REPLAY_STEPS
    )
    if replayable:
        return {"epochs": epochs, "replay": {"initial": {k: float64s(v[0]) for k, v in weights.items()}}}
    kept = thinned(len(epochs), 8 * sum(v[0].size for v in weights.values()))
    return {"epochs": [epochs[i] for i in kept], "weights": {k: float64s(v[kept]) for k, v in weights.items()}}


def thinned(snapshots: int, size: int) -> list[int]:
    """Which of `snapshots` snapshots of `size` bytes each the page carries: as many as PAGE_WEIGHTS holds
    (at least the first and the last), evenly spaced, so the git-tracked page stays small for any network."""
    most = max(2, PAGE_WEIGHTS // size)
    if snapshots <= most:
        return list(range(snapshots))
    return sorted({round(i * (snapshots - 1) / (most - 1)) for i in range(most)})


def page_data(
    p: TrainParams,
    net: Network,
    trace: dict[str, np.ndarray],
    history: dict[str, np.ndarray],
    x_train: np.ndarray,
    y_train: np.ndarray,
    samples: list[tuple[str, np.ndarray]],
) -> dict:
    arrays = to_arrays(net)
    trace = trace_data(p, net, trace, x_train)
    order = np.sort(np.unique(x_train, axis=0, return_index=True)[1])[:NEAREST_GLYPHS]  # distinct, in training order
    return {
        "classes": list(net.classes),
        "sizes": list(net.sizes),
        "loss": net.loss,
        "lr": p.lr,
        "parameters": list(PARAMETERS),  # the page's one list of them (explorer.html, portable.js)
        "model": {name: float64s(arrays[name]) for name in PARAMETERS if name in arrays},
        "trace": trace,
        "history": {"loss": history["loss"].tolist(), "accuracy": history["accuracy"].tolist()},
        "glyphs": bits(clean_glyphs()),
        "samples": [{"name": name, "pixels": bits(glyph[None])[0]} for name, glyph in samples],
        "training": packed(x_train, y_train) if "replay" in trace else packed(x_train[order], y_train[order]),
        "far": FAR,
        "portable": portable.constants(net.w1.dtype),
        "colors": {
            "paper": list(pictures.PAPER),
            "positive": pictures.POSITIVE.tolist(),
            "negative": pictures.NEGATIVE.tolist(),
        },
    }


# Inside a <script>, "</script" ends it and "<!--" can hide the next one's end: no string of the data
# may hold a <, > or &, which JSON writes as the escapes JSON.parse reads back.
SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def render_page(data: dict) -> str:
    # floats: shortest exact form; never NaN or Infinity, which JSON.parse refuses (the loaders keep them out)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).translate(SCRIPT_SAFE)
    page = TEMPLATE.read_text(encoding="utf-8").replace("/*PORTABLE*/", ARITHMETIC.read_text(encoding="utf-8"))
    return page.replace("/*DATA*/", payload)


def load_trace(net: Network, epochs: int) -> dict[str, np.ndarray]:
    """models/trace.npz, checked against `net` and the history's `epochs`: epochs 0 < ... increasing up to
    `epochs`, and for each one every weight array of `net`, finite, the last ones `net`'s own."""
    trace = load_npz(paths.TRACE, "train", ("epoch", *PARAMETERS), TRACE_ENTRY)
    model = net.parameters()
    epoch = trace.get("epoch", np.zeros(0, np.int64))
    if epoch.dtype != np.int64 or epoch.ndim != 1 or len(epoch) == 0 or epoch[0] != 0 or (np.diff(epoch) <= 0).any():
        raise stale(paths.TRACE, f"expected epochs 0, 1, ... in order, found {epoch.dtype}{epoch.shape}", "train")
    if epoch[-1] != epochs:  # the page's curves and its weights step through the same epochs
        raise stale(
            paths.TRACE, f"expected epochs up to {epochs}, {paths.HISTORY}'s last, found up to {epoch[-1]}", "train"
        )
    for name, weights in model.items():
        found = trace.get(name)
        if found is None or found.dtype != weights.dtype or found.shape != (len(epoch), *weights.shape):
            shape = "none" if found is None else f"{found.dtype}{found.shape}"
            want = f"{weights.dtype}{(len(epoch), *weights.shape)}"
            raise stale(
                paths.TRACE, f"{name}: expected the weights of {paths.MODEL} per epoch, {want}, found {shape}", "train"
            )
        if not np.isfinite(found).all():
            raise stale(paths.TRACE, f"{name}: expected finite weights, found NaN or infinity", "train")
        if not np.array_equal(found[-1], weights):
            raise stale(paths.TRACE, f"its last weights are not those of {paths.MODEL}", "train")
    return {"epoch": epoch} | {name: trace[name] for name in model}


def main() -> None:
    argparse.ArgumentParser(prog="python -m pipeline.explore", description=__doc__.splitlines()[0]).parse_args()
    everything = load_params()
    params = everything.train
    made_with(everything, ("train.lr", "train.batch_size", "train.shuffle"), "train", paths.MODEL)
    net = load_network(paths.MODEL, PIXELS)
    x_train, y_train = load_split("train")
    samples = [(path.name, read_glyph(path)) for path in sample_files()]
    history = load_history()
    data = page_data(params, net, load_trace(net, len(history["loss"])), history, x_train, y_train, samples)
    check_finite(paths.EXPLORER, data)  # JSON.parse refuses NaN: one line, not a page that fails to load
    page = render_page(data)
    unchanged(everything, "explore")
    save_text(paths.EXPLORER, page)


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
