"""The compiled engine: `sgd.fit`'s epochs in Numba, with the NumPy path's bits, exactly.

`model.py` and `portable.py` are the reference: the math a teacher reads, and the test oracle. This
module does the same operations on the same numbers in the same order, one example and one number at
a time instead of one array at a time, so every result has the same bits on every machine:
- no `fastmath`: LLVM keeps IEEE 754 semantics, never fuses a multiply and an add, never reorders a sum;
- exp and log1p are `portable.py`'s table and polynomials, step by step, with its constants;
- the pixel products are sums of the error-free slices of `portable._slices`, exact in any order;
- the sums over hidden units and classes run in order; the sums over a batch are NumPy's pairwise
  summation (`pairwise_sum`), which is what `np.add.reduce` does over a contiguous axis.

Shapes: m = examples in the batch, H = hidden units, K = classes. Activations are kept one unit a row,
(H, m) and (K, m), so the loops over a batch's examples run over contiguous memory. A batch of one
runs as one kernel (`step_one`), its numbers in registers. The epoch's loss and accuracy are taken
every SUMMARY_ROWS examples, from logits just written and still in the cache (`summarize`).
Every kernel works in the weights' dtype (float64 or float32): a scalar of that dtype comes from the
`consts` array, never from a Python literal, which Numba would make float64.
"""

from __future__ import annotations

import contextlib
import functools
import math

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import caching, cgutils, codegen, compiler, compiler_machinery, typed_passes, untyped_passes
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic

from pipeline import native
from pipeline.errors import PipelineError, exit_on_error, shown
from pipeline.native import (
    E0,
    E1,
    E2,
    HIGHEST,
    INV_STEP,
    LOG_POLY,
    LOSS_IDS,
    LOWEST,
    MIN_COLUMNS,
    ONE,
    POW2_OFFSET,
    ROUND_SHIFT,
    SPINS,
    STEP_HI,
    STEP_LO,
    SUMMARY_ROWS,
    TABLE_SIZE,
    ZERO,
)
from pipeline.portable import TABLE_BITS as _TABLE_BITS
from pipeline.portable import TABLE_SIZE as _N


class _Lean(compiler.CompilerBase):
    """Numba's nopython pipeline without the passes this module has nothing for: closures to inline, with
    blocks to lift, literal_unroll, literally, and the rewrites after typing (array expressions, arrays of
    constants, string-literal indices)."""

    def define_pipelines(self):
        default = compiler.DefaultPassBuilder.define_nopython_pipeline(self.state)
        lean = compiler_machinery.PassManager("lean")
        for pass_class, description in default.passes:
            if pass_class not in _UNUSED:
                lean.add_pass(pass_class, description)
        lean.finalize()
        return [lean]


_UNUSED = (
    typed_passes.NopythonRewrites,
    untyped_passes.InlineClosureLikes,
    untyped_passes.WithLifting,
    untyped_passes.LiteralUnroll,
    untyped_passes.FindLiterallyCalls,
    untyped_passes.MakeFunctionToJitFunction,
)


# No fastmath, ever: it fuses multiply-adds and reorders sums. The functions below are kernels, which the
# C entry point (`entry_point`) links into one module: LLVM optimizes it and makes its machine code once
# (`_LinkedLibrary`), inlining what it finds worth it. The kernels allocate nothing, so they run without
# Numba's reference counting (atomic increments on every array passed, which cost more than a
# one-example step's arithmetic). Only compiled code calls them, so they go without the CPython and C
# wrappers Numba would build for each (a quarter of the compile); `from_python` gives the tests and the
# profile a callable copy. An integer constant passed to a kernel is written np.int64(...): a bare
# literal would compile the kernel again, for it. The views the epoch cuts from its scratch (ENGINE) are
# inlined by Numba into `train_epoch`: as kernels of their own they cost 1.7 s more to compile.
ENGINE = numba.njit(nogil=True, error_model="numpy", inline="always", no_cfunc_wrapper=True, pipeline_class=_Lean)
KERNEL = numba.njit(
    nogil=True, error_model="numpy", _nrt=False, no_cfunc_wrapper=True, no_cpython_wrapper=True, pipeline_class=_Lean
)
KEPT_APART: set[str] = set()  # the BATCH_KERNELs' names


def BATCH_KERNEL(function):
    """A KERNEL over a whole batch, which LLVM keeps as a function of its own rather than inline it into its
    callers (`_LinkedLibrary`): called once a batch, a call costs nothing beside its loops, and a copy
    inlined at each call site was more code for LLVM's module passes and its machine code."""
    KEPT_APART.add(function.__name__)
    return KERNEL(function)


llvm.add_symbol("sched_yield", native._libc_address("sched_yield"))  # for Numba's own JIT (`from_python`)


@functools.cache
def from_python(kernel):
    """`kernel` as a function Python can call: the same code, with the CPython wrapper the engine's own
    kernels go without (the kernels it calls are the engine's). Numba caches the copy's machine code in
    the machine's cache (`_CopyLocator`), so a test process compiles it once per machine and source."""
    copy = numba.njit(nogil=True, error_model="numpy", _nrt=False, pipeline_class=_Lean)(kernel.py_func)
    with contextlib.suppress(RuntimeError, OSError):  # no writable cache: compiled in each process instead
        copy._cache = _CopyCache(copy.py_func)  # what `cache=True` sets, with our locator
    compile_copy = copy.compile

    def compile(signature):  # what the dispatcher calls for a signature it has not seen
        with linked_libraries():
            return compile_copy(signature)

    copy.compile = compile
    return copy


class _CopyLocator(caching._CacheLocator):
    """Where Numba keeps `from_python`'s copies: `native.cache_root()/copies`, stamped by the digest of
    all the engine's sources (a copy inlines constants and kernels from all three), where Numba's own
    locator stamps the one file a function is in and names its folder after the clone's path. Numba's
    index still keys each entry on its signature, CPU and Numba version."""

    def __init__(self) -> None:
        self.path, self.stamp = native.cache_root() / "copies", native.sources_digest()

    def get_cache_path(self) -> str:
        return str(self.path)

    def get_source_stamp(self) -> str:
        return self.stamp

    def get_disambiguator(self) -> str:
        return "copy"

    @classmethod
    def from_function(cls, py_func, py_file):
        locator = cls()
        try:
            locator.ensure_cache_path()
        except OSError:
            return None  # Numba then raises RuntimeError: no locator
        return locator


class _CopyCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = (_CopyLocator,)


class _CopyCache(caching.FunctionCache):
    _impl_class = _CopyCacheImpl


TINY, NORMAL = 2.0**-1074, 2.0**-1022  # the smallest subnormal float64, and the smallest normal one
SKIP_BELOW = 1000  # max|w| < 2^SKIP_BELOW: big1 (`grids`) and w + big1 are finite, for sums of up to 2^23 entries


# ---- exp, log1p, sigmoid, softplus: portable.py's kernels over a row of numbers ----
#
# Each runs in passes over the row, as portable.py does over an array: the passes without table
# look-ups are plain loops of + - * / that LLVM vectorizes (it may: each lane does the same IEEE
# operations on its own number). W = (F1, F2, F3, F4, I1) is scratch of the row's length or more.


@BATCH_KERNEL
def exp_row(x, n, sign, out, T, W):
    """out[:n] = e^(sign x[:n]), sign = 1 or -1: `portable._exp`, in two passes (`exp_reduce` and
    `exp_scale`): the first has no table look-ups, so LLVM vectorizes it."""
    consts, powers, pow2 = T[0], T[1], T[2]
    F1, I1 = W[0], W[4]
    c = exp_constants(consts, sign)
    for i in range(n):
        F1[i], I1[i] = exp_reduce(x[i], sign, c)
    for i in range(n):
        out[i] = exp_scale(F1[i], I1[i], powers, pow2)


@KERNEL
def exp_constants(consts, sign):
    """The scalars `exp_reduce` reads, for e^(sign x): the clipping range, sign 256/ln2, and the rest."""
    lo = consts[LOWEST] if sign > 0 else -consts[HIGHEST]
    hi = consts[HIGHEST] if sign > 0 else -consts[LOWEST]
    scale = consts[INV_STEP] if sign > 0 else -consts[INV_STEP]
    rs, step_hi, step_lo, zero = consts[ROUND_SHIFT], consts[STEP_HI], consts[STEP_LO], consts[ZERO]
    return lo, hi, scale, rs, step_hi, step_lo, zero, -consts[E0], consts[E1], consts[E2]


