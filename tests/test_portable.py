"""pipeline/portable.py: accurate against exact decimal arithmetic, exact where it says so, and
independent of memory layout and of the other rows of a batch."""

from __future__ import annotations

import ast
import math
import struct
from decimal import Context, Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest

from pipeline import portable
from pipeline.glyphs import CLASSES, PIXELS, clean_glyphs, noisy_copies
from pipeline.model import init_network, logits
from tests.conftest import ROOT

EXACT = Context(prec=60)


def ulps(got: float, exact: Decimal) -> float:
    """|got - exact| in units in the last place of the exact value, rounded to float64."""
    with localcontext(EXACT):
        return float(abs(Decimal(float(got)) - exact) / Decimal(math.ulp(float(exact))))


def exact(formula, x: float, digits: int = 60) -> Decimal:
    with localcontext(Context(prec=digits)):
        return formula(Decimal(float(x)))


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate(
        [
            rng.uniform(-707, 708, 400),
            rng.uniform(-40, 40, 400),
            rng.uniform(-0.01, 0.01, 100),
            [0.0, 1.0, -1.0, 707.0, -707.0],
        ]
    )


def test_exp_is_within_one_and_a_half_units_in_the_last_place(points):
    worst = max(ulps(got, exact(Decimal.exp, x)) for x, got in zip(points, portable.exp(points)))
    assert worst < 1.5


def test_log1p_is_within_two_units_in_the_last_place_down_to_tiny_arguments():
    rng = np.random.default_rng(1)
    u = np.concatenate([rng.random(400), 10.0 ** rng.uniform(-300, 0, 200), [1.0, 0.5, 2.0**-60]])
    worst = max(ulps(got, exact(lambda d: (d + 1).ln(), x, digits=360)) for x, got in zip(u, portable.log1p(u)))
    assert worst < 2
    assert portable.log1p(np.array([0.0]))[0] == 0.0


def test_sigmoid_and_softplus_are_within_three_units_in_the_last_place(points):
    z = points[np.abs(points) < 60]
    exact_sigmoid = [exact(lambda d: 1 / (1 + (-d).exp()), x) for x in z]
    exact_softplus = [exact(lambda d: (1 + d.exp()).ln(), x) for x in z]
    assert max(ulps(got, want) for got, want in zip(portable.sigmoid(z), exact_sigmoid)) < 3
    assert max(ulps(got, want) for got, want in zip(portable.softplus(z), exact_softplus)) < 3


@pytest.mark.parametrize("function", [portable.exp, portable.sigmoid, portable.softplus])
def test_float32_is_float32_and_within_three_float32_steps_of_float64(function, points):
    x = points[np.abs(points) < 80].astype(np.float32)
    got = function(x)
    assert got.dtype == np.float32
    want = function(x.astype(np.float64))
    assert np.all(np.abs(got - want) <= 3 * np.spacing(want.astype(np.float32)))


def test_out_of_range_arguments_clip_and_nan_propagates_silently():
    z = np.array([-1e308, -1000.0, 1000.0, np.inf, -np.inf, np.nan])
    e, s = portable.exp(z), portable.sigmoid(z)
    assert np.array_equal(e[:5], portable.exp(np.array([-707.0, -707.0, 708.0, 708.0, -707.0])))
    assert 0 < s[0] < 1e-307 and s[2] == 1.0 and np.isnan(s[5]) and np.isnan(e[5])
    assert portable.softplus(np.array([1000.0]))[0] == 1000.0
    assert np.isnan(portable.log1p(np.array([np.nan])))[0]


def test_scalars_and_integers_are_accepted():
    assert portable.sigmoid(0) == 0.5 and portable.sigmoid(np.float64(0.0)).shape == ()
    assert portable.exp([0, 1])[1] == portable.exp(np.array([1.0]))[0]


