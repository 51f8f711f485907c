"""Digests of what training and evaluation write, for many configurations: run it on two machines
(or under two NumPy dispatch levels, two BLAS kernels, an aarch64 emulator) and compare the output.

    python tests/fingerprints.py [--stages]   # from the project root; prints one JSON object

--stages first runs the pipeline's stages in this process, as `python -m pipeline.STAGE` would
(an emulator then starts Python and imports NumPy and Matplotlib once, not six times).

Each configuration trains on noisy glyphs from make_dataset's generator, then computes what the
evaluate and predict stages would store: test logits, loss, accuracy and sigmoid scores. Its digest
covers the model file's bytes, the history as train writes it, and those arrays' bytes. The 24
configurations take about half a second here, and 12 s under qemu's aarch64 emulation. Two more
(`large-...`) train on 9,000 glyphs in one batch: their sums over the batch and the loss run past
8,192 terms, where NumPy before 2.3 summed in another order than np.add.reduce does now (see
`portable.pairwise_sum`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.checkpoint import to_arrays
from pipeline.errors import exit_on_error
from pipeline.glyphs import clean_glyphs, noisy_copies
from pipeline.model import accuracy, logits, loss_value, sigmoid
from pipeline.params import TrainParams
from pipeline.train import train
from pipeline.writing import save_npz, save_tsv

SAMPLES_PER_CLASS = 700  # 2,100 training glyphs: two whole batches of 1024 and a short one
LARGE_PER_CLASS = 3000  # 9,000 glyphs in one batch: more than NumPy's 8,192-element buffer


def configurations() -> dict[str, TrainParams]:
    """Both dtypes, both losses, biases on and off, batch sizes 1, 64 and 1024 with shuffling."""
    configs = {}
    for dtype, loss, bias, batch in itertools.product(
        ("float64", "float32"), ("bce", "mse"), (False, True), (1, 64, 1024)
    ):
        name = f"{dtype}-{loss}-{'bias' if bias else 'nobias'}-bs{batch}"
        configs[name] = TrainParams(
            hidden=5,
            lr=0.5,
            epochs=2 if batch > 1 else 1,
            batch_size=batch,
            loss=loss,
            bias=bias,
            seed=3,
            shuffle=True,
            dtype=dtype,
        )
    return configs


def large_configurations() -> dict[str, TrainParams]:
    """Whole-set batches of LARGE_PER_CLASS * 3 glyphs, biased (a column sum), in both dtypes."""
    return {
        f"large-{dtype}-{loss}-bias-bs{3 * LARGE_PER_CLASS}": TrainParams(
            hidden=5,
            lr=0.5,
            epochs=2,
            batch_size=3 * LARGE_PER_CLASS,
            loss=loss,
            bias=True,
            seed=3,
            shuffle=True,
            dtype=dtype,
        )
        for dtype, loss in (("float64", "bce"), ("float32", "mse"))
    }


def digest(params: TrainParams, data: tuple[np.ndarray, ...], scratch: Path) -> str:
    x_train, y_train, x_test, y_test = data
    if params.batch_size == 1:  # per-sample steps on a tenth of the data: an emulator is slow
        x_train, y_train = x_train[::10], y_train[::10]
    net, history, _ = train(params, x_train, y_train)
    save_npz(scratch / "model.npz", to_arrays(net))
    save_tsv(scratch / "history.tsv", {"step": history.step, "loss": history.loss, "accuracy": history.accuracy})
    z = logits(net, x_test)
    stored = io.BytesIO()
    np.save(stored, np.array([loss_value(net.loss, z, y_test), accuracy(z, y_test)]))
    np.save(stored, z)
    np.save(stored, sigmoid(z))
    h = hashlib.sha256()
    for part in ((scratch / "model.npz").read_bytes(), (scratch / "history.tsv").read_bytes(), stored.getvalue()):
        h.update(part)
    return h.hexdigest()[:16]


def run_stages() -> None:
    """Each stage's main(), as its `python -m` entry point runs it; a failure ends this process."""
    for stage in ("check_params", "make_dataset", "train", "evaluate", "predict", "explore"):
        sys.argv = [f"python -m pipeline.{stage}"]
        status = exit_on_error(importlib.import_module(f"pipeline.{stage}").main)
        if status:
            raise SystemExit(f"fingerprints.py: {stage} exited {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", action="store_true", help="first run the stages, in this process")
    if parser.parse_args().stages:
        run_stages()
    train_rng, test_rng = np.random.default_rng(11).spawn(2)
    data = (
        *noisy_copies(clean_glyphs(), SAMPLES_PER_CLASS, 0.1, train_rng),
        *noisy_copies(clean_glyphs(), 200, 0.2, test_rng),
    )
    large = (*noisy_copies(clean_glyphs(), LARGE_PER_CLASS, 0.1, np.random.default_rng(12)), *data[2:])
    with tempfile.TemporaryDirectory() as tmp:
        digests = {name: digest(params, data, Path(tmp)) for name, params in configurations().items()}
        digests |= {name: digest(params, large, Path(tmp)) for name, params in large_configurations().items()}
        print(json.dumps(digests, indent=1))


if __name__ == "__main__":
    main()
