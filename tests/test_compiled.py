"""The compiled engine (pipeline/compiled.py) against the NumPy reference: the same bytes, every time.

Training runs in this process with each engine (PIPELINE_ENGINE) and the weights and history are
compared byte for byte; the kernels are checked one by one against portable.py on inputs aimed at
their edges; other CPUs' code is compiled in child processes (NUMBA_CPU_NAME), checked for fused
multiply-adds, and run where this CPU can run it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import pipeline
from pipeline import compiled, native, portable, sgd
from pipeline.compiled import from_python
from pipeline.errors import PipelineError
from pipeline.glyphs import CLASSES, PIXELS, clean_glyphs, noisy_copies
from pipeline.model import LOSSES, init_network
from tests.conftest import ROOT, assert_one_line_error, copy_of, env, run

FINGERPRINTS = ROOT / "tests" / "fingerprints.py"


def train_bytes(engine: str, monkeypatch, X, y, *, hidden, dtype, loss, bias, batch, epochs=2, lr=0.5) -> bytes:
    monkeypatch.setenv("PIPELINE_ENGINE", engine)
    net = init_network(np.random.default_rng(3), PIXELS, hidden, CLASSES, loss, bias, np.dtype(dtype))
    history = sgd.fit(net, X, y, lr=lr, epochs=epochs, batch_size=batch, shuffle=True, rng=np.random.default_rng(5))
    arrays = [net.w1, net.w2, history.loss, history.accuracy] + ([net.b1, net.b2] if bias else [])
    return b"".join(a.tobytes() for a in arrays)


DATA = noisy_copies(clean_glyphs(), 700, 0.1, np.random.default_rng(0))  # 2,100 glyphs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("batch", [1, 7, 64, 1024, 2100])
def test_both_engines_train_the_same_bytes(dtype, loss, bias, batch, monkeypatch):
    X, y = DATA if batch > 1 else (DATA[0][::7], DATA[1][::7])  # batch 1: 300 steps an epoch
    runs = [
        train_bytes(e, monkeypatch, X, y, hidden=5, dtype=dtype, loss=loss, bias=bias, batch=batch) for e in ENGINES
    ]
    assert runs[0] == runs[1]


ENGINES = ("numpy", "numba")


@pytest.mark.parametrize("hidden", [3, 8])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_both_engines_agree_for_other_widths_and_a_larger_run(hidden, dtype, monkeypatch):
    X, y = noisy_copies(clean_glyphs(), 4000, 0.2, np.random.default_rng(1))  # 12,000 glyphs, batches end mid-data
    kwargs = {"hidden": hidden, "dtype": dtype, "loss": "mse", "bias": True, "batch": 333, "epochs": 3, "lr": 2.0}
    assert train_bytes("numpy", monkeypatch, X, y, **kwargs) == train_bytes("numba", monkeypatch, X, y, **kwargs)


@pytest.mark.parametrize(("examples", "batch"), [(2100, 1024), (1900, 384), (2100, 700)])
@pytest.mark.parametrize(("dtype", "loss", "bias"), [("float64", "bce", True), ("float32", "mse", False)])
def test_every_thread_count_trains_the_same_bytes(examples, batch, dtype, loss, bias, monkeypatch):
    """Batches shared by 2 and 3 threads (PIPELINE_THREADS), as the pairwise tree splits them (1024 in
    halves, 384 and 700 in quarters, 3 threads taking 1, 1 and 2), a short last batch that one thread
    trains alone after shared ones (52 and 180 examples) or that 2 of 3 threads share (364): NumPy's bytes."""
    X, y = DATA[0][:examples], DATA[1][:examples]
    kwargs = {"hidden": 5, "dtype": dtype, "loss": loss, "bias": bias, "batch": batch, "epochs": 3}
    expected = train_bytes("numpy", monkeypatch, X, y, **kwargs)
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("PIPELINE_THREADS", threads)
        assert train_bytes("numba", monkeypatch, X, y, **kwargs) == expected, threads
    assert sgd.threads_for(batch) == min(3, batch // native.MIN_COLUMNS)  # and they did share it


def test_two_trainings_at_once_in_one_process_each_share_their_batches_and_get_numpys_bytes(monkeypatch):
    """Two Python threads training at once (a Dask worker running two trials), each with 2 threads of its own."""
    from concurrent.futures import ThreadPoolExecutor

    X, y = DATA
    kwargs = {"hidden": 5, "dtype": "float64", "loss": "bce", "bias": True, "batch": 1024, "epochs": 4}
    expected = train_bytes("numpy", monkeypatch, X, y, **kwargs)
    monkeypatch.setenv("PIPELINE_ENGINE", "numba")
    monkeypatch.setenv("PIPELINE_THREADS", "2")
    train_bytes("numba", monkeypatch, X, y, **kwargs)  # the engine loaded before the threads start
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: train_bytes("numba", monkeypatch, X, y, **kwargs), range(2)))
    assert runs == [expected, expected]


