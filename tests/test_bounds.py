"""Sizes: what a run needs is estimated before anything is allocated, and git-tracked outputs stay small.

pipeline/params.py refuses a run whose estimated peak memory passes MEMORY_LIMIT; here the estimate is
checked against what the stages' own functions allocate (tracemalloc sees NumPy's buffers), and the
explorer page, the one output whose size grew with the network and the epochs together, is built at
the largest network and the most epochs params.yaml allows.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from pipeline import explore
from pipeline.artifacts import TRACE_POINTS
from pipeline.evaluate import moved_glyphs, robustness
from pipeline.glyphs import CLASSES, PIXELS
from pipeline.make_dataset import make_dataset
from pipeline.model import init_network
from pipeline.params import MAX_EPOCHS, MAX_HIDDEN, load_params, memory_needed
from pipeline.train import train
from tests.conftest import ROOT

COMMITTED = load_params(ROOT / "params.yaml")


def with_(section: str, **values):
    """The committed params with some keys of one section changed."""
    return dataclasses.replace(COMMITTED, **{section: dataclasses.replace(getattr(COMMITTED, section), **values)})


def peak(work: Callable[[], object]) -> int:
    """The most bytes Python and NumPy held at once while `work` ran, beyond what they held before."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def estimate(p) -> int:
    return sum(size for size, _, _ in memory_needed(p))  # the parts, without the interpreter's own


@pytest.fixture(scope="module")
def many_glyphs():
    p = with_("dataset", train_per_class=100_000)
    data = make_dataset(p.dataset)
    return p, data["train"]


def test_the_estimate_covers_what_make_dataset_allocates(many_glyphs):
    p, _ = many_glyphs
    assert peak(lambda: make_dataset(p.dataset)) <= estimate(p)


def test_the_estimate_covers_training_on_many_glyphs(many_glyphs):
    p, (X, y) = many_glyphs
    p = dataclasses.replace(p, train=dataclasses.replace(p.train, epochs=1, batch_size=1024, shuffle=True))
    assert peak(lambda: train(p.train, X, y)) <= estimate(p)


def test_the_estimate_covers_a_large_batch_of_a_wide_network():
    p = with_("train", hidden=256, batch_size=15_003, epochs=1, shuffle=True)
    p = dataclasses.replace(p, dataset=dataclasses.replace(p.dataset, train_per_class=5_000))
    X, y = make_dataset(p.dataset)["train"]
    assert peak(lambda: train(p.train, X, y)) <= estimate(p)


def test_the_estimate_covers_the_explorer_page_of_many_glyphs(many_glyphs):
    p, (X, y) = many_glyphs
    p = dataclasses.replace(p, train=dataclasses.replace(p.train, batch_size=64))
    net = init_network(np.random.default_rng(0), PIXELS, 5, CLASSES, "bce", False, np.dtype(np.float64))
    trace = {"epoch": np.arange(2), "w1": np.stack([net.w1] * 2), "w2": np.stack([net.w2] * 2)}
    history = {"loss": np.ones(1), "accuracy": np.ones(1)}
    assert peak(lambda: explore.render_page(explore.page_data(p.train, net, trace, history, X, y, []))) <= estimate(p)


def test_the_estimate_covers_evaluate_noisy_glyphs():
    p = with_("evaluate", per_class=100_000, noise_levels=(0.1,))
    net = init_network(np.random.default_rng(0), PIXELS, 5, CLASSES, "bce", False, np.dtype(np.float64))
    used = peak(lambda: (robustness(net, p.evaluate), moved_glyphs(net, p.evaluate, 0.1)))
    assert used <= estimate(p)


def test_the_explorer_page_stays_small_for_the_widest_network_and_the_most_epochs():
    p = with_("train", hidden=MAX_HIDDEN, epochs=MAX_EPOCHS, shuffle=True, bias=True)
    rng = np.random.default_rng(0)
    net = init_network(rng, PIXELS, MAX_HIDDEN, CLASSES, "bce", True, np.dtype(np.float64))
    stride = -(-MAX_EPOCHS // TRACE_POINTS)  # as train.py keeps them
    epochs = np.array(sorted({0, *range(stride, MAX_EPOCHS, stride), MAX_EPOCHS}))
    trace = {
        name: np.repeat(array[None], len(epochs), axis=0)
        for name, array in (("w1", net.w1), ("w2", net.w2), ("b1", net.b1), ("b2", net.b2))
    } | {"epoch": epochs}
    history = {"loss": rng.random(MAX_EPOCHS), "accuracy": rng.random(MAX_EPOCHS)}
    X, y = make_dataset(COMMITTED.dataset)["train"]
    data = explore.page_data(p.train, net, trace, history, X, y, [])
    page = explore.render_page(data)
    assert len(page.encode()) < 1_500_000, len(page)  # 56 MB with every snapshot inline
    shown = data["trace"]["epochs"]
    assert shown[0] == 0 and shown[-1] == MAX_EPOCHS and len(shown) >= 2


@pytest.mark.parametrize(
    "snapshots,size,expected",
    [
        (301, 1320, list(range(301))),  # the robust recipe's page: every snapshot, as before
        (296, 139_288, [0, 148, 295]),  # 512 hidden units with biases: three
        (301, 10**9, [0, 300]),  # never fewer than the first and the last
        (1, 10**9, [0]),
    ],
)
def test_the_page_keeps_evenly_spaced_snapshots_within_its_budget(snapshots, size, expected):
    kept = explore.thinned(snapshots, size)
    assert kept == expected
    assert len(kept) <= max(2, explore.PAGE_WEIGHTS // size)