def promised_pixels_matmul(P: np.ndarray, W: np.ndarray) -> np.ndarray:
    """What pixels_matmul's docstring promises, in exact rational arithmetic: S1 = W rounded to multiples
    of u1, S2 = W - S1 rounded to multiples of u2 (Python rounds a Fraction half to even), P @ (S1 + S2)
    rounded once to float64, then to W's dtype. Also checks the promised bound on what is dropped."""
    k = P.shape[1]
    s, w = max(2, k.bit_length()), [[Fraction(float(v)) for v in row] for row in W]
    largest = max(abs(v) for row in w for v in row)
    e = math.frexp(float(largest))[1]
    u1, u2 = Fraction(2) ** (e + s - 53), Fraction(2) ** (e + 2 * s - 107)
    S1 = [[round(v / u1) * u1 for v in row] for row in w]
    S = [[a + round((v - a) / u2) * u2 for v, a in zip(row, row1)] for row, row1 in zip(w, S1)]
    bound = Fraction(2) ** (2 * s - 107) * largest
    assert all(abs(v - x) <= bound for row, row_s in zip(w, S) for v, x in zip(row, row_s))
    steps = np.array([[int(x / u2) for x in row] for row in S], dtype=object)  # S in units of u2, exactly
    sums = P.astype(int).astype(object) @ steps
    return np.array([[float(v * u2) for v in row] for row in sums]).astype(W.dtype)


def exact_matmul(P: np.ndarray, W: np.ndarray) -> np.ndarray:
    """P @ W in exact arithmetic (every float64 is a multiple of 2^-1074), as Fractions."""
    scaled = np.array([[int(Fraction(float(v)) * 2**1074) for v in row] for row in W], dtype=object)
    return (P.astype(int).astype(object) @ scaled) * Fraction(1, 2**1074)