def test_a_workspace_smaller_than_its_layout_is_refused_before_the_engine_runs():
    """`carve` cuts its views without checks, so the engine is never handed buffers shorter than
    `workspace` makes them (for this run, these threads): it would write past their ends."""
    X, y = DATA
    X, y, dtype = X[:600], y[:600].astype(np.int64), np.dtype(np.float64)
    net = init_network(np.random.default_rng(0), PIXELS, 5, CLASSES, "bce", False, dtype)
    none, Z2, order = np.empty(0, dtype), np.empty((len(X), len(CLASSES)), dtype), np.arange(len(X))
    arrays = (X, y, order, 0.1, 300, 0, net.w1, net.w2, none, none, Z2, native.tables(dtype))
    for made_for, threads in ((1, 2), (2, 2), (1, 1)):
        ws = native.workspace(len(X), 300, 5, len(CLASSES), PIXELS, dtype, made_for)
        if made_for == threads:  # one entry short
            ws = (*ws[:2], ws[2][:-1], *ws[3:])
        with pytest.raises(ValueError, match="workspace is smaller"):
            native.epoch(None, *arrays, ws, threads)


def test_only_the_first_thread_writes_the_epochs_figures():
    """Every thread of an epoch is handed the same result array. A helper that wrote its zeros there
    after the first thread wrote the epoch's figures (a helper descheduled on a busy machine) made the
    epoch's loss and accuracy 0 once in a while. A helper run alone (its barriers passed at once) must
    leave the array as it found it."""
    X, y = DATA
    X, y, dtype = X[:2000], y[:2000].astype(np.int64), np.dtype(np.float64)
    net = init_network(np.random.default_rng(0), PIXELS, 5, CLASSES, "bce", False, dtype)
    none, Z2, order = np.empty(0, dtype), np.empty((len(X), len(CLASSES)), dtype), np.arange(len(X))
    ws = native.workspace(len(X), 1024, 5, len(CLASSES), PIXELS, dtype, 2)
    T = native.tables(dtype)
    pointers, sizes = native.arguments(X, y, order, 1024, 0, net.w1, net.w2, none, none, Z2, T, ws, 2)
    function = native.load(dtype)
    if function is None:
        compiled.compile_ahead((dtype,))
        function = native.load(dtype)
    ws[1][0] = 1 << 40  # every barrier already passed
    dims, result = np.array([*sizes, 1, 2], np.int64), np.full(3, 7.0)
    function(*pointers, dims.ctypes.data, 0.1, result.ctypes.data)
    assert result.tolist() == [7.0, 7.0, 7.0]


def test_helpers_that_cannot_start_leave_one_thread_training_numpys_bytes(monkeypatch):
    """The system's limit on threads: the second of two helpers cannot start. The first must not wait at a
    barrier for it for ever; the run trains in one thread, to the same bytes."""
    from concurrent.futures import ThreadPoolExecutor

    class OneHelperOnly(ThreadPoolExecutor):
        def _adjust_thread_count(self):
            if len(self._threads) >= 1:
                raise RuntimeError("can't start new thread")
            super()._adjust_thread_count()

    X, y = DATA
    kwargs = {"hidden": 5, "dtype": "float64", "loss": "bce", "bias": True, "batch": 1024, "epochs": 2}
    expected = train_bytes("numpy", monkeypatch, X, y, **kwargs)
    monkeypatch.setenv("PIPELINE_ENGINE", "numba")
    monkeypatch.setenv("PIPELINE_THREADS", "3")
    monkeypatch.setattr(native, "ThreadPoolExecutor", OneHelperOnly)
    with ThreadPoolExecutor(1) as caller:  # a thread of its own: its helpers are made anew
        got = caller.submit(train_bytes, "numba", monkeypatch, X, y, **kwargs).result(timeout=120)
    assert got == expected


def test_the_fingerprints_are_numpys_with_one_thread_and_with_three():
    """tests/fingerprints.py's 26 configurations (batches of 1,024 and of 9,000, shared by threads), as
    the other CPUs' and aarch64's checks run them, with 1 and 3 threads."""
    numpy = run([sys.executable, str(FINGERPRINTS)], cwd=ROOT, PIPELINE_ENGINE="numpy").stdout
    for threads in ("1", "3"):
        got = run([sys.executable, str(FINGERPRINTS)], cwd=ROOT, PIPELINE_ENGINE="numba", PIPELINE_THREADS=threads)
        assert got.stdout == numpy, threads