@KERNEL
def exp_reduce(v, sign, c):
    """(p, k) for e^(sign v) = 2^(k/256) (1 + p), as `portable._exp`: v clipped, k = round(sign v 256/ln2),
    r = k ln2/256 - sign v, and p = e^-r - 1 by its polynomial. k is an int32 (0 for a NaN v, whose
    integer would be undefined; p stays NaN)."""
    lo, hi, scale, rs, step_hi, step_lo, zero, e0, e1, e2 = c
    v = lo if v < lo else v  # np.maximum and np.minimum: a NaN stays NaN
    v = hi if v > hi else v
    shifted = v * scale
    shifted += rs  # rounds to the integer k, as portable's bit trick reads it
    k = shifted - rs
    r = k * step_hi
    if sign > 0:
        r -= v
    else:
        r += v
    r += k * step_lo
    p = r * e0
    p += e1
    p *= r
    p = e2 - p
    p *= r * r
    p -= r
    return p, np.int32(zero if math.isnan(k) else k)


@KERNEL
def exp_scale(p, k, powers, pow2):
    """2^(k/256) (1 + p) = t + p t, t = 2^(j/256) 2^(k // 256) (exact: a normal number), j = k mod 256."""
    t = powers[k & (_N - 1)] * pow2[(k >> _TABLE_BITS) + POW2_OFFSET]
    p = p * t
    return p + t


@BATCH_KERNEL
def log1p_row(u, n, out, T, W):
    """out[:n] = ln(1 + u[:n]) for 0 <= u <= 1: `portable.log1p` (w = 1 + u, what its rounding lost,
    the nearest centre c_j = 1 + j/256, ln(c_j) from the table, ln(1 + r) by its polynomial)."""
    consts, centers, log_centers = T[0], T[3], T[4]
    F1, F2, F3, I1 = W[0], W[1], W[2], W[4]
    one, size, rs, zero = consts[ONE], consts[TABLE_SIZE], consts[ROUND_SHIFT], consts[ZERO]
    for i in range(n):
        w = u[i] + one
        lost = w - one
        shifted = lost * size
        shifted += rs
        j = shifted - rs
        I1[i] = np.int32(zero if math.isnan(j) else j)
        lost = u[i] - lost
        F1[i] = lost / w
        F2[i] = w
    for i in range(n):
        j = I1[i] & (2 * _N - 1)
        F3[i] = centers[j]
        out[i] = log_centers[j]
    c1, c2, c3, c4, c5 = (
        consts[LOG_POLY],
        consts[LOG_POLY + 1],
        consts[LOG_POLY + 2],
        consts[LOG_POLY + 3],
        consts[LOG_POLY + 4],
    )
    for i in range(n):
        r = F2[i] - F3[i]
        r /= F3[i]
        p = r * c1
        p += c2
        p *= r
        p += c3
        p *= r
        p += c4
        p *= r
        p += c5
        p *= r
        p *= r
        p += r
        p += F1[i]
        out[i] = p + out[i]


@BATCH_KERNEL
def sigmoid_row(z, n, out, T, W):
    """out[:n] = 1 / (1 + e^-z[:n])."""
    exp_row(z, n, -1, out, T, W)
    one = T[0][ONE]
    for i in range(n):
        out[i] = one / (out[i] + one)


@BATCH_KERNEL
def softplus_row(z, n, out, T, W):
    """out[:n] = ln(1 + e^z) = ln(1 + e^-|z|) + max(z, 0). z is overwritten with e^-|z|."""
    zero = T[0][ZERO]
    for i in range(n):
        out[i] = z[i] if (z[i] >= zero or math.isnan(z[i])) else zero  # np.maximum(z, 0): NaN stays
        z[i] = abs(z[i])
    exp_row(z, n, -1, z, T, W)
    F4 = W[3]
    for i in range(n):
        F4[i] = out[i]
    log1p_row(z, n, out, T, W)
    for i in range(n):
        out[i] += F4[i]


# ---- sums ----


@KERNEL
def pairwise_leaf(a, lo, n, zero):
    """NumPy's pairwise_sum for n <= 128: below 8 in order from 0, else 8 interleaved partial sums."""
    if n < 8:
        res = zero
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@BATCH_KERNEL
def pairwise_sum(a, n, zero, stack, values):
    """0 + NumPy's pairwise sum of a[:n], as `np.add.reduce` computes it over a contiguous axis (a batch of
    one: 0 + (0 + a[0]), which turns -0.0 into +0.0)."""
    return zero + pairwise_inner(a, np.int64(0), n, zero, stack, values)


@BATCH_KERNEL
def pairwise_inner(a, lo, n, zero, stack, values):
    """NumPy's pairwise sum of a[lo : lo + n], without pairwise_sum's leading 0 +: the value of one node
    of its tree, which a thread computes for its share of a batch (`tree_bounds`).

    Above 128 entries NumPy splits n into n2 = n/2 rounded down to a multiple of 8, and n - n2, and adds
    the halves' sums. Written as a loop with an explicit stack: Numba cannot cache recursive functions.
    stack : (3, 64) int64 and values : (64,) are scratch (the depth is below 64 for any n < 2^63)."""
    if n <= 128:
        return pairwise_leaf(a, lo, n, zero)
    lows, counts, states = stack[0], stack[1], stack[2]
    lows[0], counts[0], states[0], top, nvalues = lo, n, 0, 0, 0
    while top >= 0:
        lo, count = lows[top], counts[top]
        half = count // 2
        half -= half % 8
        if count <= 128:
            values[nvalues] = pairwise_leaf(a, lo, count, zero)
            nvalues += 1
            top -= 1
        elif states[top] == 0:  # the left half first
            states[top] = 1
            top += 1
            lows[top], counts[top], states[top] = lo, half, 0
        elif states[top] == 1:  # then the right half
            states[top] = 2
            top += 1
            lows[top], counts[top], states[top] = lo + half, count - half, 0
        else:  # both done: left + right
            nvalues -= 1
            values[nvalues - 1] += values[nvalues]
            top -= 1
    return values[0]


@KERNEL
def tree_bounds(m, depth, bounds):
    """The nodes `depth` levels down pairwise_sum's tree over m entries, left to right: node j covers
    bounds[j] .. bounds[j + 1]. Whether they exist: every node above them has more than 128 entries (a
    node of 128 or fewer is a leaf, summed in one pass)."""
    bounds[0], bounds[1], count = 0, m, 1
    for _ in range(depth):
        for j in range(count - 1, -1, -1):  # from the right, in place: node j's halves become 2j and 2j + 1
            lo, hi = bounds[j], bounds[j + 1]
            if hi - lo <= 128:
                return False
            half = (hi - lo) // 2
            half -= half % 8
            bounds[2 * j], bounds[2 * j + 1], bounds[2 * j + 2] = lo, lo + half, hi
        count *= 2
    return True


@KERNEL
def plan(m, threads, bounds):
    """(used, nodes): how many of `threads` share a batch of m examples, and the nodes of the pairwise
    tree they split it at (`tree_bounds`, written to bounds): thread t takes nodes t nodes / used ..
    (t + 1) nodes / used, so its columns are contiguous and its partial sums are whole nodes, which the
    first thread adds up the tree as NumPy would. At least MIN_COLUMNS examples a thread; (1, 1) when
    the batch is not worth sharing."""
    used = min(threads, m // MIN_COLUMNS)
    while used > 1:
        depth = 0
        while (1 << depth) < used:
            depth += 1
        if tree_bounds(m, depth, bounds):
            return used, np.int64(1 << depth)
        used -= 1
    bounds[0], bounds[1] = 0, m
    return np.int64(1), np.int64(1)


@BATCH_KERNEL
def slices(W, rows, cols, k, S1, S2):
    """`portable._slices` of W[:rows, :cols]: S1 + S2 = W up to a remainder, each on a grid where any
    sum of k entries is exact. W float64 or float32; S1, S2 float64, written in place. Returns the two
    grid steps (S1 and S2 are integer multiples of them), or (0, 0) when W is not finite."""
    exponent, finite = largest_exponent(W, rows, cols)
    big1, big2, q1, q2 = grids(exponent, k)
    for r in range(rows):
        for i in range(cols):
            S1[r, i], S2[r, i] = split(np.float64(W[r, i]), big1, big2)
    return (q1, q2) if finite else (0.0, 0.0)


@KERNEL
def grids(exponent, k):
    """(big1, big2, q1, q2) of `portable._slices` for max|w| < 2^exponent and sums of k entries: adding
    and taking away big1 rounds w to a multiple of q1, big2 the rest to a multiple of q2 (at least the
    smallest subnormal)."""
    spare = 0  # k.bit_length(), at least 2
    while k >> spare:
        spare += 1
    spare = max(2, spare)
    big1 = ldexp(1.5, exponent + spare - 1)
    big2 = ldexp(1.5, exponent + spare - 54 + spare - 1)
    return (
        big1,
        big2,
        max(ldexp(1.0, exponent + spare - 53), TINY),
        max(ldexp(1.0, exponent + 2 * spare - 107), TINY),
    )


@KERNEL
def ldexp(m, n):
    """math.ldexp(m, n) for m = 1.0 or 1.5: m times 2^n made from its bits where 2^n is a normal number
    (the product is then exact, as ldexp's), math.ldexp elsewhere (where it rounds). Numba's math.ldexp
    is a call into its C helpers, which cost a batch of one a tenth of its step (`step_one`)."""
    if -1022 <= n <= 1023:
        return m * _from_bits(np.int64(n + 1023) << np.int64(52))
    return math.ldexp(m, n)


@KERNEL
def split(w, big1, big2):
    """(s1, s2): w rounded to big1's grid, and what is left rounded to big2's."""
    s1 = (w + big1) - big1
    return s1, ((w - s1) + big2) - big2


@intrinsic
def _bits(typingctx, x):
    """The bit pattern of a float64 as an int64, of a float32 as an int32 (what a view of its array
    reads, without typing a view)."""
    width = types.int64 if x.bitwidth == 64 else types.int32

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(width))

    return width(x), codegen


