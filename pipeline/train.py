"""Stage train: fit the 30-H-3 sigmoid network with SGD.

    python -m pipeline.train

Reads `train.*` from params.yaml and data/{x,y}_train.npy; writes models/model.npz (weights plus
layer sizes, class names, loss, whether biases are on, and a digest of the training set) and
metrics/history.tsv (per epoch: step, loss, accuracy).
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from pipeline.artifacts import HISTORY_PATH, digest, load_split, save_tsv
from pipeline.checkpoint import MODEL_PATH, save_network
from pipeline.errors import PipelineError, exit_on_error
from pipeline.model import Network, init_network
from pipeline.params import TrainParams, load_params
from pipeline.progress import Progress
from pipeline.sgd import Diverged, History, fit



def train(p: TrainParams, X: np.ndarray, y: np.ndarray) -> tuple[Network, History]:
    """A network trained on X : (N, 30) uint8, y : (N,) labels, and its per-epoch history."""
    rng = np.random.default_rng(p.seed)  # one stream: initial weights first, then the shuffles
    net = init_network(rng, p.hidden, p.loss, p.bias, np.dtype(p.dtype))
    progress = Progress(p.epochs)
    try:
        history = fit(net, X, y, lr=p.lr, epochs=p.epochs, batch_size=p.batch_size, shuffle=p.shuffle, rng=rng,
                      on_epoch=progress)
    except Diverged as err:
        raise PipelineError(f"train: {err}; try a smaller train.lr (now {p.lr})", status=1) from None
    finally:
        progress.close()
    return dataclasses.replace(net, trained_on=digest(X, y)), history


def main() -> None:
    argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.splitlines()[0]).parse_args()
    params = load_params()
    X, y = load_split("train")
    net, history = train(params.train, X, y)
    save_network(MODEL_PATH, net)
    save_tsv(HISTORY_PATH, {"step": history.step, "loss": history.loss, "accuracy": history.accuracy})


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