def test_a_diverging_run_with_shared_batches_stops_as_numpys_does(monkeypatch):
    """Infinite gradients in a batch two threads share: the first thread's float sums, NumPy's NaN."""
    X, y = DATA
    messages = []
    for engine, threads in (("numpy", "1"), ("numba", "2")):
        monkeypatch.setenv("PIPELINE_ENGINE", engine)
        monkeypatch.setenv("PIPELINE_THREADS", threads)
        net = init_network(np.random.default_rng(3), PIXELS, 5, CLASSES, "bce", True)
        with pytest.raises(sgd.Diverged) as err:
            sgd.fit(net, X, y, lr=1e300, epochs=3, batch_size=512, shuffle=False, rng=np.random.default_rng(0))
        messages.append(str(err.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("value", ["0", "two", "-1", "65", "1.5"])
@pytest.mark.parametrize("name", sgd.THREADS_VARIABLES)
def test_a_bad_thread_count_is_one_line_naming_the_variable(name, value, monkeypatch):
    for other in sgd.THREADS_VARIABLES:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, value)
    expected = f"^{name}: expected a whole number from 1 to 64, found '{value}'$"
    with pytest.raises(PipelineError, match=expected.replace(".", r"\.")):
        sgd.threads_wanted()


def test_a_sweeps_trial_trains_in_one_thread_unless_a_variable_asks(monkeypatch):
    from pipeline.sweep import work

    for name in sgd.THREADS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    seen = []
    monkeypatch.setattr(work, "parse_params", lambda doc: doc)
    monkeypatch.setattr(work, "measure", lambda p: seen.append(sgd.threads_wanted()) or {})
    work.run_trial({}, [])
    monkeypatch.setenv("PIPELINE_THREADS", "2")
    work.run_trial({}, [])
    assert seen == [1, 2] and sgd.threads_wanted() == 2
    monkeypatch.delenv("PIPELINE_THREADS")
    assert sgd.threads_wanted() == len(os.sched_getaffinity(0))  # outside a trial: every core


def test_where_the_machine_code_cannot_be_linked_numbas_own_copy_trains_the_same_bytes(monkeypatch):
    """`native.load` finds nothing it can link, even after a compile (a process whose llvmlite refuses the
    object): the epoch runs through `from_python`'s copy of `train_epoch` instead, with the same bits."""
    X, y = DATA
    kwargs = {"hidden": 5, "dtype": "float64", "loss": "bce", "bias": True, "batch": 64}
    expected = train_bytes("numpy", monkeypatch, X, y, **kwargs)
    monkeypatch.setattr(native, "load", lambda dtype: None)
    monkeypatch.setattr(compiled, "compile_ahead", lambda dtypes: None)
    assert train_bytes("numba", monkeypatch, X, y, **kwargs) == expected


def test_a_diverging_run_stops_at_the_same_epoch_with_the_same_message(monkeypatch):
    X, y = DATA
    messages = []
    for engine in ENGINES:
        monkeypatch.setenv("PIPELINE_ENGINE", engine)
        net = init_network(np.random.default_rng(3), PIXELS, 5, CLASSES, "bce", True)
        with pytest.raises(sgd.Diverged) as err:
            sgd.fit(net, X, y, lr=1e300, epochs=3, batch_size=64, shuffle=False, rng=np.random.default_rng(0))
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "epoch 1" in messages[0]


def test_the_loss_tables_name_the_same_losses():
    assert set(compiled.LOSS_IDS) == set(LOSSES)


# ---- the kernels, one by one, on their edges ----


def hard_inputs(dtype: type) -> np.ndarray:
    """Values at exp's clipping limits, at its table's boundaries (multiples of ln2/256 and the halfway
    points between them, a unit in the last place either side), zeros, subnormals, infinities, NaN."""
    step = math.log(2) / 256
    grid = np.array([k * step for k in range(-2000, 2000, 37)] + [(k + 0.5) * step for k in range(-300, 300, 7)])
    limits = np.array([-707.0, 708.0, -86.0, 87.0, -745.0, 710.0, 1e300, -1e300, 0.5, -0.5])
    base = np.concatenate([grid, limits, [0.0, -0.0, 5e-324, -5e-324, 1e-310, np.inf, -np.inf, np.nan]])
    with np.errstate(over="ignore"):  # 1e300 is inf in float32: that case too
        base = base.astype(dtype)
    return np.concatenate([base, np.nextafter(base, dtype(np.inf)), np.nextafter(base, dtype(-np.inf))])


def row(kernel, x: np.ndarray, *extra) -> np.ndarray:
    out, W = np.empty_like(x), native.scratch_rows(len(x), x.dtype)
    kernel(x.copy(), *extra, len(x), out, native.tables(x.dtype), W) if extra else kernel(
        x.copy(), len(x), out, native.tables(x.dtype), W
    )
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_sigmoid_softplus_and_log1p_are_portables_to_the_bit(dtype):
    x = hard_inputs(dtype)
    with np.errstate(all="ignore"):
        for sign in (1, -1):
            out, W = np.empty_like(x), native.scratch_rows(len(x), x.dtype)
            from_python(compiled.exp_row)(x.copy(), len(x), sign, out, native.tables(x.dtype), W)
            assert out.tobytes() == portable.exp(sign * x).tobytes(), sign
        assert row(from_python(compiled.sigmoid_row), x).tobytes() == portable.sigmoid(x).tobytes()
        assert row(from_python(compiled.softplus_row), x).tobytes() == portable.softplus(x).tobytes()
        u = np.concatenate([np.linspace(0, 1, 2049), [0.5**60, 1 - 2**-20, 1.0]]).astype(dtype)  # every centre
        u = np.concatenate([u, np.nextafter(u, dtype(0)), np.nextafter(u, dtype(1))])
        assert row(from_python(compiled.log1p_row), u).tobytes() == portable.log1p(u).tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pairwise_sum_is_numpys_add_reduce(dtype):
    rng = np.random.default_rng(0)
    stack, values = np.empty((3, 64), np.int64), np.empty(64, dtype)
    for n in [*range(0, 300), 1023, 1024, 1025, 4096, 8191, 8192, 8193, 20_000, 100_001]:
        a = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)).astype(dtype)
        got = from_python(compiled.pairwise_sum)(a, n, dtype(0), stack, values)
        assert float(dtype(got)) == got and dtype(got).tobytes() == np.add.reduce(a).tobytes(), n  # in dtype