def boundary_weights(k: int, m: int, largest: float, rng: np.random.Generator) -> np.ndarray:
    """(k, m) weights whose largest |w| is `largest`, most of them at the slices' edges: on the grids
    of S1 (u1) and S2 (u2), at half-steps (ties when rounding to them) and just beside them, and below
    u2 / 2 (dropped whole); the rest random, over sixty binades."""
    e, s = math.frexp(largest)[1], max(2, k.bit_length())
    u1, u2 = 2.0 ** (e + s - 53), 2.0 ** (e + 2 * s - 107)
    edges = [u1, u1 / 2, 3 * u1 / 2, 5 * u1 / 2, u1 / 2 + u2, u1 / 2 - u2, u1 / 2 + u2 / 2, u2, u2 / 2, 3 * u2 / 2]
    edges += [largest - u1 / 2, largest / 3, u2 / 4, 5e-324]
    filler = rng.uniform(-1, 1, k * m) * largest * 2.0 ** -rng.integers(0, 60, k * m)
    values = np.concatenate([[largest], np.resize(edges, max(k * m // 2, 1)), filler])[: k * m]
    signs = np.where(rng.random(k * m) < 0.5, -1.0, 1.0)
    signs[0] = 1.0
    return (values * signs).reshape(k, m)


def pixels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) 0/1: every pixel on, then single pixels, then pairs, then random glyphs."""
    P = (rng.random((n, k)) < 0.5).astype(np.float64)
    P[0] = 1.0
    P[1 : 1 + min(k, n // 4)] = np.eye(k)[: min(k, n // 4)]
    return P


LARGEST = [1.0, 1.0 - 2.0**-53, 1.5 * 2.0**7, 2.0**-20]  # the largest |w|: at, just below, between powers of two


# X @ W1 has k = 30; X^T dZ1 has k = the batch size (fingerprints.py's largest is 9,000)
@pytest.mark.parametrize("k,largest", [(k, w) for k in (2, 3, 30, 1024) for w in LARGEST] + [(9000, 1.0)])
def test_pixel_products_are_the_two_slices_sum_rounded_once(k, largest):
    rng = np.random.default_rng(k)
    P, W = pixels(30 if k > 3 else 8, k, rng), boundary_weights(k, 1 if k > 1024 else 3, largest, rng)
    got = portable.pixels_matmul(P, W)
    assert np.array_equal(got, promised_pixels_matmul(P, W))
    s = max(2, k.bit_length())
    error = np.abs(exact_matmul(P, W) - np.array(got.tolist(), dtype=object) * Fraction(1))
    allowed = np.vectorize(lambda g: Fraction(math.ulp(g)) / 2)(got) + k * Fraction(2) ** (2 * s - 107) * Fraction(
        largest
    )
    assert np.all(error <= allowed)  # what the promise means: half an ulp, plus what R can move
    W32 = W.astype(np.float32)
    assert np.array_equal(portable.pixels_matmul(P, W32), promised_pixels_matmul(P, W32))


def test_a_single_pixel_column_gives_the_exact_products():
    W = np.array([[1 / 3, -(2.0**-1074), 1e308]])
    P = np.array([[1.0], [0.0]])
    assert portable.pixels_matmul(P, W).tolist() == [[1 / 3, -(2.0**-1074), 1e308], [0.0, -0.0, 0.0]]


def test_the_dropped_remainder_can_tip_a_tie():
    """Not correctly rounded: S1 + S2 = 1 + 2^-53, a tie rounded to 1.0, while the true sum is just above."""
    W = np.array([[1.0], [2.0**-53 * (1 + 2.0**-52)]])
    P = np.array([[1.0, 1.0]])
    assert portable.pixels_matmul(P, W)[0, 0] == 1.0 == promised_pixels_matmul(P, W)[0, 0]
    assert math.fsum(W[:, 0]) == 1 + 2.0**-52


@pytest.mark.parametrize(
    "n,k,m", [(1, 1, 1), (1, 5, 3), (7, 1, 4), (64, 5, 3), (3, 9, 1), (1, 3, 5), (300, 12, 2), (1, 9, 1), (1, 3, 1)]
)
def test_matmul_adds_the_terms_in_order(n, k, m):
    rng = np.random.default_rng(n * k * m)
    A, B = rng.standard_normal((n, k)), rng.standard_normal((k, m))
    ordered = A[:, 0, None] * B[0]
    for j in range(1, k):
        ordered = ordered + A[:, j, None] * B[j]
    assert np.array_equal(portable.matmul(A, B), ordered)


def pairwise(values: list[float], add) -> float:
    """NumPy's pairwise summation, read from its C source (loops_utils.h.src), in plain Python: the
    independent statement of the order portable.pairwise_sum promises, +0.0 + pairwise(a[0:n])."""

    def part(lo: int, n: int) -> float:
        if n < 8:
            result = -0.0
            for v in values[lo : lo + n]:
                result = add(result, v)
            return result
        if n <= 128:
            lanes = values[lo : lo + 8]
            for i in range(8, n - n % 8, 8):
                lanes = [add(r, v) for r, v in zip(lanes, values[lo + i : lo + i + 8])]
            r = lanes
            result = add(add(add(r[0], r[1]), add(r[2], r[3])), add(add(r[4], r[5]), add(r[6], r[7])))
            for v in values[lo + n - n % 8 : lo + n]:
                result = add(result, v)
            return result
        half = n // 2 - n // 2 % 8
        return add(part(lo, half), part(lo + half, n - half))

    return add(0.0, part(0, len(values)))


def add32(x: float, y: float) -> float:
    """x + y in float32 arithmetic: the float64 sum of two float32 numbers, rounded once to float32."""
    return struct.unpack("f", struct.pack("f", x + y))[0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_sums_follow_the_pairwise_order_at_every_boundary_of_its_tree(dtype):
    """Lengths at the 8-lane, 128-block and 8192 boundaries (NumPy before 2.3 cut its reductions at
    8192), on numbers of many magnitudes so that any other order changes bits; and signed zeros."""
    rng = np.random.default_rng(7)
    add = (lambda x, y: x + y) if dtype == np.float64 else add32
    for n in [
        *range(1, 20),
        63,
        64,
        65,
        127,
        128,
        129,
        135,
        136,
        137,
        255,
        256,
        257,
        1000,
        8191,
        8192,
        8193,
        9000,
        16385,
    ]:
        A = (rng.standard_normal((n, 2)) * np.exp2(rng.integers(-25, 25, (n, 2)))).astype(dtype)
        B = rng.standard_normal((n, 1)).astype(dtype)
        want = [pairwise(column.tolist(), add) for column in A.T]
        assert portable.column_sum(A).tolist() == want, n
        assert portable.total(A[:, 1]) == want[1], n
        products = A * B  # outer_sum's terms: float products, each rounded once
        assert portable.outer_sum(A, B)[:, 0].tolist() == [pairwise(c.tolist(), add) for c in products.T], n
    zeros = np.full((9000, 1), -0.0, dtype)
    assert not np.signbit(portable.column_sum(zeros)[0]) and not np.signbit(portable.total(zeros[:5]))


def test_no_kernel_depends_on_how_its_inputs_are_laid_out_in_memory():
    rng = np.random.default_rng(5)
    P, A, B = (rng.random((40, 30)) < 0.5).astype(float), rng.standard_normal((40, 5)), rng.standard_normal((40, 3))
    W, V = rng.standard_normal((30, 5)), rng.standard_normal((5, 3))
    kernels = [
        lambda P, A, B, W, V: portable.pixels_matmul(P, W),
        lambda P, A, B, W, V: portable.pixels_matmul(P.T, A),
        lambda P, A, B, W, V: portable.matmul(A, V),
        lambda P, A, B, W, V: portable.outer_sum(A, B),
        lambda P, A, B, W, V: portable.column_sum(A),
        lambda P, A, B, W, V: np.array(portable.total(A)),
    ]
    c_order = [P, A, B, W, V]
    f_order = [np.asfortranarray(x) for x in c_order]
    for kernel in kernels:
        assert np.array_equal(kernel(*c_order), kernel(*f_order))


def test_a_glyphs_logits_do_not_depend_on_the_rest_of_its_batch():
    net = init_network(np.random.default_rng(0), PIXELS, hidden=7, classes=CLASSES, loss="bce", bias=True)
    net.b1[:], net.b2[:] = np.linspace(-1, 1, 7), [0.5, -0.5, 0.1]
    X, _ = noisy_copies(clean_glyphs(), 20, 0.2, np.random.default_rng(1))
    together = logits(net, X)
    assert np.array_equal(together, np.vstack([logits(net, row[None]) for row in X]))
    assert np.array_equal(together, logits(net, X, block=7))


def test_no_pipeline_module_computes_with_machine_dependent_numpy_calls():
    """exp, log, tanh and friends change bits with the CPU; dot, matmul, einsum and @ with the BLAS
    kernel (or, for einsum, fused multiply-adds on aarch64). Only portable.py may call BLAS, on
    operands it has made exact; tests/test_reproducible.py checks that with another kernel."""
    risky = {
        "exp",
        "exp2",
        "expm1",
        "log",
        "log2",
        "log10",
        "log1p",
        "tanh",
        "sinh",
        "cosh",
        "power",
        "float_power",
        "dot",
        "vdot",
        "inner",
        "outer",
        "matmul",
        "einsum",
        "tensordot",
        "linalg",
        "polyval",
    }
    found = []
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                found.append(f"{path.name}:{node.lineno}: @")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in risky
                and isinstance(node.value, ast.Name)
                and node.value.id == "np"
                and not (path.name == "portable.py" and node.attr == "dot")
            ):
                found.append(f"{path.name}:{node.lineno}: np.{node.attr}")
    assert found == []
