"""Stage train: fit the 30-H-3 sigmoid network with SGD.

    python -m pipeline.train

Reads `train.*` from params.yaml and data/{x,y}_train.npy; writes models/model.npz (weights plus
layer sizes, class names, loss, whether biases are on, a digest of the training set and its distinct glyphs),
models/trace.npz (the weights before training and after each epoch, for the explorer page; at most
TRACE_POINTS of them, evenly spaced) and metrics/history.tsv (per epoch: step, loss, accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable

import numpy as np

from pipeline import paths
from pipeline.artifacts import TRACE_POINTS, digest, load_split
from pipeline.checkpoint import distinct_glyphs, save_network
from pipeline.errors import PipelineError, exit_on_error
from pipeline.glyphs import CLASSES, PIXELS
from pipeline.model import Network, init_network
from pipeline.params import TrainParams, Watch, load_params, unchanged
from pipeline.progress import Progress
from pipeline.resume import Checkpoints, LiveHistory, resumed, run_key
from pipeline.sgd import NOTE_SECONDS, Diverged, History, choose, describe, fit
from pipeline.writing import save_npz, save_tsv, together


def train(
    p: TrainParams,
    X: np.ndarray,
    y: np.ndarray,
    checkpoints: Checkpoints | None = None,
    watch: Callable[[], None] | None = None,
) -> tuple[Network, History, dict[str, np.ndarray]]:
    """A network trained on X : (N, 30) uint8, y : (N,) labels, its per-epoch history, and its trace:
    {'epoch': (E,), 'w1': (E, 30, H), 'w2': (E, H, K)[, 'b1', 'b2']}, epoch 0 the initial weights.

    With `checkpoints`, the stage's own run: it resumes from the run's checkpoint if there is one, saves
    one as it goes, draws its progress, names its engine, and under DVC writes the history as it grows
    (`resume.py`). Without (a sweep's trial, a notebook), it trains and says nothing. `watch`, called
    after each epoch, may stop the run by raising (`params.Watch`: params.yaml changed under it)."""
    rng = np.random.default_rng(p.seed)  # one stream: initial weights first, then the shuffles
    net = init_network(rng, PIXELS, p.hidden, CLASSES, p.loss, p.bias, np.dtype(p.dtype))
    stride = -(-p.epochs // TRACE_POINTS) or 1
    snapshots, done = {0: weights(net)}, None
    state = checkpoints.load(net, p.epochs, stride) if checkpoints is not None else None
    if state is not None:
        net, done = resumed(net, rng, state)
        snapshots = state.snapshots
        print(f"train: resuming after epoch {len(done.loss)} of {p.epochs} ({checkpoints.path})", file=sys.stderr)
    start = 0 if done is None else len(done.loss)
    engine, seconds = choose(len(X), p.epochs - start, p.batch_size, net.w1.dtype)
    if checkpoints is not None and seconds > NOTE_SECONDS:  # a long run says which engine trains it, once
        print(describe(engine, seconds, len(X), p.epochs - start, p.batch_size, net.w1.dtype), file=sys.stderr)
    progress = Progress(p.epochs) if checkpoints is not None else None
    live = LiveHistory() if checkpoints is not None and os.environ.get("DVC_ROOT") else None
    losses, accuracies = ([], []) if done is None else (done.loss.tolist(), done.accuracy.tolist())
    for epoch, (loss, accuracy) in enumerate(zip(losses, accuracies), start=1):
        if live is not None:
            live.add(epoch, loss, accuracy)

    def after_epoch(epoch: int, loss: float, accuracy: float) -> None:
        if watch is not None:
            watch()
        if epoch % stride == 0 or epoch == p.epochs:
            snapshots[epoch] = weights(net)
        if checkpoints is None:
            return
        progress(epoch, loss, accuracy)
        losses.append(loss)
        accuracies.append(accuracy)
        if live is not None:
            live.add(epoch, loss, accuracy)
        if epoch < p.epochs:
            checkpoints.save(epoch, net, rng, losses, accuracies, snapshots)

    try:
        history = fit(
            net,
            X,
            y,
            lr=p.lr,
            epochs=p.epochs,
            batch_size=p.batch_size,
            shuffle=p.shuffle,
            rng=rng,
            on_epoch=after_epoch,
            engine_name=engine,
            done=done,
        )
    except Diverged as err:
        raise PipelineError(f"train: {err}; try a smaller train.lr (now {p.lr})", status=1) from None
    finally:
        if progress is not None:
            progress.close()
        if live is not None:
            live.close()
    trace = {"epoch": np.array(list(snapshots), dtype=np.int64)}
    trace |= {name: np.stack([s[name] for s in snapshots.values()]) for name in snapshots[0]}
    return dataclasses.replace(net, trained_on=digest(X, y)), history, trace


def weights(net: Network) -> dict[str, np.ndarray]:
    """Copies of the network's weights, by name."""
    return {name: array.copy() for name, array in net.parameters().items()}


def main() -> None:
    argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.splitlines()[0]).parse_args()
    params = load_params()
    X, y = load_split("train")
    checkpoints = Checkpoints(run_key(params.train, X, y))
    net, history, trace = train(params.train, X, y, checkpoints, Watch(params, "train"))
    with together():  # the model, its trace and its history agree, or the old ones stay
        save_network(paths.MODEL, net, distinct_glyphs(X, y))
        save_npz(paths.TRACE, trace)
        save_tsv(paths.HISTORY, {"step": history.step, "loss": history.loss, "accuracy": history.accuracy})
        unchanged(params, "train")  # last in the block: the files land only if params.yaml held still
    checkpoints.remove()


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