def extreme_gradients() -> list[np.ndarray]:
    """dZ1 : (H, m) batches whose slices sit at the edges: tiny and subnormal entries, entries at the
    grid's steps and half steps, the largest entry a power of two, zeros, huge entries."""
    rng = np.random.default_rng(7)
    normal = rng.standard_normal((5, 64))
    return [
        normal,
        normal * 1e-300,
        normal * 1e-310,  # subnormal
        np.full((5, 64), 5e-324),
        np.zeros((5, 64)),
        normal * 1e300,
        np.ldexp(np.round(normal * 2**30), -30) + np.ldexp(1.0, -60),  # on a grid, plus a remainder
        np.where(rng.random((5, 64)) < 0.5, 1.0, 2.0**-53 * (1 + 2**-52)),  # ties at the second slice
        np.vstack([np.full(64, 4.0), normal[1:]]),  # the largest |entry| a power of two
        normal[:, :2],
        normal[:, :1],  # a batch of one: pixels_matmul's exact products, not the slices
        normal.astype(np.float32),
        (normal * 1e-40).astype(np.float32),  # subnormal in float32, normal once in float64
        np.where(normal > 2, np.inf, normal),  # a diverged run: infinities and NaN travel as NumPy's do
        np.where(normal > 2, np.nan, normal),
    ]


@pytest.mark.parametrize("case", range(len(extreme_gradients())))
@pytest.mark.parametrize("pixels", [PIXELS, 31, 32])  # the kernels take three pixels at a time, then the rest
def test_the_pixel_gradient_is_pixels_matmul_to_the_bit(case, pixels):
    dZ1 = extreme_gradients()[case]
    H, m = dZ1.shape
    P = (np.random.default_rng(case).random((pixels, m)) < 0.5).astype(np.float64)
    dW1 = np.empty((pixels, H), dZ1.dtype)
    G1, G2, N1, N2 = np.empty((H, m)), np.empty((H, m)), np.empty((H, m), np.int64), np.empty((H, m), np.int64)
    sums = np.empty((1, 2, pixels, H), np.int64)
    from_python(compiled.pixel_gradient)(P.astype(np.uint8), np.ascontiguousarray(dZ1), m, dW1, G1, G2, N1, N2, sums)
    with np.errstate(invalid="ignore"):
        assert dW1.tobytes() == portable.pixels_matmul(P, dZ1.T).tobytes()