@intrinsic
def _from_bits(typingctx, bits):
    """The float64 whose bit pattern is an int64, the float32 of an int32 (`_bits` undone)."""
    width = types.float64 if bits.bitwidth == 64 else types.float32

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(width))

    return width(bits), codegen


@KERNEL
def largest_exponent(W, rows, cols):
    """(e, finite) for W[:rows, :cols] float64 or float32: every |w| < 2^e, and whether all are finite."""
    return exponent_of(top_bits(W, rows, np.int64(0), cols), W.itemsize)


@BATCH_KERNEL
def top_bits(W, rows, lo, hi):
    """The largest bit pattern of |w| over W[:rows, lo:hi] (float64 or float32), as an int64. The largest
    |w| has the largest pattern (NaN and infinity the largest of all): an integer maximum, which LLVM
    vectorizes, where a float one must run in order; and threads that each take some columns combine
    theirs with max, in any order."""
    top = _bits(W.dtype.type(0))
    for r in range(rows):
        for i in range(np.uint64(lo), np.uint64(hi)):
            v = _bits(abs(W[r, i]))
            top = v if v > top else top
    return np.int64(top)


@KERNEL
def exponent_of(top, itemsize):
    """(e, finite) for the largest |w| whose bit pattern is top (`top_bits`, of a float of itemsize bytes):
    e as Python's math.frexp(float(max|w|))[1] gives it, 0 for 0, NaN and infinity (as frexp does)."""
    if itemsize == 8:
        mantissa_bits, bias, subnormal, ones = 52, 1022, 1074, 2047
    else:
        mantissa_bits, bias, subnormal, ones = 23, 126, 149, 255
    field = top >> mantissa_bits
    if field == ones:  # all ones: NaN or infinity
        return 0, False
    if field > 0:
        return field - bias, True
    bit_length = 0  # a subnormal or zero: its exponent is its bit length less the subnormal scale
    while top >> bit_length:
        bit_length += 1
    return (bit_length - subnormal if bit_length else 0), True


# ---- the losses (model.LOSSES): each one's value and gradient side by side ----

BCE, MSE = LOSS_IDS["bce"], LOSS_IDS["mse"]


@BATCH_KERNEL
def loss_outputs(loss, z, target, n, out, T, W):
    """out[:n] = the loss of n outputs with logits z and 0/1 targets, as `model.LOSSES[loss].outputs`:
    bce -log s(z) = softplus(-z) for a target 1, softplus(z) for a 0; mse (s(z) - y)^2. z is overwritten."""
    one = T[0][ONE]
    if loss == BCE:
        for i in range(n):
            z[i] = z[i] * (one - (target[i] + target[i]))  # z (1 - 2y): exact, a sign
        softplus_row(z, n, out, T, W)
    else:
        sigmoid_row(z, n, out, T, W)
        for i in range(n):
            d = out[i] - target[i]
            out[i] = d * d


@BATCH_KERNEL
def loss_gradient(loss, labels, lo, hi, A2, dZ2, counts):
    """dLoss/dZ2[:, lo:hi] of a (K, m) batch, as `model.LOSSES[loss].delta`: bce (A2 - Y) / m; mse
    2 (A2 - Y) A2 (1 - A2) / (m K). counts = [m, m K] in the weights' dtype (NumPy divides by them
    rounded to it)."""
    one = counts[0] / counts[0]
    zero, two = one - one, one + one
    for c in range(A2.shape[0]):
        for i in range(np.uint64(lo), np.uint64(hi)):
            d = A2[c, i] - (one if labels[i] == c else zero)
            if loss == BCE:
                dZ2[c, i] = d / counts[0]
            else:
                dZ2[c, i] = two * d * A2[c, i] * (one - A2[c, i]) / counts[1]


# ---- one batch: forward, loss gradient, backward, update ----
#
# Each kernel of a batch of m examples takes the columns lo .. hi of its (H, m) and (K, m) arrays: a
# thread's share (`plan`), or 0 .. m for the whole batch. Every column is one example's numbers, computed
# alone, so a share gives each the bits the whole batch would. What crosses columns (the pixel
# gradient's grid, the sums over the batch) is computed apart, in pieces threads combine exactly.


@BATCH_KERNEL
def pixel_rows(X, rows, lo, hi, P):
    """The batch's 0/1 pixels X[rows[lo:hi]], one pixel a row: P[:, lo:hi] of (30, m) uint8, 30 bytes an
    example (the kernels widen them as they read them: that costs less than moving wider numbers).
    Each example's row read once, in order; from m = 512, 64 examples at a time, each pixel's row of
    them written in turn: an example's 30 pixels lie in 30 rows m bytes apart, which for m a multiple
    of 4,096 all fall in one set of the L1 cache and evict each other (20x slower at batch 4,096)."""
    if P.shape[1] < 512:
        for i in range(np.uint64(lo), np.uint64(hi)):
            x = X[rows[i]]
            for p in range(X.shape[1]):
                P[p, i] = x[p]
        return
    for block in range(lo, hi, 64):
        end = min(block + 64, hi)
        for p in range(X.shape[1]):
            row = P[p]
            for i in range(np.uint64(block), np.uint64(end)):
                row[i] = X[rows[i], p]


@BATCH_KERNEL
def pixel_product(P, lo, hi, S1, S2, acc1, acc2, Z1):
    """Z1 = (X W1)^T : (H, m) for P : (30, m) uint8 pixels and w1's slices S1, S2 : (30, H), as
    `portable.pixels_matmul`: each slice's sum is exact in any order, then the two are added once.
    So three pixels are added at a time (a third of the loads and stores of the sums), and a product
    with a 0/1 pixel is exact, so the sums multiply rather than branch on the pixels."""
    H, pixels = S1.shape[1], P.shape[0]
    for h in range(H):  # one hidden unit at a time: its two rows of m sums stay in the L1 cache
        a1, a2 = acc1[h], acc2[h]
        for i in range(np.uint64(lo), np.uint64(hi)):
            a1[i] = 0.0
            a2[i] = 0.0
        for p in range(0, pixels - pixels % 3, 3):
            x, y, z = P[p], P[p + 1], P[p + 2]
            s1x, s1y, s1z, s2x, s2y, s2z = S1[p, h], S1[p + 1, h], S1[p + 2, h], S2[p, h], S2[p + 1, h], S2[p + 2, h]
            for i in range(np.uint64(lo), np.uint64(hi)):
                u, v, w = np.float64(x[i]), np.float64(y[i]), np.float64(z[i])
                a1[i] += (u * s1x + v * s1y) + w * s1z
                a2[i] += (u * s2x + v * s2y) + w * s2z
        for p in range(pixels - pixels % 3, pixels):
            s1, s2, x = S1[p, h], S2[p, h], P[p]
            for i in range(np.uint64(lo), np.uint64(hi)):
                a1[i] += np.float64(x[i]) * s1
                a2[i] += np.float64(x[i]) * s2
        for i in range(np.uint64(lo), np.uint64(hi)):
            Z1[h, i] = a1[i] + a2[i]  # rounded once to float64 (and to float32 on the store)


