"""Arithmetic with the same bits on every machine: exp, log1p, sigmoid, softplus and the network's products.

NumPy's exp, log and tanh change their last bits with the CPU's instruction sets (AVX-512 or not) and
NumPy's dispatch level, and every product NumPy hands to BLAS (`@`, dot, matmul) changes its bits with
the BLAS kernel, which picks the summation order and whether to fuse multiply-adds. What never moves:
- `+ - * /` one element at a time: IEEE 754 rounds each exactly, and NumPy never fuses two ufunc
  calls into one multiply-add; the same for comparisons, rint, scaling by a power of two, table look-ups;
- a reduction over a contiguous axis of at most 8192 entries: NumPy adds pairwise, in an order fixed by
  the length alone, the same from NumPy 1.26 to 2.4 (a longer axis was cut into pieces of 8192 before
  NumPy 2.3, and is not since: `pairwise_sum` splits it itself).
Everything here is built from those, so a result depends only on its inputs, not on the machine or
the NumPy version (1.26 to 2.4 tried).

The products go to BLAS only where any summation order gives the same result (`pixels_matmul`): the
network's inputs are 0/1 pixels, so each product with them is a sum of weights, and weights cut into
two slices on fixed grids add up exactly in any order, fused or not (the error-free splitting of
Ozaki, Ogita, Oishi and Rump, 2012); what the slices leave out of the weights is dropped. Sums over
the hidden units and the classes are short, and run in order (`matmul`); sums over a batch of examples
are pairwise (`outer_sum`, `column_sum`, `total`).

float32 arrays get float32 arithmetic, with constants rounded to float32; the pixel products are
computed in float64, rounded to float64 once, then to float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from decimal import Context, Decimal

import numpy as np
from numpy.typing import ArrayLike

TABLE_BITS = 8  # exp(x) = 2^(k / 256) * exp(r): a 256-entry table of 2^(j / 256) leaves |r| <= ln(2) / 512
TABLE_SIZE = 1 << TABLE_BITS
_CONTEXT = Context(prec=25)  # 25 digits pin down every table entry's float64 rounding


class Constants:
    """exp's and log1p's constants for one float type, every one rounded to that type."""

    def __init__(self, dtype: type, tables: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        bits = np.finfo(dtype).nmant + 1  # 53 or 24 significant bits
        self.dtype, self.itype, self.field = np.dtype(dtype), (np.int64 if bits == 53 else np.int32), bits - 1
        ln2 = Decimal(2).ln(_CONTEXT)
        # exp: x = k ln2/N + r. k * step_hi is exact for |k| < 2^19 (2^15 in float32): |x| < 728 (85).
        self.step_hi, self.step_lo = _split_constant(ln2 / TABLE_SIZE, bits - (19 if bits == 53 else 15), dtype)
        self.inv_step = dtype(float(TABLE_SIZE / ln2))
        # Adding 1.5 * 2^(bits - 1) to a number below 2^(bits - 2) rounds it to an integer, which then
        # sits in the low bits of the sum's bit pattern.
        self.round_shift = dtype(1.5 * 2.0 ** (bits - 1))
        # 2^(j/N) as bit patterns, less j << (field - TABLE_BITS): adding k's bit pattern shifted by
        # (field - TABLE_BITS) then adds k // N to the exponent field and cancels j (see `_exp`).
        powers, centers, log_centers = (t.astype(dtype) for t in tables)
        j = np.arange(TABLE_SIZE, dtype=self.itype)
        self.table = powers.view(self.itype) - (j << (self.field - TABLE_BITS))
        self.centers, self.log_centers = centers, log_centers
        # exp's input range: e^x, and 1 / (1 + e^x) in sigmoid, stay normal numbers (no subnormals,
        # which a library built with fast-math could flush to zero on one machine and not another).
        self.lowest, self.highest = (dtype(-707.0), dtype(708.0)) if bits == 53 else (dtype(-86.0), dtype(87.0))
        self.one = dtype(1.0)
        self.exp_poly = (dtype(1 / 24), dtype(1 / 6), dtype(0.5))  # e^r - 1 = r + r^2 (1/2 + r (1/6 + r/24))
        self.log_poly = (dtype(-1 / 6), dtype(1 / 5), dtype(-1 / 4), dtype(1 / 3), dtype(-0.5))


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2^(j/N) for j = 0 .. N-1; for log1p the centres c_j = 1 + j/N, j = 0 .. N (exact in float32 too),
    and ln(c_j), padded to 2N entries so that any index masked with 2N - 1 is valid. Each entry is
    correctly rounded to float64 by decimal arithmetic, which is the same on every machine."""
    step = Decimal(2).ln(_CONTEXT) / TABLE_SIZE
    powers = [float((step * j).exp(_CONTEXT)) for j in range(TABLE_SIZE)]
    centers = [1 + j / TABLE_SIZE for j in range(TABLE_SIZE + 1)]
    log_centers = [float(Decimal(c).ln(_CONTEXT)) for c in centers]
    pad = [centers[-1]] * (TABLE_SIZE - 1), [log_centers[-1]] * (TABLE_SIZE - 1)
    return np.array(powers), np.array(centers + pad[0]), np.array(log_centers + pad[1])