@pytest.mark.parametrize("case", range(len(extreme_gradients())))
@pytest.mark.parametrize("pixels", [PIXELS, 31, 32])
def test_the_pixel_product_is_pixels_matmul_to_the_bit(case, pixels):
    """The forward product X W1 on weights at the same edges (the gradients' cases, as (pixels, H) weights)."""
    W = np.resize(extreme_gradients()[case], (pixels, 5))
    m, H = 64, W.shape[1]
    P = (np.random.default_rng(case).random((pixels, m)) < 0.5).astype(np.float64)
    S1, S2 = np.empty((1, pixels * H)), np.empty((1, pixels * H))
    acc1, acc2, Z1 = np.empty((H, m)), np.empty((H, m)), np.empty((H, m), W.dtype)
    from_python(compiled.slices)(np.ascontiguousarray(W).reshape(1, -1), 1, pixels * H, pixels, S1, S2)
    from_python(compiled.pixel_product)(
        P.astype(np.uint8), 0, m, S1.reshape(pixels, H), S2.reshape(pixels, H), acc1, acc2, Z1
    )
    with np.errstate(invalid="ignore"):
        assert Z1.tobytes() == np.ascontiguousarray(portable.pixels_matmul(P.T, W).T).tobytes()


def edge_weights() -> list[np.ndarray]:
    """(30, 5) w1 at the edges: the gradients' cases, and the largest weight on either side of
    compiled.SKIP_BELOW (where step_one stops skipping blank pixels) and so large that its grids overflow,
    and weights of -0 (which a blank pixel's update of -0 makes +0)."""
    W = [np.resize(case, (PIXELS, 5)) for case in extreme_gradients()]
    unit = np.resize(extreme_gradients()[0], (PIXELS, 5)) / 4
    huge = [unit * 2.0**e for e in (compiled.SKIP_BELOW - 1, compiled.SKIP_BELOW, 1020)] + [unit * 1e308]
    return W + huge + [np.where(unit > 0, unit, -0.0), np.where(unit > 0, unit, -0.0).astype(np.float32)]


@pytest.mark.parametrize("case", range(len(edge_weights())))
def test_a_batch_of_one_trains_numpys_bits_from_weights_at_the_edges(case):
    """step_one adds the slices of inked pixels only where every slice is finite: 0 inf and 0 NaN must still
    make NaN (on a blank glyph too, where grids that overflow make every slice NaN), and huge weights and -0
    weights NumPy's bits. One epoch of each engine, compared to the bit, diverged or not: of a blank glyph and
    one other (so that most of w1 stays as the blank pixels left it), and of 31 glyphs."""
    X, y = np.vstack([np.zeros((1, PIXELS), np.uint8), DATA[0][::70]]), np.append(0, DATA[1][::70])
    weights, outcomes = edge_weights()[case], []
    for n in (2, len(X)):
        for make in (lambda net: sgd.numpy_epoch, lambda net: sgd.compiled_epoch(X[:n], y[:n], net, 1)):
            net = init_network(np.random.default_rng(3), PIXELS, 5, CLASSES, "bce", False, weights.dtype)
            net.w1[...] = weights
            Z2 = np.empty((n, len(CLASSES)), weights.dtype)
            with np.errstate(all="ignore"):
                figures = make(net)(net, X[:n], y[:n], np.arange(n), 0.5, 1, Z2)
            outcomes.append((np.array(figures).tobytes(), *(a.tobytes() for a in (net.w1, net.w2, Z2))))
    assert outcomes[0] == outcomes[1] and outcomes[2] == outcomes[3]


@pytest.mark.parametrize("case", range(len(extreme_gradients()) + 2))
def test_the_slices_are_portables(case):
    """compiled.slices against portable._slices, on the edge cases and on weights whose largest
    magnitude is negative (its bit pattern is then a negative integer: the maximum must clear the sign)."""
    spread = [[1.3 * 2.0**-20, -(2.0**30), 1.7 * 2.0**-21, 1e-6]] * 8  # off the grid of 2^30's slices
    extra = [np.array(spread, np.float32), np.array(spread)]
    W = np.ascontiguousarray((extreme_gradients() + extra)[case])
    rows, cols = W.shape
    S1, S2 = np.empty((rows, cols)), np.empty((rows, cols))
    from_python(compiled.slices)(W, rows, cols, 30, S1, S2)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = portable._slices(W.astype(np.float64), 30)
    assert S1.tobytes() == expected[0].tobytes() and S2.tobytes() == expected[1].tobytes()


def test_the_grids_powers_of_two_are_math_ldexps():
    """compiled.ldexp (2^n from its bits where it is normal) against math.ldexp for every exponent the
    grids can ask for, across both edges of the normal range: subnormal, rounded and zero results below
    it, infinity above it."""
    ldexp = from_python(compiled.ldexp)
    for m in (1.0, 1.5):
        for n in range(-1200, 1100):
            try:
                expected = math.ldexp(m, n)
            except OverflowError:
                expected = math.inf
            assert np.float64(ldexp(m, n)).tobytes() == np.float64(expected).tobytes(), (m, n)