@BATCH_KERNEL
def forward(P, lo, hi, w1, w2, b1, b2, S1, S2, acc1, acc2, Z1, A1, Z2, A2, T, W):
    """Z1 = X W1 + b1, A1 = sigmoid(Z1) : (H, m); Z2 = A1 W2 + b2, A2 = sigmoid(Z2) : (K, m).

    w1, S1, S2 : (1, 30 H), one row (the slices' loops then run over all 30 H weights at once); the
    activations are C-contiguous (H, m) and (K, m), so for the whole batch each sigmoid is one pass
    over all of them (a share: one a row)."""
    (H, K), m = w2.shape, P.shape[1]
    slices(w1, np.int64(1), w1.shape[1], P.shape[0], S1, S2)
    pixel_product(P, lo, hi, S1.reshape(P.shape[0], H), S2.reshape(P.shape[0], H), acc1, acc2, Z1)
    if b1.shape[0]:
        for h in range(H):
            for i in range(np.uint64(lo), np.uint64(hi)):
                Z1[h, i] += b1[h]
    sigmoids(Z1, A1, lo, hi, m, T, W)
    for c in range(K):  # A1 W2 : (m, H) @ (H, K), summed over the H units in order
        for i in range(np.uint64(lo), np.uint64(hi)):
            Z2[c, i] = w2[0, c] * A1[0, i]
        for h in range(1, H):
            for i in range(np.uint64(lo), np.uint64(hi)):
                Z2[c, i] += w2[h, c] * A1[h, i]
        if b2.shape[0]:
            for i in range(np.uint64(lo), np.uint64(hi)):
                Z2[c, i] += b2[c]
    sigmoids(Z2, A2, lo, hi, m, T, W)


@BATCH_KERNEL
def sigmoids(Z, A, lo, hi, m, T, W):
    """A[:, lo:hi] = sigmoid(Z[:, lo:hi]) for (rows, m) arrays: one pass over all when lo .. hi is 0 .. m."""
    rows = Z.shape[0]
    if lo == 0 and hi == m:
        sigmoid_row(Z.reshape(rows * m), rows * m, A.reshape(rows * m), T, W)
    else:
        for r in range(rows):
            sigmoid_row(Z[r, lo:hi], hi - lo, A[r, lo:hi], T, W)


@BATCH_KERNEL
def hidden_delta(w2, dZ2, A1, dZ1, lo, hi, one):
    """dZ1 = (dZ2 W2^T) * A1 * (1 - A1) : (H, m), the sum over the K classes in order."""
    for h in range(A1.shape[0]):
        for i in range(np.uint64(lo), np.uint64(hi)):
            dZ1[h, i] = w2[h, 0] * dZ2[0, i]
        for c in range(1, dZ2.shape[0]):
            for i in range(np.uint64(lo), np.uint64(hi)):
                dZ1[h, i] += w2[h, c] * dZ2[c, i]
        for i in range(np.uint64(lo), np.uint64(hi)):
            dZ1[h, i] = dZ1[h, i] * A1[h, i] * (one - A1[h, i])


@BATCH_KERNEL
def pixel_gradient(P, dZ1, m, dW1, G1, G2, N1, N2, sums):
    """dW1 = X^T dZ1 : (30, m) @ (m, H) -> (30, H), as `portable.pixels_matmul`, for a whole batch.

    For m > 1 that is, for each slice of dZ1, a sum of the inked examples' entries, exact in any order.
    Each slice lies on a grid q: its entries are integers times q, so the sums run in int64 (which
    LLVM vectorizes: integer addition has no rounding to keep in order), then scale back exactly.
    Threads each do `gradient_slices` and `gradient_sums` for their columns, and the first adds their
    integer sums (`gradient_from_sums`). P : (30, m) uint8 pixels; G1, G2 : (H, m) float64 and N1, N2 :
    (H, m) int64 scratch; sums : (1, 2, 30, H) int64."""
    H = dZ1.shape[0]
    if m == 1:  # one exact product each
        for p in range(P.shape[0]):
            for h in range(H):
                dW1[p, h] = np.float64(P[p, 0]) * np.float64(dZ1[h, 0])
        return
    top, lo = top_bits(dZ1, H, np.int64(0), m), np.int64(0)
    q1, q2 = gradient_slices(dZ1, lo, m, top, m, G1, G2)
    if q1 == 0.0:
        gradient_exact(P, G1, G2, m, dW1)
    else:
        gradient_sums(P, lo, m, G1, G2, q1, q2, N1, N2, sums[0])
        gradient_from_sums(sums, np.int64(1), q1, q2, dW1)


@BATCH_KERNEL
def gradient_slices(dZ1, lo, hi, top, m, G1, G2):
    """`slices` of dZ1[:, lo:hi], on the grids of a batch of m whose largest pattern is top (`top_bits`
    over the whole batch): G1, G2[:, lo:hi]. Returns the grids' steps, or (0, 0) when not finite."""
    exponent, finite = exponent_of(top, dZ1.itemsize)
    big1, big2, q1, q2 = grids(exponent, m)
    for h in range(dZ1.shape[0]):
        for i in range(np.uint64(lo), np.uint64(hi)):
            G1[h, i], G2[h, i] = split(np.float64(dZ1[h, i]), big1, big2)
    return (q1, q2) if finite else (0.0, 0.0)


@BATCH_KERNEL
def gradient_exact(P, G1, G2, m, dW1):
    """dW1 when the gradient is not finite: training has diverged, and the float sums make that show (as NaN)."""
    for p in range(P.shape[0]):
        for h in range(G1.shape[0]):
            dW1[p, h] = exact_dot(P[p], G1[h], m) + exact_dot(P[p], G2[h], m)


@BATCH_KERNEL
def gradient_sums(P, lo, hi, G1, G2, q1, q2, N1, N2, sums):
    """sums[0], sums[1] : (30, H) int64 = for each pixel and unit, the sums over the inked examples among
    columns lo .. hi of G1 / q1 and G2 / q2 (integers: exact, and exact again when threads add theirs)."""
    H, pixels = G1.shape[0], P.shape[0]
    grid_integers(G1, q1, N1, lo, hi)
    grid_integers(G2, q2, N2, lo, hi)
    for h in range(H):  # each unit's two rows of integers read once for three pixels
        n1, n2 = N1[h], N2[h]
        for p in range(0, pixels - pixels % 3, 3):
            x, y, z = P[p], P[p + 1], P[p + 2]
            x1 = y1 = z1 = x2 = y2 = z2 = 0
            for i in range(np.uint64(lo), np.uint64(hi)):
                mx, my, mz = -np.int64(x[i]), -np.int64(y[i]), -np.int64(z[i])  # all ones where inked, else 0
                x1 += mx & n1[i]
                y1 += my & n1[i]
                z1 += mz & n1[i]
                x2 += mx & n2[i]
                y2 += my & n2[i]
                z2 += mz & n2[i]
            sums[0, p, h], sums[0, p + 1, h], sums[0, p + 2, h] = x1, y1, z1
            sums[1, p, h], sums[1, p + 1, h], sums[1, p + 2, h] = x2, y2, z2
        for p in range(pixels - pixels % 3, pixels):
            x, t1, t2 = P[p], 0, 0
            for i in range(np.uint64(lo), np.uint64(hi)):
                mask = -np.int64(x[i])
                t1 += mask & n1[i]
                t2 += mask & n2[i]
            sums[0, p, h], sums[1, p, h] = t1, t2


@BATCH_KERNEL
def gradient_from_sums(sums, count, q1, q2, dW1):
    """dW1 from the integer sums of `count` shares, sums : (threads, 2, 30, H): each product exact, one rounding."""
    for p in range(dW1.shape[0]):
        for h in range(dW1.shape[1]):
            t1, t2 = sums[0, 0, p, h], sums[0, 1, p, h]
            for t in range(1, count):
                t1 += sums[t, 0, p, h]
                t2 += sums[t, 1, p, h]
            dW1[p, h] = np.float64(t1) * q1 + np.float64(t2) * q2


@BATCH_KERNEL
def grid_integers(G, q, N, lo, hi):
    """N[:, lo:hi] = G / q, exactly (G is on the grid of q, a power of two: the quotients are integers
    below 2^53). As G (1/q), a multiplication, unless 1/q would overflow (q below 2^-1022)."""
    if q >= NORMAL:
        scale = 1.0 / q
        for h in range(G.shape[0]):
            for i in range(np.uint64(lo), np.uint64(hi)):
                N[h, i] = np.int64(G[h, i] * scale)
    else:
        for h in range(G.shape[0]):
            for i in range(np.uint64(lo), np.uint64(hi)):
                N[h, i] = np.int64(G[h, i] / q)


@KERNEL
def exact_dot(x, g, m):
    """The sum of x[i] g[i] for i < m, in order (0/1 x and g on a grid: every order gives the same)."""
    total = 0.0
    for i in range(m):
        total += np.float64(x[i]) * g[i]
    return total