def _split_constant(value: Decimal, bits: int, dtype: type) -> tuple[np.floating, np.floating]:
    """value = hi + lo, hi with only `bits` significant bits (so small integers times hi are exact)."""
    mantissa, exponent = math.frexp(float(value))
    hi = math.ldexp(math.floor(math.ldexp(mantissa, bits)), exponent - bits)
    return dtype(hi), dtype(float(value - Decimal(hi)))


TABLES = _tables()
CONSTANTS = {np.dtype(t): Constants(t, TABLES) for t in (np.float64, np.float32)}


def _constants(x: np.ndarray) -> Constants:
    try:
        return CONSTANTS[x.dtype]
    except KeyError:
        raise TypeError(f"expected a float64 or float32 array, found {x.dtype}") from None


def constants(dtype: np.dtype | type) -> dict[str, object]:
    """Every constant of exp and log1p for `dtype` (float64 or float32), each rounded to that type and written
    as the float64 that holds it exactly, for a re-implementation in another language (the explorer page's
    portable.js takes this): with the same operations in the same order, it gets the same bits."""
    c = CONSTANTS[np.dtype(dtype)]
    powers, centers, log_centers = (table.astype(c.dtype).tolist() for table in TABLES)
    scalars = ("inv_step", "step_hi", "step_lo", "round_shift", "lowest", "highest")
    return {
        "dtype": c.dtype.name,
        "table_bits": TABLE_BITS,
        "powers": powers,
        "centers": centers[: TABLE_SIZE + 1],
        "log_centers": log_centers[: TABLE_SIZE + 1],
        **{name: float(getattr(c, name)) for name in scalars},
        "exp_poly": [float(v) for v in c.exp_poly],
        "log_poly": [float(v) for v in c.log_poly],
    }


def exp_limit(dtype: np.dtype | type) -> float:
    """The largest |x| for which exp(x) and exp(-x) are computed, not clipped: 707 (86 in float32)."""
    c = CONSTANTS[np.dtype(dtype)]
    return float(min(-c.lowest, c.highest))


def _elementwise(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[ArrayLike], np.ndarray]:
    """Let `f`, written for float arrays of at least one dimension, take any array-like: integers
    become float64, and a 0-d input gives a 0-d result."""

    @functools.wraps(f)
    def wrapper(x: ArrayLike) -> np.ndarray:
        if type(x) is np.ndarray and x.ndim and x.dtype in CONSTANTS:  # the common case, first
            return f(x)
        x = np.asarray(x)
        if x.dtype not in CONSTANTS:
            x = x.astype(np.float64)
        return f(x) if x.ndim else f(x.reshape(1)).reshape(())

    return wrapper


@_elementwise
def exp(x: np.ndarray) -> np.ndarray:
    """e^x to within about one unit in the last place, for x clipped to [-707, 708] ([-86, 87] in float32)."""
    return _exp(x, 1)


def _exp(x: np.ndarray, sign: int) -> np.ndarray:
    """e^(sign x), sign = 1 or -1 (sigmoid needs e^-z; folding the sign in saves a pass).

    sign x = k ln2/N + r with k an integer and |r| <= ln2/(2N); e^(sign x) = 2^(k // N) 2^((k % N) / N) e^r,
    the middle factor from a table, e^r - 1 from its Taylor polynomial of degree 4.
    """
    c = _constants(x)
    x = np.maximum(x, c.lowest if sign > 0 else -c.highest)
    np.minimum(x, c.highest if sign > 0 else -c.lowest, out=x)
    shifted = x * (sign * c.inv_step)
    shifted += c.round_shift  # rounds sign x N / ln2 to the integer k, in the low bits
    k = shifted - c.round_shift
    r = k * c.step_hi  # exact: step_hi has spare bits
    if sign > 0:  # exact: k step_hi is within a factor 2 of sign x
        r -= x
    else:
        r += x
    r += k * c.step_lo  # r = k ln2/N - sign x: minus the reduced argument
    e0, e1, e2 = c.exp_poly
    p = r * -e0  # e^-r - 1 = -r + r^2 (1/2 - r (1/6 - r/24))
    p += e1
    p *= r
    np.subtract(e2, p, out=p)
    p *= r * r
    p -= r
    bits = shifted.view(c.itype)
    scale = c.table[bits & (TABLE_SIZE - 1)]  # 2^(j/N) with j = k mod N, less j << (field - TABLE_BITS) ...
    scale += bits << (c.field - TABLE_BITS)  # ... plus k << (field - TABLE_BITS): 2^(k // N) 2^(j/N)
    t = scale.view(c.dtype)
    p *= t
    p += t  # t (1 + p)
    return p