def test_the_kernels_kept_apart_are_kernels_and_found_by_their_symbols():
    """compiled.KEPT_APART holds the batch kernels' names, and _kernel_name reads a kernel's name out of the
    symbol Numba gives it (so `_LinkedLibrary` finds them), and nothing out of another's."""
    assert {"forward", "shared_batch", "summarize"} <= compiled.KEPT_APART
    for name in compiled.KEPT_APART:
        assert isinstance(getattr(compiled, name), numba.core.registry.CPUDispatcher), name
    copy = from_python(compiled.max_nan)
    copy(1.0, 2.0)
    symbol = next(iter(copy.overloads.values())).fndesc.mangled_name
    assert compiled._kernel_name(symbol) == "max_nan", symbol
    assert compiled._kernel_name("_ZN5numba7cpython8builtins6ol_max12_3clocals_3e4implB2v5") == ""


def aimed_logits(dtype) -> np.ndarray:
    """Z2 : (N, 3) with ties, signed zeros, large and tiny logits, and, in the last rows, infinities and
    NaN; N = 2,500 spans blocks of SUMMARY_ROWS rows and ends mid-block."""
    rng = np.random.default_rng(11)
    Z2 = (rng.standard_normal((2500, 3)) * 10.0 ** rng.integers(-3, 3, (2500, 1))).astype(dtype)
    Z2[:50] = Z2[:50, :1]  # three-way ties
    Z2[50:60] = [[-0.0, 0.0, -0.0]]
    Z2[60:70, 1] = Z2[60:70, 2]  # a tie for the second place
    Z2[70:80] *= 1e4
    return Z2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("tail", [None, np.inf, -np.inf, np.nan])
def test_the_batch_summaries_are_the_numpy_epochs_loss_accuracy_and_largest_logit(dtype, loss, tail):
    Z2, labels = aimed_logits(dtype), np.random.default_rng(12).integers(0, 3, 2500)
    if tail is not None:
        Z2[-3:, 1] = tail
    N, K = Z2.shape
    T, rows_k = native.tables(dtype), compiled.SUMMARY_ROWS * K
    z, target, out, per_example = (np.empty(n, dtype) for n in (rows_k, rows_k, rows_k, N))
    W, stack, values = native.scratch_rows(rows_k, dtype), np.empty((3, 64), np.int64), np.empty(64, dtype)
    correct, largest = 0, 0.0
    for start, n in [(0, 1), (1, 1500), (1501, 999)]:  # one row; more than a block; what is left
        got = from_python(compiled.summarize)(
            compiled.LOSS_IDS[loss], Z2, labels, start, n, per_example, z, target, out, T, W
        )
        correct, largest = correct + got[0], from_python(compiled.max_nan)(largest, got[1])
    total = from_python(compiled.pairwise_sum)(per_example, N, dtype(0), stack, values)
    with np.errstate(all="ignore"):
        expected = sgd.epoch_summary(loss, Z2, labels)
        assert np.float64(total / LOSSES[loss].count(N, K)).tobytes() == np.float64(expected[0]).tobytes()
        assert correct / N == expected[1]
        assert largest == expected[2] or (np.isnan(largest) and np.isnan(expected[2]))


# ---- choosing the engine ----


def test_auto_weighs_getting_the_engine_ready_against_numpys_time(monkeypatch, capsys):
    monkeypatch.delenv("PIPELINE_ENGINE", raising=False)
    monkeypatch.setattr(native, "is_ready", lambda dtype: True)  # compiled on this machine: a load
    assert sgd.engine(steps=900, examples=900) == "numpy"  # the default run: 3 glyphs, 300 epochs
    assert sgd.engine(steps=10_000, examples=600_000) == "numba"  # the robust recipe: 0.7 s of NumPy
    monkeypatch.setattr(native, "is_ready", lambda dtype: False)  # a new machine: a compile first
    assert sgd.engine(steps=10_000, examples=600_000) == "numpy"
    assert capsys.readouterr().err == ""
    assert sgd.engine(steps=10**6, examples=10**8, dtype=np.float32) == "numba"  # a long run pays for it
    assert capsys.readouterr().err.startswith("note: compiling the training engine for this machine, once")
    monkeypatch.setenv("PIPELINE_ENGINE", "numpy")
    assert sgd.engine(steps=10**9, examples=10**9) == "numpy"
    monkeypatch.setenv("PIPELINE_ENGINE", "numba")
    assert sgd.engine(steps=1, examples=1) == "numba"


def test_an_unknown_engine_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("PIPELINE_ENGINE", "fast")
    with pytest.raises(PipelineError, match=r"^PIPELINE_ENGINE: expected numpy, numba or auto, found 'fast'$"):
        sgd.engine(steps=1, examples=1)