@BATCH_KERNEL
def batch_sums(A1, dZ1, dZ2, bounds, first, last, bias, scratch, zero, stack, values, sums):
    """The sums over a batch that the update needs, for the nodes first .. last of their pairwise tree
    (`plan`): sums[h K + c, j] of A1[h] dZ2[c] (dW2 = A1^T dZ2), then of dZ1[h] and dZ2[c] (the biases'),
    over the columns bounds[j] .. bounds[j + 1]. scratch : (m,) holds the products, in their columns."""
    H, K = A1.shape[0], dZ2.shape[0]
    lo, hi = bounds[first], bounds[last]
    for h in range(H):
        for c in range(K):
            for i in range(np.uint64(lo), np.uint64(hi)):
                scratch[i] = A1[h, i] * dZ2[c, i]
            for j in range(first, last):
                sums[h * K + c, j] = pairwise_inner(scratch, bounds[j], bounds[j + 1] - bounds[j], zero, stack, values)
    if bias:
        for j in range(first, last):
            node_lo, n = bounds[j], bounds[j + 1] - bounds[j]
            for h in range(H):
                sums[H * K + h, j] = pairwise_inner(dZ1[h], node_lo, n, zero, stack, values)
            for c in range(K):
                sums[H * K + H + c, j] = pairwise_inner(dZ2[c], node_lo, n, zero, stack, values)


@BATCH_KERNEL
def update(lr, w1, w2, b1, b2, dW1, sums, nodes, zero):
    """W -= lr dW for every weight: dW1 given, dW2 and the bias gradients the sums of `batch_sums`' nodes,
    added up their tree level by level (left + right, as `pairwise_inner` does), then 0 + that."""
    H, K = w2.shape
    for p in range(w1.shape[0]):
        for h in range(H):
            w1[p, h] -= lr * dW1[p, h]
    count = H * K + (H + K if b1.shape[0] else 0)
    for s in range(count):
        n = nodes
        while n > 1:
            n //= 2
            for j in range(n):
                sums[s, j] = sums[s, 2 * j] + sums[s, 2 * j + 1]
    for h in range(H):
        for c in range(K):
            w2[h, c] -= lr * (zero + sums[h * K + c, 0])
    if b1.shape[0]:
        for h in range(H):
            b1[h] -= lr * (zero + sums[H * K + h, 0])
        for c in range(K):
            b2[c] -= lr * (zero + sums[H * K + H + c, 0])


# ---- threads: a barrier on a counter in the workspace ----


@intrinsic
def _add_atomic(typingctx, array, index, value):
    """array[index] += value as one atomic step (sequentially consistent); returns the value before."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
        return builder.atomic_rmw("add", pointer, args[2], "seq_cst")

    return types.int64(array, types.int64, types.int64), codegen


@intrinsic
def _load_acquire(typingctx, array, index):
    """array[index], read with acquire ordering: what its writer stored before its atomic add is seen after."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)

    return types.int64(array, types.int64), codegen


@intrinsic
def _yield(typingctx):
    """sched_yield(): let another thread have this core (the one waited for, on a busy machine)."""

    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(function, [])
        return context.get_dummy_value()

    return types.void(), codegen


@KERNEL
def barrier(sync, passed, threads):
    """Wait until all `threads` have arrived here, for the `passed`-th time (counted from 1). sync : (1,)
    int64 counts every arrival of the epoch (zeroed before it): all have arrived when it reaches passed
    threads. Spins SPINS times, then yields between looks."""
    _add_atomic(sync, np.int64(0), np.int64(1))
    target, spins = passed * threads, 0
    while _load_acquire(sync, np.int64(0)) < target:
        spins += 1
        if spins > SPINS:
            _yield()


# ---- a batch of one: the same step, fused ----


@KERNEL
def step_one(X, row, label, lr, loss, w1, w2, b1, b2, Z2_out, out_row, work, T, acc):
    """`forward`, `loss_gradient`, `hidden_delta`, `pixel_gradient` and `update` for a batch of one,
    X[row] : (30,) uint8, fused into one pass: the same operations in the same order, with the numbers
    in registers or a few short rows rather than in the kernels' (H, m) arrays, whose loads and stores
    cost more than one example's arithmetic. Z2_out[out_row] : (K,) gets the logits; work : (2 H + K,)
    scratch of the weights' dtype; acc : (2 H,) or longer, float64 scratch."""
    consts, powers, pow2 = T[0], T[1], T[2]
    zero, one, to = consts[ZERO], consts[ONE], w1.dtype.type  # to(x): x rounded to the weights' dtype
    pixels, (H, K) = X.shape[1], w2.shape
    pH, x = pixels * H, X[row]
    w = _shaped(w1, 0, (pH,))
    a1, dz1, dz2 = work[:H], work[H : 2 * H], work[2 * H : 2 * H + K]
    c = exp_constants(consts, -1)
    # Z1 = X W1 on the slices' grids: each unit's two sums are exact in any order, so they run a pixel
    # at a time over the H units, whose weights are a contiguous row of w1
    exponent, finite = largest_exponent(_shaped(w1, 0, (1, pH)), np.int64(1), pH)
    big1, big2, _, _ = grids(exponent, pixels)
    for h in range(2 * H):
        acc[h] = 0.0
    # a blank pixel adds v s = +-0 to each sum, which leaves it as it is (a sum from +0 is never -0), where
    # every slice s is finite: all of w1 finite, and far enough from the largest float that big1 and w + big1
    # are (SKIP_BELOW); elsewhere (training has diverged) every pixel, so 0 inf and 0 NaN are NaN, as NumPy's
    every = not finite or exponent > SKIP_BELOW
    for p in range(pixels):
        if every or x[p] != 0:
            v, o = np.float64(x[p]), p * H
            for h in range(H):
                s1, s2 = split(np.float64(w[o + h]), big1, big2)
                acc[h] += v * s1
                acc[H + h] += v * s2
    for h in range(H):
        z = to(acc[h] + acc[H + h])
        if b1.shape[0]:
            z += b1[h]
        e, k = exp_reduce(z, -1, c)
        a1[h] = one / (exp_scale(e, k, powers, pow2) + one)  # A1 = sigmoid(Z1)
    count = to(K)  # m K, for mse
    for j in range(K):
        z = w2[0, j] * a1[0]  # Z2 = A1 W2 + b2, summed over the H units in order
        for h in range(1, H):
            z += w2[h, j] * a1[h]
        if b2.shape[0]:
            z += b2[j]
        Z2_out[out_row, j] = z
        e, k = exp_reduce(z, -1, c)
        a2 = one / (exp_scale(e, k, powers, pow2) + one)  # A2 = sigmoid(Z2)
        d = a2 - (one if label == j else zero)  # dZ2, as loss_gradient with m = 1
        if loss == BCE:
            dz2[j] = d  # d / 1, which IEEE 754 makes d exactly
        else:
            dz2[j] = (one + one) * d * a2 * (one - a2) / count
    for h in range(H):  # dZ1 = (dZ2 W2^T) A1 (1 - A1), as hidden_delta
        d = w2[h, 0] * dz2[0]
        for j in range(1, K):
            d += w2[h, j] * dz2[j]
        dz1[h] = d * a1[h] * (one - a1[h])
    for p in range(pixels):  # W1 -= lr X^T dZ1: one exact product each, as pixel_gradient with m = 1
        v, o = np.float64(x[p]), p * H
        for h in range(H):
            w[o + h] -= lr * to(v * np.float64(dz1[h]))
    for h in range(H):  # W2 -= lr A1^T dZ2 and the biases: each batch sum of one term is 0 + (0 + t)
        for j in range(K):
            w2[h, j] -= lr * (zero + (zero + a1[h] * dz2[j]))
    if b1.shape[0]:
        for h in range(H):
            b1[h] -= lr * (zero + (zero + dz1[h]))
        for j in range(K):
            b2[j] -= lr * (zero + (zero + dz2[j]))


@intrinsic
def _shaped(typingctx, flat, lo, shape):
    """flat[lo : lo + prod(shape)] as a C-contiguous array of that shape: a view, made without a slice's
    and a reshape's checks, whose code was a third of `train_epoch`'s (the caller's sizes are right:
    `native.workspace` makes the buffers)."""
    view_type = types.Array(flat.dtype, len(shape.types), "C")

    def codegen(context, builder, signature, args):
        data = builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
        return _c_array(context, builder, view_type, data, args[2])

    return view_type(flat, types.intp, types.UniTuple(types.intp, view_type.ndim)), codegen