@_elementwise
def log1p(u: np.ndarray) -> np.ndarray:
    """ln(1 + u) for 0 <= u <= 1, to within about two units in the last place.

    w = 1 + u is rounded; ln(1 + u) = ln(w) + (u - (w - 1)) / w puts back what the rounding lost.
    ln(w) = ln(c_j) + ln(1 + r) with c_j = 1 + j/256 the nearest centre, ln(c_j) from a table,
    r = (w - c_j) / c_j and ln(1 + r) from its Taylor polynomial of degree 6.
    """
    c = _constants(u)
    w = u + c.one
    lost = w - c.one  # exact: w is in [1, 2]
    shifted = lost * TABLE_SIZE
    shifted += c.round_shift  # rounds (w - 1) N to the nearest centre's index j
    j = shifted.view(c.itype) & (2 * TABLE_SIZE - 1)  # 0 .. N; the mask only matters for NaN
    np.subtract(u, lost, out=lost)
    lost /= w  # what rounding 1 + u lost, as a share of w
    center = c.centers[j]
    r = w - center  # exact: w and center are within a factor of 2
    r /= center
    p = r * c.log_poly[0]  # ln(1 + r) = r + r^2 (-1/2 + r (1/3 + r (-1/4 + r (1/5 - r/6))))
    for coef in c.log_poly[1:]:
        p += coef
        p *= r
    p *= r
    p += r
    p += lost
    p += c.log_centers[j]
    return p


@_elementwise
def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z). Below z = -708 the result stays at 3.3e-308 (e^-708) instead of going on to zero."""
    e = _exp(z, -1)
    e += _constants(e).one
    return np.reciprocal(e, out=e)


@_elementwise
def softplus(z: np.ndarray) -> np.ndarray:
    """ln(1 + e^z), finite for any z: max(z, 0) + ln(1 + e^-|z|)."""
    result = log1p(_exp(np.abs(z), -1))
    result += np.maximum(z, _constants(result).dtype.type(0.0))
    return result


def pixels_matmul(P: np.ndarray, W: np.ndarray) -> np.ndarray:
    """P @ W for P : (n, k) of 0/1 pixels and W : (k, m) weights, the same bits on every BLAS.

    With s = max(2, k.bit_length()) (so k < 2^s) and max|W| < 2^e, W = S1 + S2 + R (`_slices`):
    S1 is W rounded to multiples of u1 = 2^(e + s - 53), S2 is W - S1 rounded to multiples of
    u2 = 2^(e + 2s - 107) (both to nearest, ties to even), and R, |R| <= u2 / 2 <= 2^(2s - 107) max|W|,
    is dropped. Every partial sum of P @ S1 is a multiple of u1 below 2^53 u1, and of P @ S2 a multiple
    of u2 below 2^53 u2, so both are exact in any order, with or without fused multiply-adds, on any
    number of threads. The result, for k >= 2, is exactly P @ (S1 + S2) rounded once to float64 (and
    that rounded to float32 for a float32 W); for k = 1, the exact products.
    That is not always P @ W correctly rounded: R can tip a tie (W = [1, 2^-53 (1 + 2^-52)], both
    pixels on, gives 1.0, not 1 + 2^-52), and moves the exact sum by at most k 2^(2s - 107) max|W|.
    """
    k = P.shape[1]
    if k == 1:  # nothing to sum: each entry is one exact product
        return (P[:, 0, None] * W[0]).astype(W.dtype, copy=False)
    S1, S2 = _slices(W.astype(np.float64, copy=False), k)
    P = P.astype(np.float64, copy=False)
    out = np.dot(P, S1)  # (n, k) @ (k, m), exact
    out += np.dot(P, S2)  # exact, then P @ (S1 + S2) rounded once
    return out.astype(W.dtype, copy=False)


def _slices(W: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """W : (k, m) float64 -> (S1, S2) of pixels_matmul, W rounded to multiples of u1 and the rest
    rounded to multiples of u2: grids on which sums of k entries are exact; W - S1 - S2 is dropped."""
    spare = max(2, k.bit_length())  # k < 2^spare: bits a sum of k entries may grow by
    largest = float(np.maximum.reduce(np.abs(W), axis=None))
    exponent = math.frexp(largest)[1]  # every |w| < 2^exponent
    S1 = _round_to_grid(W, exponent + spare)
    R = W - S1  # exact; |R| <= half S1's grid step
    S2 = _round_to_grid(R, exponent + spare - 54 + spare)
    return S1, S2


def _round_to_grid(W: np.ndarray, top: int) -> np.ndarray:
    """W rounded to multiples of 2^(top - 53), for |W| <= 2^(top - 2): adding 1.5 * 2^(top - 1)
    lands every entry in [2^(top - 1), 2^top), whose numbers are exactly those multiples."""
    try:
        big = math.ldexp(1.5, top - 1)
    except OverflowError:  # weights near the float64 limit: training has already
        big = math.inf  # diverged, and NaN here makes that loud
    return (W + big) - big


def matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A @ B for A : (n, k), B : (k, m) with k small (hidden units, classes), summed over k in order.

    The k products A[:, j] B[j] are laid out as (k, m, n) and added one slice after another,
    ((t0 + t1) + t2) + ..., each addition one long elementwise loop over the n examples. (np.add.reduce
    would do the same for most shapes, but adds pairwise when the result has one entry.)
    """
    terms = np.multiply(B[:, :, None], A.T[:, None, :], order="C")  # (k, m, 1) * (k, 1, n) -> (k, m, n)
    result = terms[0]
    for term in terms[1:]:
        result += term
    return result.T  # (m, n) -> (n, m)


