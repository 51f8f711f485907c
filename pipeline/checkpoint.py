"""The trained model file: a network saved with what is needed to use it without params.yaml.

models/model.npz holds plain arrays (no pickles): w1, w2, b1/b2 when biases are on, the layer
sizes, the class names, the loss it was trained with, the activation, whether biases are on, a digest
of the training set (so predict can tell whether data/x_train.npy is the set it learned from), and the
distinct glyphs of that set with their labels (train_glyphs, train_labels), so that predict names the
nearest training glyph of a model used outside the project (`dvc artifacts get`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.errors import quoted, shown
from pipeline.glyphs import CLASSES, codes
from pipeline.model import ACTIVATION, BIASES, LOSSES, MAX_HIDDEN, PARAMETERS, WEIGHTS, Network
from pipeline.reading import load_npz, stale
from pipeline.writing import save_npz

# What training writes as class names (glyphs.CLASSES: A, B, C), with room for other words, and
# nothing a page or a terminal could take for markup, a quote or a control character.
CLASS_NAME = re.compile(r"[A-Za-z0-9_-]{1,16}")
MAX_CLASS_NAME = 16
DIGEST = re.compile(r"([0-9a-f]{16})?")  # artifacts.digest, or "" for a model saved before it existed
# Training stops once a logit passes +-707, so its weights stay far below this; beyond it the forward pass
# could overflow (30 pixels, 512 hidden units, sums over a data set) and print NaN scores.
MAX_WEIGHT = 2.0**64
FLOATS = (np.dtype(np.float64), np.dtype(np.float32))  # train.dtype's choices, in this machine's byte order
KEYS = (*PARAMETERS, "sizes", "classes", "loss", "activation", "bias", "trained_on")  # the network
GLYPH_KEYS = ("train_glyphs", "train_labels")  # and what predict compares a glyph with; all that is read
# Distinct training glyphs a model keeps (1.9 MB at most; the robust recipe has 4,702). A model trained on
# more keeps none, and predict reads data/x_train.npy instead, as for a model saved before they were kept.
MAX_GLYPHS = 1 << 16
# The largest entry read: w1 of the widest network params.yaml allows (512 hidden units) is 123 kB. The
# limit is checked against each entry's declared size before it is read, so no entry can cost more.
MAX_ENTRY = 8 * 1024 * 1024


Glyphs = tuple[np.ndarray, np.ndarray]  # x : (n, 30) uint8 of 0/1, y : (n,) uint8 labels


def save_network(path: Path, net: Network, glyphs: Glyphs | None = None) -> None:
    """`net`, and the distinct training glyphs `glyphs` (see `distinct_glyphs`) unless None."""
    kept = {} if glyphs is None else dict(zip(GLYPH_KEYS, glyphs))
    save_npz(path, to_arrays(net) | kept)


def distinct_glyphs(X: np.ndarray, y: np.ndarray) -> Glyphs | None:
    """The distinct rows of X : (N, 30), in order of first appearance, each with the label of its first
    appearance: `glyphs.nearest` finds the same distance and label in them as in X, y (on a tie it takes
    the first in training order, which is a first appearance). None if there are more than MAX_GLYPHS."""
    _, first = np.unique(codes(X), return_index=True)
    if len(first) > MAX_GLYPHS:
        return None
    keep = np.sort(first)
    return X[keep], y[keep]


def load_network(path: Path, inputs: int) -> Network:
    """The network saved by the train stage at `path`, which must take `inputs` inputs."""
    return load_model(path, inputs)[0]


def load_model(path: Path, inputs: int) -> tuple[Network, Glyphs | None]:
    """The network at `path` and the distinct training glyphs it keeps (None for a model without them)."""
    try:
        arrays = load_npz(path, "train", KEYS + GLYPH_KEYS, MAX_ENTRY)
        return from_arrays(arrays, inputs), kept_glyphs(arrays, inputs)
    except ValueError as err:
        raise stale(path, f"not a model file ({err})", "train") from None


def kept_glyphs(arrays: dict[str, np.ndarray], inputs: int) -> Glyphs | None:
    """train_glyphs : (n, inputs) uint8 of 0/1 and train_labels : (n,) uint8 below len(CLASSES), both or
    neither; raises ValueError naming what is wrong."""
    present = [key for key in GLYPH_KEYS if key in arrays]
    if not present:
        return None
    if len(present) == 1:
        raise ValueError(f"expected {' and '.join(GLYPH_KEYS)} together, found only {present[0]}")
    x, y = (arrays[key] for key in GLYPH_KEYS)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != inputs or not 1 <= len(x) <= MAX_GLYPHS:
        raise ValueError(f"expected train_glyphs, uint8 (1 to {MAX_GLYPHS}, {inputs}), found {x.dtype}{x.shape}")
    if y.dtype != np.uint8 or y.shape != (len(x),):
        raise ValueError(f"expected train_labels, uint8 ({len(x)},), found {y.dtype}{y.shape}")
    if x.max() > 1 or y.max() >= len(CLASSES):
        raise ValueError(f"expected pixels 0 or 1 and labels below {len(CLASSES)}, found {x.max()} and {y.max()}")
    return x, y


def to_arrays(net: Network) -> dict[str, np.ndarray]:
    """Everything needed to rebuild `net`, as arrays for np.savez (no pickled objects)."""
    arrays = {name: getattr(net, name) for name in WEIGHTS} | {
        "sizes": np.array(net.sizes, dtype=np.int64),
        "classes": np.array(net.classes),
        "loss": np.array(net.loss),
        "activation": np.array(ACTIVATION),
        "bias": np.array(net.bias),
        "trained_on": np.array(net.trained_on),
    }
    if net.bias:
        arrays |= {name: getattr(net, name) for name in BIASES}
    return arrays


def from_arrays(arrays: dict[str, np.ndarray], inputs: int) -> Network:
    """Inverse of `to_arrays`, for a network of `inputs` inputs; raises ValueError naming what is
    missing or inconsistent."""
    missing = [key for key in (*WEIGHTS, "sizes", "classes", "loss", "bias") if key not in arrays]
    if missing:
        raise ValueError(f"missing array {missing[0]!r}")
    w1, w2, sizes = arrays["w1"], arrays["w2"], arrays["sizes"]
    if w1.dtype not in FLOATS or w2.dtype != w1.dtype or w1.ndim != 2 or w2.ndim != 2:
        raise ValueError(f"expected 2-d float weights, found w1 {w1.dtype}{w1.shape}, w2 {w2.dtype}{w2.shape}")
    classes = class_names(arrays["classes"], w2.shape[1])
    if classes != CLASSES:  # evaluate, predict and explore index the classes by the labels 0..2
        raise ValueError(f"expected the classes training writes, {', '.join(CLASSES)}, found {', '.join(classes)}")
    expected = (inputs, w1.shape[1], len(classes))
    if (
        sizes.dtype.kind != "i"
        or sizes.shape != (3,)
        or w1.shape[0] != inputs
        or w2.shape != expected[1:]
        or tuple(sizes.tolist()) != expected
    ):
        raise ValueError(f"inconsistent layer sizes: w1 {w1.shape}, w2 {w2.shape}, sizes {quoted(sizes, True)}")
    if not 1 <= w1.shape[1] <= MAX_HIDDEN:  # train.hidden's bounds: what the stages are sized for
        raise ValueError(f"expected 1 to {MAX_HIDDEN} hidden units (train.hidden's limits), found {w1.shape[1]}")
    activation = arrays.get("activation", np.array(ACTIVATION))
    if activation.shape != () or str(activation) != ACTIVATION:
        raise ValueError(f"expected the activation {ACTIVATION}, found {quoted(activation)}")
    loss, bias = arrays["loss"], arrays["bias"]
    if loss.shape != () or str(loss) not in LOSSES or bias.dtype != np.bool_ or bias.shape != ():
        raise ValueError(f"expected loss in {tuple(LOSSES)} and a boolean bias, found {quoted(loss)}, {quoted(bias)}")
    b1, b2 = (arrays.get("b1"), arrays.get("b2")) if bias else (None, None)
    if bias and (b1 is None or b2 is None or b1.shape != expected[1:2] or b2.shape != expected[2:]):
        raise ValueError("biases missing or of the wrong shape")
    for name, array in zip(PARAMETERS, (w1, w2, b1, b2)):
        if array is not None and (array.dtype != w1.dtype or not (np.abs(array) < MAX_WEIGHT).all()):
            found = "another dtype" if array.dtype != w1.dtype else _worst(array)
            raise ValueError(f"expected finite {w1.dtype} weights below 2^64 in size, found {found} in {name}")
    trained_on = arrays.get("trained_on", np.array(""))  # absent from models saved before it existed
    if trained_on.shape != () or trained_on.dtype.kind != "U" or not DIGEST.fullmatch(str(trained_on)):
        raise ValueError(f"expected trained_on, a digest of 16 hex digits, found {quoted(trained_on)}")
    return Network(w1, w2, b1, b2, str(loss), classes, str(trained_on))


def _worst(array: np.ndarray) -> str:
    """The value of `array` furthest from training's range: a NaN, else the largest in size."""
    return "NaN" if np.isnan(array).any() else f"{array.flat[np.argmax(np.abs(array))]:g}"