@intrinsic
def _pointed(typingctx, pointer, shape):
    """The C-contiguous array of `shape` at `pointer` (what numba.carray makes, without its checks and
    its own compiles: the entry point's arrays, whose shapes `native.epoch` checked)."""
    view_type = types.Array(pointer.dtype, len(shape.types), "C")

    def codegen(context, builder, signature, args):
        return _c_array(context, builder, view_type, args[0], args[1])

    return view_type(pointer, types.UniTuple(types.intp, view_type.ndim)), codegen


def _c_array(context, builder, view_type, data, shape):
    """The code of a C-contiguous array of view_type at the pointer data, its shape the tuple shape."""
    view = context.make_array(view_type)(context, builder)
    dims = cgutils.unpack_tuple(builder, shape, view_type.ndim)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(view_type.dtype)))
    strides, step = [], itemsize
    for dim in reversed(dims):
        strides.insert(0, step)
        step = builder.mul(step, dim)
    context.populate_array(
        view,
        data=data,
        shape=cgutils.pack_array(builder, dims),
        strides=cgutils.pack_array(builder, strides),
        itemsize=itemsize,
        meminfo=None,
    )
    return view._getvalue()


@ENGINE
def carve(wf, wi, wd, wu, wj, N, bs, H, K, pixels, thread, threads):
    """`workspace`'s buffers as the arrays `train_epoch` uses (views: nothing is allocated): each buffer
    is what the threads share, then each thread's own part (`native.workspace` sizes them alike)."""
    rows_k, n, nodes, pH = SUMMARY_ROWS * K, max(bs * H, SUMMARY_ROWS * K), 2 * threads, pixels * H
    # float64: acc1, acc2, G1, G2 (4 H bs) and each thread's largest |logit|; then S1, S2 a thread
    floats, largests = _shaped(wf, 0, (4 * H * bs,)), _shaped(wf, 4 * H * bs, (threads,))
    o = 4 * H * bs + threads + thread * 2 * pH
    S1, S2 = _shaped(wf, o, (1, pH)), _shaped(wf, o + pH, (1, pH))
    # int64: the barrier's counter (padded to a cache line), labels, N1 and N2, visited, each thread's
    # largest gradient pattern, correct count and integer pixel sums; then stack and bounds a thread
    sync, labels, o = _shaped(wi, 0, (1,)), _shaped(wi, 8, (bs,)), 8 + bs
    ints, visited = _shaped(wi, o, (2 * H * bs,)), _shaped(wi, o + 2 * H * bs, (N,))
    o += 2 * H * bs + N
    tops, corrects = _shaped(wi, o, (threads,)), _shaped(wi, o + threads, (threads,))
    partials = _shaped(wi, o + 2 * threads, (threads, 2, pixels, H))
    o += 2 * threads + threads * 2 * pH + thread * (192 + nodes + 1)
    stack, bounds = _shaped(wi, o, (3, 64)), _shaped(wi, o + 192, (nodes + 1,))
    # the weights' dtype: dW1, scratch, the batch's activations (typed), per_example, the batch's sums of
    # nodes; then counts, W, values, work and the summary's rows a thread
    dW1, scratch, o = _shaped(wd, 0, (pixels, H)), _shaped(wd, pH, (bs,)), pH + bs
    typed, per_example = _shaped(wd, o, (3 * (H + K) * bs,)), _shaped(wd, o + 3 * (H + K) * bs, (N,))
    o += 3 * (H + K) * bs + N
    sums = _shaped(wd, o, (H * K + H + K, nodes))
    o += (H * K + H + K) * nodes + thread * (2 + 4 * n + 64 + 2 * H + K + 3 * rows_k)
    counts, o = _shaped(wd, o, (2,)), o + 2
    W0, W1, W2, W3 = (
        _shaped(wd, o, (n,)),
        _shaped(wd, o + n, (n,)),
        _shaped(wd, o + 2 * n, (n,)),
        _shaped(wd, o + 3 * n, (n,)),
    )
    W = (W0, W1, W2, W3, _shaped(wj, thread * n, (n,)))
    o += 4 * n
    values, work, o = _shaped(wd, o, (64,)), _shaped(wd, o + 64, (2 * H + K,)), o + 64 + 2 * H + K
    z, target, out = (
        _shaped(wd, o, (rows_k,)),
        _shaped(wd, o + rows_k, (rows_k,)),
        _shaped(wd, o + 2 * rows_k, (rows_k,)),
    )
    bytes_ = _shaped(wu, 0, (pixels * bs,))
    shared = (floats, ints, typed, bytes_, labels, visited, per_example, scratch, dW1, sums, partials)
    own = (S1, S2, stack, bounds, counts, W, values, work, z, target, out)
    return shared, own, (sync, tops, corrects, largests)


@KERNEL
def train_epoch(X, y, order, lr, batch_size, loss, w1, w2, b1, b2, Z2_out, T, wf, wi, wd, wu, wj, thread, threads):
    """One pass over X[order] : (N, 30) uint8, batch by batch, as `sgd.train_epoch`: the weights move in
    place, and Z2_out[i] : (K,) gets the i-th visited example's logits before its update. Returns the
    epoch's (sum of the examples' losses, correct argmax count, largest |logit|) over Z2_out, as
    `sgd.numpy_epoch` finds them (the sum before its division by `model.LOSSES[loss].count`).
    wf, wi, wd, wu, wj : `workspace(N, batch_size, H, K, 30, w1.dtype, threads)`.

    `threads` calls run at once, `thread` = 0 .. threads - 1, on one workspace whose barrier counter is
    0; the first returns the epoch's figures (the others zeros). A batch that `plan` shares is split by
    columns (`shared_batch`); any other the first thread trains alone. Every thread count gives the
    same bits."""
    N, (H, K), pixels = order.shape[0], w2.shape, X.shape[1]
    bs = max(1, min(batch_size, N))
    shared, own, sync = carve(wf, wi, wd, wu, wj, N, bs, H, K, pixels, thread, threads)
    labels, visited, per_example, scratch, dW1, sums, partials = shared[4:]
    stack, bounds, counts, values, work = own[2], own[3], own[4], own[6], own[7]
    zero, first = T[0][ZERO], np.int64(0)
    bias, full = b1.shape[0] > 0, N // bs * bs  # the examples in whole batches, then the shorter last
    # the epoch's summary: the first thread's over the rows of Z2_out before `summarized`, and each
    # thread's over its own rows of the batches it shared; `passed` counts the barriers
    correct, largest, summarized, passed = np.int64(0), 0.0, np.int64(0), np.int64(0)
    # the whole batches, then the shorter last, each with its arrays compact: one call of `batch_arrays`,
    # which Numba inlines at each call site
    for part in range(2):
        m = bs if part == 0 else N - full
        if m == 0:
            continue
        batch = batch_arrays(shared[3], shared[0], shared[1], shared[2], pixels, H, K, m)
        used, nodes = plan(m, threads, bounds)
        for start in range(0 if part == 0 else full, full if part == 0 else N, m):
            counts[0], counts[1], rows = m, m * K, order[start : start + m]
            if used > 1:  # a shared batch
                if thread == 0 and summarized < start:  # rows the first thread trained alone
                    right, top = summary(loss, Z2_out, visited, summarized, start - summarized, per_example, own, T)
                    correct, largest, summarized = correct + right, max_nan(largest, top), start
                share = (thread, threads, used, nodes, passed)
                right, top = shared_batch(
                    X, y, rows, start, lr, loss, (w1, w2, b1, b2), Z2_out, T, batch, shared, own, sync, share
                )
                correct, largest, passed, summarized = correct + right, max_nan(largest, top), passed + 3, start + m
            elif thread == 0:
                if m == 1:
                    visited[start] = labels[0] = y[rows[0]]
                    step_one(X, rows[0], labels[0], lr, loss, w1, w2, b1, b2, Z2_out, start, work, T, shared[0])
                else:
                    P, _, _, G1, G2, N1, N2, _, A1, dZ1, _, _, dZ2 = batch
                    forward_share(
                        X, y, rows, start, first, m, loss, w1, w2, b1, b2, Z2_out, T, batch, labels, visited, own
                    )
                    pixel_gradient(P, dZ1, m, dW1, G1, G2, N1, N2, partials)
                    batch_sums(A1, dZ1, dZ2, bounds, first, np.int64(1), bias, scratch, zero, stack, values, sums)
                    update(lr, w1, w2, b1, b2, dW1, sums, np.int64(1), zero)
                if start + m - summarized >= SUMMARY_ROWS or start + m == N:  # the rows just written, while cached
                    n = start + m - summarized
                    right, top = summary(loss, Z2_out, visited, summarized, n, per_example, own, T)
                    correct, largest, summarized = correct + right, max_nan(largest, top), summarized + n
    if threads > 1:  # each thread's summary, to the first
        correct, largest = gather(sync[0], sync[2], sync[3], correct, largest, thread, threads, passed + 1)
    return np.float64(pairwise_sum(per_example, N, zero, stack, values)) if thread == 0 else 0.0, correct, largest