def outer_sum(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A^T @ B = sum over the n examples of outer(A[i], B[i]), for A : (n, p), B : (n, q) -> (p, q).

    The products are laid out as (p, q, n), and each of the p q sums runs over the contiguous
    examples axis in the project's pairwise order (`pairwise_sum`).
    """
    terms = np.multiply(np.ascontiguousarray(A.T)[:, None, :], np.ascontiguousarray(B.T)[None, :, :], order="C")
    return pairwise_sum(terms)


def column_sum(A: np.ndarray) -> np.ndarray:
    """A.sum(axis=0) for A : (n, p) -> (p,), in the project's pairwise order over the n examples."""
    return pairwise_sum(np.ascontiguousarray(A.T))


def total(A: np.ndarray) -> float:
    """The sum of every entry, in the project's pairwise order over A's entries in row-major order."""
    return float(pairwise_sum(np.ascontiguousarray(A).reshape(-1)))


_PIECE = 8192  # NumPy's buffer size: before NumPy 2.3, np.add.reduce cut a longer axis into pieces this long


def pairwise_sum(A: np.ndarray) -> np.ndarray:
    """A : (..., n), the last axis contiguous -> (...): each sum over that axis in one fixed pairwise order.

    The order is NumPy's pairwise summation (`pairwise_sum` in numpy/_core/src/umath/loops_utils.h.src)
    over the whole axis, +0.0 + pairwise(a[0 : n]), where pairwise(a[i : i + m]) is, for m < 8, the
    entries added in order; for m <= 128, eight running sums (lane j takes entries j, j + 8, ...)
    added as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the last m % 8 entries in order;
    above 128, pairwise of the first h = m // 2 rounded down to a multiple of 8, plus pairwise of the rest.
    np.add.reduce over a contiguous axis computes exactly that on NumPy 1.26 to 2.2 when n <= 8192,
    and for any n from 2.3 on; before 2.3 it added the sums of pieces of 8192 in turn instead. So the
    halves above 8192 are split here, as the pairwise order splits them, and only pieces of at most
    8192 go to np.add.reduce: the bits depend on n alone, under every NumPy tried (1.26.4 to 2.4.6:
    scripts/check-numpy-versions), and tests/test_portable.py checks the order under the installed one.
    """
    n = A.shape[-1]
    if n <= _PIECE:
        return np.add.reduce(A, axis=-1)
    half = n // 2 - n // 2 % 8
    # Each half's sum starts from +0.0 too, which can only turn a -0.0 into +0.0: the whole sum, which
    # starts from +0.0, comes out the same.
    return pairwise_sum(A[..., :half]) + pairwise_sum(A[..., half:])
