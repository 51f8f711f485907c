"""How many of 100 seeds reach 100% training accuracy, by epoch count, with the train params of params.yaml.

    python benchmarks/seeds.py [--seeds 100] [--epochs 50,100,200,300,500]

The default `train.epochs` was chosen with this script: its comment in params.yaml quotes the figure.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from pipeline.glyphs import CLASSES, PIXELS, clean_glyphs
from pipeline.model import accuracy, init_network, logits
from pipeline.params import load_params
from pipeline.sgd import fit


def reached(p, seed: int, checkpoints: list[int]) -> list[bool]:
    """For one seed, whether the network classifies all three glyphs after each checkpoint's epochs."""
    X, y = clean_glyphs(), np.arange(3, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    net = init_network(rng, PIXELS, p.hidden, CLASSES, p.loss, p.bias)
    done, out = 0, []
    for epochs in checkpoints:
        fit(net, X, y, lr=p.lr, epochs=epochs - done, batch_size=p.batch_size, shuffle=p.shuffle, rng=rng)
        done = epochs
        out.append(accuracy(logits(net, X), y) == 1.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--epochs", default="50,100,150,200,300,500,1000")
    args = parser.parse_args()
    checkpoints = sorted(int(e) for e in args.epochs.split(","))
    p = load_params().train
    print(f"train params: {dataclasses.asdict(p)} (epochs and seed varied here)")
    table = np.array([reached(p, seed, checkpoints) for seed in range(args.seeds)])
    for epochs, count in zip(checkpoints, table.sum(axis=0)):
        print(f"{epochs:6d} epochs: {count:3d} of {args.seeds} seeds reach 100% training accuracy")


if __name__ == "__main__":
    main()