@BATCH_KERNEL
def shared_batch(X, y, rows, start, lr, loss, weights, Z2_out, T, batch, shared, own, sync, share):
    """Thread `thread`'s part of a batch that `used` of the `threads` share (share = (thread, threads,
    used, nodes, passed), passed the barriers before it; weights = (w1, w2, b1, b2)): its columns'
    forward pass, gradients and summary, then its integer pixel sums and its nodes of the pairwise sums;
    the first thread adds them up and moves the weights. Returns its summary of its rows (correct count,
    largest |logit|). Three barriers."""
    P, _, _, G1, G2, N1, N2, _, A1, dZ1, _, _, dZ2 = batch
    labels, visited, per_example, scratch, dW1, sums, partials = shared[4:]
    stack, bounds, values = own[2], own[3], own[6]
    (w1, w2, b1, b2), (thread, threads, used, nodes, passed) = weights, share
    counter, tops = sync[0], sync[1]
    H, m, zero = A1.shape[0], rows.shape[0], T[0][ZERO]
    first, last = thread * nodes // used, (thread + 1) * nodes // used
    lo, hi = (bounds[first], bounds[last]) if thread < used else (m, m)
    right, top, q1, q2 = np.int64(0), 0.0, 0.0, 0.0
    barrier(counter, passed + 1, threads)  # the weights of the batch before are in place
    if thread < used:
        forward_share(X, y, rows, start, lo, hi, loss, w1, w2, b1, b2, Z2_out, T, batch, labels, visited, own)
        right, top = summary(loss, Z2_out, visited, start + lo, hi - lo, per_example, own, T)
        tops[thread] = top_bits(dZ1, H, lo, hi)
    barrier(counter, passed + 2, threads)  # every share's largest gradient pattern is known
    if thread < used:
        pattern = tops[0]
        for t in range(1, used):
            pattern = max(pattern, tops[t])
        q1, q2 = gradient_slices(dZ1, lo, hi, pattern, m, G1, G2)
        if q1 != 0.0:
            gradient_sums(P, lo, hi, G1, G2, q1, q2, N1, N2, partials[thread])
        batch_sums(A1, dZ1, dZ2, bounds, first, last, b1.shape[0] > 0, scratch, zero, stack, values, sums)
    barrier(counter, passed + 3, threads)  # every share's sums are written
    if thread == 0:
        if q1 == 0.0:  # not finite: training has diverged
            gradient_exact(P, G1, G2, m, dW1)
        else:
            gradient_from_sums(partials, used, q1, q2, dW1)
        update(lr, w1, w2, b1, b2, dW1, sums, nodes, zero)
    return right, top


@BATCH_KERNEL
def forward_share(X, y, rows, start, lo, hi, loss, w1, w2, b1, b2, Z2_out, T, batch, labels, visited, own):
    """The columns lo .. hi of a batch of the examples X[rows], the epoch's rows start .. start + m: each
    example's label (to labels and visited), pixels, forward pass, logits (to Z2_out), loss gradient
    and hidden delta."""
    P, acc1, acc2, _, _, _, _, Z1, A1, dZ1, Z2, A2, dZ2 = batch
    S1, S2, counts, W = own[0], own[1], own[4], own[5]
    w1_row, K = w1.reshape(1, w1.shape[0] * w1.shape[1]), w2.shape[1]
    for i in range(lo, hi):
        visited[start + i] = labels[i] = y[rows[i]]
    pixel_rows(X, rows, lo, hi, P)
    forward(P, lo, hi, w1_row, w2, b1, b2, S1, S2, acc1, acc2, Z1, A1, Z2, A2, T, W)
    for i in range(lo, hi):
        for c in range(K):
            Z2_out[start + i, c] = Z2[c, i]
    loss_gradient(loss, labels, lo, hi, A2, dZ2, counts)
    hidden_delta(w2, dZ2, A1, dZ1, lo, hi, T[0][ONE])


@BATCH_KERNEL
def summary(loss, Z2, labels, start, n, per_example, own, T):
    """`summarize` with a thread's own scratch."""
    z, target, out, W = own[8], own[9], own[10], own[5]
    return summarize(loss, Z2, labels, start, n, per_example, z, target, out, T, W)


@KERNEL
def gather(counter, corrects, largests, correct, largest, thread, threads, passed):
    """The epoch's correct count and largest |logit| over every thread's, for the first thread (the others
    leave theirs and go): the last barrier of the epoch."""
    corrects[thread], largests[thread] = correct, largest
    if thread != 0:
        _add_atomic(counter, np.int64(0), np.int64(1))
        return np.int64(0), 0.0
    barrier(counter, passed, threads)
    for t in range(1, threads):
        correct, largest = correct + corrects[t], max_nan(largest, largests[t])
    return correct, largest


@ENGINE
def batch_arrays(bytes_, floats, ints, typed, pixels, H, K, m):
    """A batch of m examples' arrays, each C-contiguous, carved out of four flat buffers: uint8 P (30, m);
    float64 acc1, acc2, G1, G2 (H, m); int64 N1, N2 (H, m); in the weights' dtype Z1, A1, dZ1 (H, m) and
    Z2, A2, dZ2 (K, m)."""
    Hm, Km = H * m, K * m
    P = _shaped(bytes_, 0, (pixels, m))
    f0, f1 = _shaped(floats, 0, (H, m)), _shaped(floats, Hm, (H, m))
    f2, f3 = _shaped(floats, 2 * Hm, (H, m)), _shaped(floats, 3 * Hm, (H, m))
    n0, n1 = _shaped(ints, 0, (H, m)), _shaped(ints, Hm, (H, m))
    t0, t1, t2 = _shaped(typed, 0, (H, m)), _shaped(typed, Hm, (H, m)), _shaped(typed, 2 * Hm, (H, m))
    o = 3 * Hm
    u0, u1, u2 = _shaped(typed, o, (K, m)), _shaped(typed, o + Km, (K, m)), _shaped(typed, o + 2 * Km, (K, m))
    return P, f0, f1, f2, f3, n0, n1, t0, t1, t2, u0, u1, u2


# ---- an epoch's loss and accuracy, batch by batch ----


@BATCH_KERNEL
def summarize(loss, Z2, labels, start, n, per_example, z, target, out, T, W):
    """per_example[start : start + n] = the losses of the rows start .. start + n of Z2 : (N, K)
    C-contiguous, whose labels are labels[start : start + n] (0 + the K outputs' losses, added in
    order, as `model.loss_value`); returns (how many have their argmax at their label, their largest
    |logit|), as `model.accuracy` and `sgd.fit`. Called on rows just written, while in the cache, a
    block of z.shape[0] / K rows at a time: their logits in a row, as z, target and out : (block K,)."""
    K = Z2.shape[1]
    flat, block, zero, one = Z2.reshape(Z2.shape[0] * K), z.shape[0] // K, T[0][ZERO], T[0][ONE]
    correct, largest = 0, 0.0
    for first in range(start, start + n, block):
        count = min(block, start + n - first)
        for j in range(count * K):
            z[j] = flat[first * K + j]
        for i in range(count):
            for c in range(K):
                target[i * K + c] = one if labels[first + i] == c else zero
        loss_outputs(loss, z, target, count * K, out, T, W)
        for i in range(count):
            total = zero
            for c in range(K):
                total += out[i * K + c]
            per_example[first + i] = total
        correct += correct_rows(Z2, labels, first, count)
        largest = max_nan(largest, largest_abs(flat, first * K, count * K))
    return correct, largest


@BATCH_KERNEL
def correct_rows(Z2, labels, start, n):
    """How many of the rows start .. start + n of Z2 : (N, K) have their argmax at their label, as
    `np.argmax` picks it: the first largest entry, or the first NaN. (Selects, not branches: which
    entry is largest is as unpredictable as the logits.)"""
    correct = 0
    for i in range(start, start + n):
        best, top = 0, Z2[i, 0]
        for c in range(1, Z2.shape[1]):
            v = Z2[i, c]
            take = (v > top) | (math.isnan(v) & (not math.isnan(top)))
            best = c if take else best
            top = v if take else top
        correct += best == labels[i]
    return correct