def test_without_numba_auto_falls_back_to_numpy_and_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    monkeypatch.delitem(sys.modules, "pipeline.compiled")
    monkeypatch.delattr(pipeline, "compiled")
    monkeypatch.setattr(native, "is_ready", lambda dtype: False)  # nothing to load: Numba would compile
    monkeypatch.delenv("PIPELINE_ENGINE", raising=False)
    assert sgd.engine(steps=10**6, examples=10**8) == "numpy"
    note = capsys.readouterr().err
    assert note.startswith("note: training with NumPy: the compiled engine cannot load") and note.count("\n") == 1
    monkeypatch.setenv("PIPELINE_ENGINE", "numba")
    with pytest.raises(PipelineError, match=r"^PIPELINE_ENGINE=numba: the compiled engine cannot load"):
        sgd.engine(steps=1, examples=1)


def test_no_kernel_is_compiled_with_fastmath():
    dispatchers = [v for v in vars(compiled).values() if hasattr(v, "targetoptions")]
    assert len(dispatchers) > 10
    for dispatcher in dispatchers:
        assert not dispatcher.targetoptions.get("fastmath"), dispatcher.py_func.__name__


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PIPELINE_ENGINE", "fastest", "PIPELINE_ENGINE: expected numpy, numba or auto, found 'fastest'"),
        ("PIPELINE_THREADS", "all", "PIPELINE_THREADS: expected a whole number from 1 to 64, found 'all'"),
        ("NUMBA_NUM_THREADS", "0", "NUMBA_NUM_THREADS: expected a whole number from 1 to 64, found '0'"),
    ],
)
def test_a_bad_engine_variable_through_the_train_stage_is_one_line_and_keeps_the_model(
    built, tmp_path, variable, value, message
):
    work = copy_of(built, tmp_path / "work")
    before = (work / "models" / "model.npz").read_bytes()
    proc = run([sys.executable, "-m", "pipeline.train"], cwd=work, check=False, **{variable: value})
    assert_one_line_error(proc, message)
    assert (work / "models" / "model.npz").read_bytes() == before


def test_a_long_run_names_its_engine_and_how_to_get_the_faster_one(monkeypatch):
    monkeypatch.delenv("PIPELINE_ENGINE", raising=False)
    monkeypatch.setattr(native, "is_ready", lambda dtype: False)
    glyphs = int(0.7 * sgd.COMPILE_SECONDS / sgd.NUMPY_BATCH_SECONDS / 10)  # 10 epochs: NumPy takes 70% of a compile
    name, seconds = sgd.choose(glyphs, 10, 1, np.float64)
    assert name == "numpy" and 2 < seconds < sgd.COMPILE_SECONDS
    line = sgd.describe(name, seconds, glyphs, 10, 1, np.float64)
    assert line.startswith("train: NumPy trains") and "`python -m pipeline.compiled`" in line and "\n" not in line
    monkeypatch.setattr(native, "is_ready", lambda dtype: True)
    name, seconds = sgd.choose(glyphs, 10, 1, np.float64)
    assert name == "numba" and seconds < 1
    assert sgd.describe("numba", 5.0, 15_000, 10, 1, np.float64).startswith("train: the compiled engine trains")


def test_a_sweep_compiles_ahead_only_when_its_runs_together_pay_for_it():
    epoch = 3 * 1001  # examples at batch 1: an epoch's seconds saved by the compiled engine once ready
    saved = sgd.estimate(epoch, epoch, "numpy") - (sgd.estimate(epoch, epoch, "numba") - sgd.LOAD_SECONDS)
    trial = (epoch, int(0.9 * sgd.COMPILE_SECONDS / saved), 1)  # saves 90% of a compile
    assert not sgd.pays_to_compile([trial])
    assert sgd.pays_to_compile([trial] * 2)
    assert not sgd.pays_to_compile([(3, 300, 1)] * 1000)  # tiny runs: NumPy is faster even once it is ready


@pytest.mark.parametrize("name", ["float16", "float64\nfloat32", ""])
def test_compiling_ahead_for_a_dtype_the_engine_has_not_is_one_line_and_compiles_nothing(name, tmp_path):
    cache = tmp_path / "cache"
    proc = run([sys.executable, "-m", "pipeline.compiled", name], cwd=ROOT, check=False, PIPELINE_CACHE_DIR=str(cache))
    assert_one_line_error(proc, "python -m pipeline.compiled: expected float64 or float32, found '")
    assert not cache.exists()