def class_names(classes: np.ndarray, outputs: int) -> tuple[str, ...]:
    """The names of the `outputs` outputs, if they are names training could have written: distinct
    words of CLASS_NAME. A name reaches pages (the explorer, DVC's plots page, which embeds it
    unescaped) and terminals: nothing else is loaded. Lengths are checked before any name is read."""
    expected = f"expected class names of 1 to {MAX_CLASS_NAME} letters, digits, '_' or '-'"
    if classes.dtype.kind != "U" or classes.ndim != 1:
        kind = "bytes" if classes.dtype.kind == "S" else f"{classes.dtype}{classes.shape}"
        raise ValueError(f"{expected}, found {kind}")
    if len(classes) != outputs:
        raise ValueError(f"expected {outputs} class names, one per output, found {len(classes)}")
    longest = int(np.char.str_len(classes).max(initial=0))
    if longest > 4 * MAX_CLASS_NAME:  # too long to show in a line: its length will do
        raise ValueError(f"{expected}, found a name of {longest} characters")
    names = tuple(str(c) for c in classes)
    for i, name in enumerate(names):
        if not CLASS_NAME.fullmatch(name):
            raise ValueError(f"{expected}, found {shown(repr(name))}")
        if name in names[:i]:
            raise ValueError(f"expected distinct class names, found {name!r} twice")
    return names