@BATCH_KERNEL
def largest_abs(x, start, n):
    """max |x[start : start + n]| as a float64, NaN if any is NaN (as np.max(np.abs(x))): the largest bit
    pattern of |x|, an integer maximum, which LLVM vectorizes, where a float one must run in order
    (NaN's pattern is the largest)."""
    top = _bits(x.dtype.type(0))
    for i in range(start, start + n):
        v = _bits(abs(x[i]))
        top = v if v > top else top
    return np.float64(_from_bits(top))


@KERNEL
def max_nan(a, b):
    """max(a, b), NaN if either is (np.maximum)."""
    return a if (a > b or math.isnan(a)) else b


# ---- the entry point: an epoch as a C function, compiled once per machine (`native.py` loads it) ----


def entry_signature(dtype: np.dtype | type):
    """void epoch(X, y, order, w1, w2, b1, b2, Z2, consts, powers, pow2, centers, log_centers, F, I, D, U, J,
    dims, lr, result): pointers to the arrays' first entries, dims : (18,) int64 as `native.epoch` writes
    them, lr of the weights' dtype, result : (3,) float64 gets (loss sum, correct, largest |logit|)."""
    from numba import types

    d, P = numba.from_dtype(np.dtype(dtype)), types.CPointer
    i64, f64 = types.int64, types.float64
    arrays = [P(types.uint8), P(i64), P(i64)] + [P(d)] * 10 + [P(f64), P(i64), P(d), P(types.uint8), P(types.int32)]
    return types.void(*arrays, P(i64), d, P(f64))


def entry_epoch(X, y, order, w1, w2, b1, b2, Z2, c0, c1, c2, c3, c4, wf, wi, wd, wu, wj, dims, lr, result):
    """`train_epoch` on arrays made from the C entry point's pointers (no copies, no allocation); the first
    thread (dims[16] = 0) writes the epoch's figures into result."""
    d = _pointed(dims, (18,))
    N, pixels, H, K, bias = d[0], d[1], d[2], d[3], d[4]
    T = (
        _pointed(c0, (d[7],)),
        _pointed(c1, (d[8],)),
        _pointed(c2, (d[9],)),
        _pointed(c3, (d[10],)),
        _pointed(c4, (d[10],)),
    )
    total, correct, largest = train_epoch(
        _pointed(X, (N, pixels)),
        _pointed(y, (N,)),
        _pointed(order, (N,)),
        lr,
        d[5],
        d[6],
        _pointed(w1, (pixels, H)),
        _pointed(w2, (H, K)),
        _pointed(b1, (H * bias,)),
        _pointed(b2, (K * bias,)),
        _pointed(Z2, (N, K)),
        T,
        _pointed(wf, (d[11],)),
        _pointed(wi, (d[12],)),
        _pointed(wd, (d[13],)),
        _pointed(wu, (d[14],)),
        _pointed(wj, (d[15],)),
        d[16],
        d[17],
    )
    if d[16] == 0:  # the first thread's figures; the others' zeros would race it to the shared result
        out = _pointed(result, (3,))
        out[0], out[1], out[2] = total, correct, largest


def build(dtype: np.dtype | type) -> tuple[str, bytes]:
    """Compile the entry point for `dtype` for this machine (or NUMBA_CPU_NAME): (its symbol, its object
    code). The object's only outside references are the Python C API and the three symbols `native`
    defines (checked by a test)."""
    entry = entry_point(dtype)
    return entry.native_name, entry._library.serialize_using_object_code()[2][0]


def entry_point(dtype: np.dtype | type):
    """The entry point for `dtype` as Numba's C callback, its kernels linked in (`linked_libraries`)."""
    with linked_libraries():
        entry = numba.cfunc(entry_signature(dtype), error_model="numpy", pipeline_class=_Lean)  # no fastmath, ever
        return entry(entry_epoch)


@contextlib.contextmanager
def linked_libraries():
    """While held, every library Numba compiles (the kernels, and Numba's own implementations they use)
    is a `_LinkedLibrary`: optimized and turned into machine code once, inside the library of the
    function that is called (the entry point, a `from_python` copy), rather than once alone and again in
    each caller."""
    target = train_epoch.targetctx.codegen()
    with global_compiler_lock:
        if "_library_class" in vars(target):  # held already, further up
            yield
            return
        target._library_class, target.set_env = _LinkedLibrary, functools.partial(_set_env, target)
        try:  # this codegen's own, for the compiles meanwhile only
            yield
        finally:
            del target._library_class, target.set_env  # back to the class's


def _set_env(target, name: str, env) -> None:
    """Numba's `set_env`, for a library whose code exists: the address of a function's environment (the
    Python objects its CPython wrapper uses), written into its global. A `_LinkedLibrary` kernel has no
    code, and no wrapper to use it."""
    if target._engine.get_global_value_address(name):
        type(target).set_env(target, name, env)


def _kernel_name(symbol: str) -> str:
    """The Python name of a kernel of this module from its mangled symbol (_ZN8pipeline8compiled7forward...)."""
    prefix = "_ZN8pipeline8compiled"
    if not symbol.startswith(prefix):
        return ""
    rest = symbol[len(prefix) :]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return rest[digits : digits + int(rest[:digits])] if digits else ""


class _LinkedLibrary(codegen.JITCodeLibrary):
    """A library whose code is only linked into its callers' until something asks for a function's
    address: its finalize links its callees' modules in and stops there. Numba's own finalize also runs
    LLVM's module passes and makes the machine code, for each kernel alone and again in every caller
    that links it: about a third of the compile (benchmarks/README.md). The C entry point's address, asked
    for by `numba.cfunc`, makes the whole engine's machine code, once, with the callees' copies internal
    to it (so LLVM inlines the small steps into their callers, and calls the batch kernels, `KEPT_APART`);
    a library asked for a function it does not define (a kernel's absent CPython wrapper) makes none."""

    _has_code = False

    def _finalize_final_module(self) -> None:  # the module's machine code (also for one loaded from a cache)
        super()._finalize_final_module()
        self._has_code = True

    def finalize(self) -> None:
        self._raise_if_finalized()
        self._own = {f.name for f in self._final_module.functions if not f.is_declaration}
        for library in dict.fromkeys(self._linking_libraries):
            self._reload_init.update(library._reload_init)
            self._final_module.link_in(library._get_module_for_linking(), preserve=True)
        self._finalized = True

    def get_pointer_to_function(self, name: str) -> int:
        self._ensure_finalized()
        if not self._has_code:
            if not any(f.name == name and not f.is_declaration for f in self._final_module.functions):
                return 0
            for f in self._final_module.functions:  # the callees' copies: this module's alone
                if not f.is_declaration and f.name not in self._own:
                    f.linkage = "internal"
                    if _kernel_name(f.name) in KEPT_APART:
                        f.add_function_attribute("noinline")
            self._optimize_final_module()  # what Numba's finalize does, once, for everything linked in
            self._final_module.verify()
            self._finalize_final_module()
        return super().get_pointer_to_function(name)


def codegen_target() -> tuple[str, str]:
    """(CPU name, features) Numba compiles for here: NUMBA_CPU_NAME and NUMBA_CPU_FEATURES, or the host's."""
    codegen = train_epoch.targetctx.codegen()
    return codegen._get_host_cpu_name(), codegen._tm_features


def compile_ahead(dtypes: tuple[np.dtype | type, ...] = (np.float64, np.float32)) -> None:
    """Compile the entry point for `dtypes` into the machine's cache (`native.py`), so runs only load it;
    where the cache cannot be written, into this process (`native.keep`), so its later runs load it too."""
    for dtype in dtypes:
        if native.load(dtype) is None:
            with native.compiling(dtype):
                if native.load(dtype) is None:  # not compiled meanwhile by the process it waited for
                    symbol, code = build(dtype)
                    if not native.store(dtype, symbol, code):  # a cache that cannot be written
                        native.keep(dtype, symbol, code)


DTYPES = ("float64", "float32")  # what train.dtype allows, and what the entry point is compiled for


def main() -> None:
    """python -m pipeline.compiled [float64|float32 ...]: compile ahead, into the machine's cache."""
    import sys
    import time

    names = sys.argv[1:] or list(DTYPES)
    for name in names:
        if name not in DTYPES:
            raise PipelineError(f"python -m pipeline.compiled: expected {' or '.join(DTYPES)}, found '{shown(name)}'")
    start = time.perf_counter()
    compile_ahead(tuple(np.dtype(name) for name in names))
    print(f"compiled engine ready for {' and '.join(names)} in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    # main of the imported module, not of __main__: kernels compiled here would be __main__'s, whose symbols
    # `_kernel_name` does not read (KEPT_APART inlined), so the cached entry would not be a train process's code
    import importlib

    raise SystemExit(exit_on_error(importlib.import_module("pipeline.compiled").main))