def native_probe(cache: Path, code: str) -> str:
    """What `code` (run after `import numpy as np` and `from pipeline import native`) prints, with the
    engine's cache at `cache`; a run that blocks fails after a minute."""
    done = subprocess.run(
        [sys.executable, "-c", f"import numpy as np\nfrom pipeline import native\n{code}"],
        cwd=ROOT,
        env=env() | {"PIPELINE_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_a_special_or_huge_file_where_the_engines_entry_goes_is_never_read(tmp_path):
    """A FIFO would block the read forever and a huge file fill memory: both are passed over unread."""
    where = native_probe(tmp_path, "print(native.path(np.float64))")
    os.mkfifo(where)
    assert native_probe(tmp_path, "print(native.load(np.float64) is None)") == "True"
    os.unlink(where)
    with open(where, "wb") as huge:
        huge.truncate(native.MAX_ENTRY_BYTES + 1)  # sparse: no disk is used
    assert native_probe(tmp_path, "print(native.load(np.float64) is None)") == "True"


COMPILE_ONCE = """
import sys, time
import numpy as np
from pipeline import compiled, native
def build(dtype):  # a compile of a second, that says who did it
    with open(sys.argv[1], "a") as log:
        log.write("compiled\\n")
    time.sleep(1.0)
    return "entry", b"code"
compiled.build = build
native.load = lambda dtype: "loaded" if native.path(dtype).is_file() else None  # the fake code links nowhere
compiled.compile_ahead((np.float64,))
print(native.load(np.float64))
"""


def test_a_kernels_copy_is_compiled_once_per_machine_and_again_when_any_engine_source_changes(tmp_path, monkeypatch):
    """`from_python`'s copies are cached (the suite's kernel tests load them), stamped by all three sources."""
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path))
    a = np.array([1.0, np.nan, 2.0])

    def fresh():  # a copy as a new process makes it (from_python keeps one per process)
        copy = from_python.__wrapped__(compiled.max_nan)
        assert np.isnan(copy(np.float64(1.0), np.float64(np.nan)))
        assert copy(a[0], a[2]) == 2.0
        return copy.stats.cache_hits, copy.stats.cache_misses

    assert fresh() == ({}, {(numba.float64, numba.float64): 1})  # compiled, and saved
    assert fresh() == ({(numba.float64, numba.float64): 1}, {})  # loaded
    monkeypatch.setattr(native, "sources_digest", lambda: "another clone's sources")
    assert fresh() == ({}, {(numba.float64, numba.float64): 1})  # not that clone's code: compiled again


def test_two_processes_that_need_the_same_entry_compile_it_once(tmp_path):
    """Two test workers, two runs or two Dask workers on one machine with an empty cache: the second waits
    for the first's compile and loads its entry, rather than compiling the same code again."""
    log = tmp_path / "compiles.log"
    common = {"cwd": ROOT, "env": env() | {"PIPELINE_CACHE_DIR": str(tmp_path / "cache")}, "text": True}
    procs = [
        subprocess.Popen([sys.executable, "-c", COMPILE_ONCE, str(log)], stdout=subprocess.PIPE, **common)
        for _ in range(2)
    ]
    outs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0] and outs == ["loaded\n"] * 2, outs
    assert log.read_text() == "compiled\n"


@pytest.mark.parametrize("planted", ["fifo", "symlink"])
def test_a_fifo_or_a_link_where_the_compile_lock_goes_is_neither_waited_on_nor_followed(planted, tmp_path):
    """A FIFO would block the open; a link to a path elsewhere would have the lock created there."""
    where = Path(native_probe(tmp_path / "cache", "print(native.path(np.float64))"))
    lock, elsewhere = where.with_name(f".{where.name}.lock"), tmp_path / "elsewhere"
    where.parent.mkdir()
    os.mkfifo(lock) if planted == "fifo" else lock.symlink_to(elsewhere)
    code = "with native.compiling(np.float64):\n    print('compiling')"
    assert native_probe(tmp_path / "cache", code) == "compiling"
    assert not elsewhere.exists()


UNWRITABLE_CACHE = """
import sys
import numpy as np
from pipeline import compiled, native
def build(dtype):  # a compile that says when it runs
    print("compiled")
    return "entry", b"code"
compiled.build = build
native._link = lambda symbol, code, dtype: "linked " + symbol  # the fake code links nowhere
for run in range(3):  # three runs in one process, whose cache cannot be written
    compiled.compile_ahead((np.float64,))
print(native.load(np.float64), native.is_ready(np.float64), native.path(np.float64).exists())
"""


def test_a_process_whose_cache_cannot_be_written_compiles_once_and_keeps_the_code(tmp_path):
    """A sweep worker or a notebook on a read-only cache: its first run compiles, the later ones load what
    it kept, rather than each paying a compile."""
    (tmp_path / "file").write_text("not a folder")
    cache = {"PIPELINE_CACHE_DIR": str(tmp_path / "file" / "cache")}
    out = run([sys.executable, "-c", UNWRITABLE_CACHE], cwd=ROOT, **cache).stdout
    assert out.splitlines() == ["compiled", "linked entry True False"], out
