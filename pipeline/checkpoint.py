"""The trained model file: a network saved with what is needed to use it without params.yaml.

models/model.npz holds plain arrays (no pickles): w1, w2, b1/b2 when biases are on, the layer
sizes, the class names, the loss it was trained with, the activation, whether biases are on, and a
digest of the training set (so predict can tell whether data/x_train.npy is the set it learned from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import load_npz, save_npz, stale
from pipeline.model import ACTIVATION, LOSSES, Network


def save_network(path: Path, net: Network) -> None:
    save_npz(path, to_arrays(net))


def load_network(path: Path, inputs: int) -> Network:
    """The network saved by the train stage at `path`, which must take `inputs` inputs."""
    try:
        return from_arrays(load_npz(path, "train"), inputs)
    except ValueError as err:
        raise stale(path, f"not a model file ({err})", "train") from None


def to_arrays(net: Network) -> dict[str, np.ndarray]:
    """Everything needed to rebuild `net`, as arrays for np.savez (no pickled objects)."""
    arrays = {
        "w1": net.w1,
        "w2": net.w2,
        "sizes": np.array(net.sizes, dtype=np.int64),
        "classes": np.array(net.classes),
        "loss": np.array(net.loss),
        "activation": np.array(ACTIVATION),
        "bias": np.array(net.bias),
        "trained_on": np.array(net.trained_on),
    }
    if net.bias:
        arrays |= {"b1": net.b1, "b2": net.b2}
    return arrays


def from_arrays(arrays: dict[str, np.ndarray], inputs: int) -> Network:
    """Inverse of `to_arrays`, for a network of `inputs` inputs; raises ValueError naming what is
    missing or inconsistent."""
    missing = [key for key in ("w1", "w2", "sizes", "classes", "loss", "bias") if key not in arrays]
    if missing:
        raise ValueError(f"missing array {missing[0]!r}")
    w1, w2, sizes, classes = arrays["w1"], arrays["w2"], arrays["sizes"], arrays["classes"]
    if w1.dtype.kind != "f" or w2.dtype != w1.dtype or w1.ndim != 2 or w2.ndim != 2 or classes.ndim != 1:
        raise ValueError(f"expected 2-d float weights, found w1 {w1.dtype}{w1.shape}, w2 {w2.dtype}{w2.shape}")
    expected = (inputs, w1.shape[1], len(classes))
    if w1.shape[0] != inputs or w2.shape != expected[1:] or tuple(sizes.tolist()) != expected:
        raise ValueError(f"inconsistent layer sizes: w1 {w1.shape}, w2 {w2.shape}, sizes {sizes.tolist()}")
    activation = arrays.get("activation", np.array(ACTIVATION))
    if activation.shape != () or str(activation) != ACTIVATION:
        raise ValueError(f"expected the activation {ACTIVATION}, found {activation!s}")
    loss, bias = arrays["loss"], arrays["bias"]
    if loss.shape != () or str(loss) not in LOSSES or bias.dtype != np.bool_ or bias.shape != ():
        raise ValueError(f"expected loss in {tuple(LOSSES)} and a boolean bias, found {loss!s}, {bias!s}")
    b1, b2 = (arrays.get("b1"), arrays.get("b2")) if bias else (None, None)
    if bias and (b1 is None or b2 is None or b1.shape != expected[1:2] or b2.shape != expected[2:]):
        raise ValueError("biases missing or of the wrong shape")
    trained_on = arrays.get("trained_on", np.array(""))  # absent from models saved before it existed
    if trained_on.shape != () or trained_on.dtype.kind != "U":
        raise ValueError(f"expected a string trained_on, found {trained_on.dtype}{trained_on.shape}")
    return Network(w1, w2, b1, b2, str(loss), tuple(str(c) for c in classes), str(trained_on))
