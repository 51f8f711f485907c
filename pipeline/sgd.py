"""The training loop: mini-batch SGD over uint8 pixels, one `model.sgd_step` per batch.

uint8 pixels become floats one block of rows at a time, so memory stays near the size of the uint8
data. An epoch's loss and accuracy are those of each example's forward pass just before its update
(as the tutorial records them): the logits each step computed on the way.

Two engines run the epochs and give the same bits: NumPy (`model.sgd_step`, the reference) and the
compiled one (`compiled.py`, Numba). `engine()` picks one; it is never a parameter, since the
results do not depend on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError
from pipeline.model import LOSSES, Network, accuracy, loss_value, sgd_step
from pipeline.portable import exp_limit

BLOCK_ROWS = 8192  # rows converted to float at once: (8192, 30) float64 is 2 MiB, cache-sized
ENGINE_VARIABLE = "PIPELINE_ENGINE"  # numpy, numba or auto (the default)
THREADS_VARIABLES = ("PIPELINE_THREADS", "NUMBA_NUM_THREADS")  # the compiled engine's threads: the first set
MAX_THREADS = 64
# What auto weighs, in seconds: a cost a batch and a cost an example, fitted to bench.py's samples/s at
# batches 1, 64 and 1024 (benchmarks/README.md, a quiet 2-core AMD EPYC; each within 20% of the three):
# NumPy 55 us a batch and 0.26 us an example; the compiled engine 0.4 us and 0.085 us, after a load of
# about 0.1 s and, the first time on a machine (or after an edit of its sources), a compile.
NUMPY_BATCH_SECONDS, NUMPY_EXAMPLE_SECONDS = 55e-6, 0.26e-6
COMPILED_BATCH_SECONDS, COMPILED_EXAMPLE_SECONDS, LOAD_SECONDS = 0.4e-6, 0.085e-6, 0.1
COMPILE_SECONDS = 16.0  # one dtype, on a quiet machine (measured: benchmarks/README.md)
NOTE_SECONDS = 2.0  # a run expected to take longer says which engine trains it


class Diverged(ArithmeticError):
    """The loss became NaN or infinite, or the logits left the range where exp is computed."""

    def __init__(self, epoch: int, loss: float, largest: float, limit: float) -> None:
        if np.isfinite(loss):
            super().__init__(f"logits reached {largest:.3g} at epoch {epoch}, beyond exp's range ±{limit:g}")
        else:
            super().__init__(f"loss became {loss} at epoch {epoch}")
        self.epoch, self.loss = epoch, loss


@dataclass
class History:
    step: np.ndarray  # (epochs,) 1, 2, ...
    loss: np.ndarray  # (epochs,)
    accuracy: np.ndarray  # (epochs,)


def fit(
    net: Network,
    X: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator,
    on_epoch: Callable[[int, float, float], None] | None = None,
    engine_name: str | None = None,
    done: History | None = None,
) -> History:
    """Train `net` in place on X : (N, 30) uint8 and y : (N,) labels; raise Diverged on a non-finite loss.

    `on_epoch(epoch, loss, accuracy)` is called after every epoch (for progress display). `engine_name`
    is `choose`'s answer when the caller has it; else fit asks. `done`: the history of the epochs already
    trained (a resumed run: `net` and `rng` as they were after them); training goes on from the next.
    """
    limit = exp_limit(net.w1.dtype)  # beyond it sigmoid and softplus clip: the run has blown up
    threads_wanted()  # a bad thread count is an error whichever engine trains
    history = History(np.arange(1, epochs + 1), np.zeros(epochs), np.zeros(epochs))
    start = 0 if done is None else len(done.loss)
    if done is not None:
        history.loss[:start], history.accuracy[:start] = done.loss, done.accuracy
    Z2 = np.empty((len(X), net.sizes[2]), net.w1.dtype)  # each example's logits just before its update
    chosen = engine_name or choose(len(X), epochs, batch_size, net.w1.dtype)[0]
    run_epoch = numpy_epoch if chosen == "numpy" else compiled_epoch(X, y, net, batch_size)
    with np.errstate(over="ignore", invalid="ignore"):  # a runaway loss is reported once, as Diverged
        for i in range(start, epochs):
            order = rng.permutation(len(X)) if shuffle else np.arange(len(X))
            history.loss[i], history.accuracy[i], largest = run_epoch(net, X, y, order, lr, batch_size, Z2)
            if not np.isfinite(history.loss[i]) or largest > limit:
                raise Diverged(i + 1, history.loss[i], largest, limit)
            if on_epoch is not None:
                on_epoch(i + 1, history.loss[i], history.accuracy[i])
    return history


EpochRunner = Callable[
    [Network, np.ndarray, np.ndarray, np.ndarray, float, int, np.ndarray], tuple[float, float, float]
]


def choose(examples: int, epochs: int, batch_size: int, dtype: np.dtype | type) -> tuple[str, float]:
    """(engine, expected seconds) for training on `examples` glyphs: `engine`'s choice and its estimate."""
    steps, visits = epochs * -(-examples // batch_size), epochs * examples
    name = engine(steps, visits, dtype)
    return name, estimate(steps, visits, name, ready=name == "numpy" or _ready(dtype))


def pays_to_compile(runs: list[tuple[int, int, int]]) -> bool:
    """Whether one compile of the engine, then each run of (examples, epochs, batch_size) with whichever
    engine is faster once it is ready, costs less than every run with NumPy: a sweep's question."""
    numpy_total = compiled_total = 0.0
    for examples, epochs, batch_size in runs:
        steps, visits = epochs * -(-examples // batch_size), epochs * examples
        numpy_seconds = estimate(steps, visits, "numpy")
        numpy_total += numpy_seconds
        compiled_total += min(numpy_seconds, estimate(steps, visits, "numba"))
    return COMPILE_SECONDS + compiled_total < numpy_total


def _ready(dtype: np.dtype | type) -> bool:
    from pipeline import native

    return native.is_ready(dtype)


def describe(name: str, seconds: float, examples: int, epochs: int, batch_size: int, dtype) -> str:
    """One line for stderr naming the engine that trains a run expected to take `seconds`; when it is
    NumPy, what the compiled engine would take once ready."""
    if name == "numba":
        return f"train: the compiled engine trains (about {seconds:.0f} s)"
    steps, visits = epochs * -(-examples // batch_size), epochs * examples
    faster = estimate(steps, visits, "numba")
    line = f"train: NumPy trains (about {seconds:.0f} s)"
    if faster < seconds / 2 and os.environ.get(ENGINE_VARIABLE) != "numpy":
        line += (
            f"; the compiled engine would take about {faster:.0f} s: `python -m pipeline.compiled` makes it ready, once"
        )
    return line


def estimate(steps: int, examples: int, engine: str, ready: bool = True) -> float:
    """Seconds a run of `steps` batches and `examples` example visits takes with `engine`, getting the
    compiled engine ready included (a load, or a compile when it is not `ready` on this machine)."""
    if engine == "numpy":
        return steps * NUMPY_BATCH_SECONDS + examples * NUMPY_EXAMPLE_SECONDS
    setup = LOAD_SECONDS if ready else COMPILE_SECONDS
    return setup + steps * COMPILED_BATCH_SECONDS + examples * COMPILED_EXAMPLE_SECONDS


def engine(steps: int, examples: int, dtype: np.dtype | type = np.float64) -> str:
    """Which engine trains a run of `steps` batches and `examples` example visits: "numpy" or "numba",
    as PIPELINE_ENGINE asks (numpy, numba, or auto: whichever costs less, getting it ready included)."""
    asked = os.environ.get(ENGINE_VARIABLE, "auto")
    if asked not in ("numpy", "numba", "auto"):
        raise PipelineError(f"{ENGINE_VARIABLE}: expected numpy, numba or auto, found {asked!r}")
    numpy_seconds = estimate(steps, examples, "numpy")
    if asked == "numpy" or (asked == "auto" and numpy_seconds < estimate(steps, examples, "numba")):
        return "numpy"
    from pipeline import native

    ready = native.is_ready(dtype)
    if asked == "auto" and not ready and numpy_seconds < estimate(steps, examples, "numba", ready=False):
        return "numpy"
    if not ready:
        try:
            import numba  # noqa: F401  (the compiler: needed once per machine)
        except ImportError as err:  # Numba missing or broken on this machine
            if asked == "numba":
                raise PipelineError(f"{ENGINE_VARIABLE}=numba: the compiled engine cannot load: {err}") from None
            print(f"note: training with NumPy: the compiled engine cannot load ({err})", file=sys.stderr)
            return "numpy"
        print(
            f"note: compiling the training engine for this machine, once (about {COMPILE_SECONDS:.0f} s; "
            "`python -m pipeline.compiled` does it ahead)",
            file=sys.stderr,
        )
    return "numba"


def numpy_epoch(
    net: Network, X: np.ndarray, y: np.ndarray, order: np.ndarray, lr: float, batch_size: int, Z2: np.ndarray
) -> tuple[float, float, float]:
    """One epoch with `model.sgd_step`: (loss, accuracy, largest |logit|) of the logits Z2 it visited."""
    train_epoch(net, X, y, order, lr, batch_size, Z2)
    return epoch_summary(net.loss, Z2, y[order])


def epoch_summary(loss: str, Z2: np.ndarray, visited: np.ndarray) -> tuple[float, float, float]:
    """(loss, accuracy, largest |logit|) of an epoch's logits Z2 : (N, K) against the labels it visited."""
    return loss_value(loss, Z2, visited), accuracy(Z2, visited), float(np.max(np.abs(Z2), initial=0.0))


def compiled_epoch(X: np.ndarray, y: np.ndarray, net: Network, batch_size: int) -> EpochRunner:
    """`numpy_epoch`, compiled: the same bits (`compiled.py`), through the machine code `native.py`
    loads (compiled first, once per machine, when the cache has none). X and y are made contiguous,
    and y int64, once: the types the entry point takes."""
    from pipeline import native

    dtype = net.w1.dtype
    function = native.load(dtype)
    if function is None:
        from pipeline import compiled

        compiled.compile_ahead((dtype,))
        function = native.load(dtype)
    X_c, y_c = np.ascontiguousarray(X, np.uint8), np.ascontiguousarray(y, np.int64)
    T, none = native.tables(dtype), np.empty(0, dtype)
    threads = threads_for(min(batch_size, len(X))) if function is not None else 1
    ws = native.workspace(len(X), batch_size, net.sizes[1], net.sizes[2], X.shape[1], dtype, threads)

    def run(net, X, y, order, lr, batch_size, Z2):  # numpy_epoch's signature
        b1, b2 = (net.b1, net.b2) if net.bias else (none, none)
        args = (X_c, y_c, order, dtype.type(lr), batch_size, native.LOSS_IDS[net.loss], net.w1, net.w2, b1, b2, Z2, T)
        if function is not None:
            total, correct, largest = native.epoch(function, *args, ws, threads)
        else:  # the compiled code would not link here: a copy Numba compiles for Python (`from_python`)
            from pipeline import compiled

            total, correct, largest = compiled.from_python(compiled.train_epoch)(*args, *ws, 0, 1)
        return total / LOSSES[net.loss].count(*Z2.shape), correct / len(order), largest

    return run


def threads_wanted() -> int:
    """How many threads the compiled engine may use: PIPELINE_THREADS, else NUMBA_NUM_THREADS, else
    `default_threads`' count, else the cores this process may run on. Never a parameter: every count
    gives the same bits."""
    for name in THREADS_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text:
            if not text.isdigit() or not 1 <= int(text) <= MAX_THREADS:
                raise PipelineError(f"{name}: expected a whole number from 1 to {MAX_THREADS}, found {text[:40]!r}")
            return int(text)
    return _default_threads.get() or max(1, min(len(os.sched_getaffinity(0)), MAX_THREADS))


_default_threads: contextvars.ContextVar[int | None] = contextvars.ContextVar("default_threads", default=None)


@contextlib.contextmanager
def default_threads(count: int) -> Iterator[None]:
    """Within: `count` threads unless a variable asks otherwise (a sweep's trial: its workers are the
    sweep's parallelism, and a trial on every core would share each with the others)."""
    token = _default_threads.set(count)
    try:
        yield
    finally:
        _default_threads.reset(token)


def threads_for(batch_size: int) -> int:
    """The threads worth starting for batches of `batch_size`: at most one per native.MIN_COLUMNS examples."""
    from pipeline.native import MIN_COLUMNS

    return max(1, min(threads_wanted(), batch_size // MIN_COLUMNS))


def train_epoch(
    net: Network, X: np.ndarray, y: np.ndarray, order: np.ndarray, lr: float, batch_size: int, Z2: np.ndarray
) -> None:
    """One pass over the examples in `order`, batch by batch; Z2[i] gets the i-th visited example's logits."""
    block = max(1, BLOCK_ROWS // batch_size) * batch_size  # whole batches only
    for start in range(0, len(order), block):
        visit = order[start : start + block]
        pixels, labels = X[visit].astype(np.float64), y[visit]
        for first in range(0, len(visit), batch_size):
            rows = slice(first, first + batch_size)
            Z2[start + first : start + first + len(labels[rows])] = sgd_step(net, pixels[rows], labels[rows], lr)
