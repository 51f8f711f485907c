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
(H, m) and (K, m), so the loops over a batch's examples run over contiguous memory.
Every kernel works in the weights' dtype (float64 or float32): a scalar of that dtype comes from the
`consts` array, never from a Python literal, which Numba would make float64.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pipeline.portable import _CONSTANTS, _N, _TABLE_BITS, _TABLES

ENGINE = numba.njit(cache=True, nogil=True, error_model="numpy")  # no fastmath, ever: it fuses and reorders
# The kernels allocate nothing, so they run without Numba's reference counting (atomic increments on
# every array passed, which cost more than a one-example step's arithmetic).
KERNEL = numba.njit(cache=True, nogil=True, error_model="numpy", _nrt=False)

# Indices into `consts`, the scalars of one dtype.
ZERO, ONE, LOWEST, HIGHEST, INV_STEP, STEP_HI, STEP_LO, ROUND_SHIFT, E0, E1, E2, TABLE_SIZE = range(12)
LOG_POLY = 12  # five coefficients, 12 .. 16
LOSS_IDS = {"bce": 0, "mse": 1}  # the losses of `model.LOSSES`, as the kernels know them


def tables(dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """(consts, powers, pow2, centers, log_centers) for `dtype`, from `portable.py`'s own constants.

    powers[j] = 2^(j/256) and pow2[e + OFFSET] = 2^e: portable adds k // 256 to the exponent field of
    2^(j/256); multiplying by 2^(k // 256) gives the same number whenever it is normal, which the
    clipping of exp's input guarantees."""
    c = _CONSTANTS[np.dtype(dtype)]
    scalars = [0.0, 1.0, c.lowest, c.highest, c.inv_step, c.step_hi, c.step_lo, c.round_shift, *c.exp_poly, _N]
    consts = np.array(scalars + list(c.log_poly), dtype=c.dtype)
    powers, centers, log_centers = (t.astype(c.dtype) for t in _TABLES)
    with np.errstate(over="ignore", under="ignore"):  # float32 holds 2^-149 .. 2^127: the rest are never read
        pow2 = np.ldexp(np.ones(2 * POW2_OFFSET, c.dtype), np.arange(-POW2_OFFSET, POW2_OFFSET))
    return consts, powers, pow2, centers, log_centers


TINY = 2.0**-1074  # the smallest subnormal float64
POW2_OFFSET = 1024  # pow2 covers 2^-1024 .. 2^1023; exp's clipped input needs 2^-1020 .. 2^1021 at most


# ---- exp, log1p, sigmoid, softplus: portable.py's kernels over a row of numbers ----
#
# Each runs in passes over the row, as portable.py does over an array: the passes without table
# look-ups are plain loops of + - * / that LLVM vectorizes (it may: each lane does the same IEEE
# operations on its own number). W = (F1, F2, F3, F4, I1) is scratch of the row's length or more.


@KERNEL
def exp_row(x, n, sign, out, T, W):
    """out[:n] = e^(sign x[:n]), sign = 1 or -1: `portable._exp` (x clipped, k = round(sign x 256/ln2),
    r = k ln2/256 - sign x, e^-r - 1 by its polynomial, times 2^(k/256) = 2^(j/256) 2^(k // 256))."""
    consts, powers, pow2 = T[0], T[1], T[2]
    F1, I1 = W[0], W[4]
    lo = consts[LOWEST] if sign > 0 else -consts[HIGHEST]
    hi = consts[HIGHEST] if sign > 0 else -consts[LOWEST]
    scale = consts[INV_STEP] if sign > 0 else -consts[INV_STEP]
    rs, step_hi, step_lo, zero = consts[ROUND_SHIFT], consts[STEP_HI], consts[STEP_LO], consts[ZERO]
    e0, e1, e2 = -consts[E0], consts[E1], consts[E2]
    for i in range(n):
        v = x[i]
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
        F1[i] = p
        I1[i] = np.int32(zero if math.isnan(k) else k)  # a NaN's k would be an undefined integer; p stays NaN
    for i in range(n):
        k = I1[i]
        t = powers[k & (_N - 1)] * pow2[(k >> _TABLE_BITS) + POW2_OFFSET]  # exact: a normal number
        p = F1[i] * t
        out[i] = p + t


@KERNEL
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


@KERNEL
def sigmoid_row(z, n, out, T, W):
    """out[:n] = 1 / (1 + e^-z[:n])."""
    exp_row(z, n, -1, out, T, W)
    one = T[0][ONE]
    for i in range(n):
        out[i] = one / (out[i] + one)


@KERNEL
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


@KERNEL
def pairwise_sum(a, n, zero, stack, values):
    """0 + NumPy's pairwise sum of a[:n], as `np.add.reduce` computes it over a contiguous axis.

    Above 128 entries NumPy splits n into n2 = n/2 rounded down to a multiple of 8, and n - n2, and adds
    the halves' sums. Written as a loop with an explicit stack: Numba cannot cache recursive functions.
    stack : (3, 64) int64 and values : (64,) are scratch (the depth is below 64 for any n < 2^63)."""
    if n == 1:  # a batch of one (NumPy's loop: 0 + (0 + a[0]), which turns -0.0 into +0.0)
        return zero + (zero + a[0])
    if n <= 128:
        return zero + pairwise_leaf(a, 0, n, zero)
    lows, counts, states = stack[0], stack[1], stack[2]
    lows[0], counts[0], states[0], top, nvalues = 0, n, 0, 0, 0
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
    return zero + values[0]


@KERNEL
def slices(W, rows, cols, k, S1, S2):
    """`portable._slices` of W[:rows, :cols]: S1 + S2 = W up to a remainder, each on a grid where any
    sum of k entries is exact. W float64 or float32; S1, S2 float64, written in place. Returns the two
    grid steps (S1 and S2 are integer multiples of them), or (0, 0) when W is not finite."""
    if W.itemsize == 8:
        exponent, finite = _largest_exponent(W.view(np.int64), rows, cols, 52, 1022, 1074)
    else:
        exponent, finite = _largest_exponent(W.view(np.int32), rows, cols, 23, 126, 149)
    spare = 0  # k.bit_length(), at least 2
    while k >> spare:
        spare += 1
    spare = max(2, spare)
    big1 = math.ldexp(1.5, exponent + spare - 1)
    big2 = math.ldexp(1.5, exponent + spare - 54 + spare - 1)
    for r in range(rows):
        for i in range(cols):
            w = np.float64(W[r, i])
            s1 = (w + big1) - big1
            S1[r, i] = s1
            S2[r, i] = ((w - s1) + big2) - big2
    if not finite:
        return 0.0, 0.0
    # The grids: S1 holds multiples of ulp(big1), S2 of ulp(big2) (at least the smallest subnormal)
    return max(math.ldexp(1.0, exponent + spare - 53), TINY), max(math.ldexp(1.0, exponent + 2 * spare - 107), TINY)


@KERNEL
def _largest_exponent(B, rows, cols, mantissa_bits, bias, subnormal):
    """(e, finite) for the largest |w| of W[:rows, :cols], given as its bit patterns B: e as Python's
    math.frexp(float(max|w|))[1] gives it, 0 for 0, NaN and infinity (as frexp does), and whether every
    w is finite. The largest |w| has the largest pattern once the sign bit is cleared (NaN and infinity
    the largest of all): an integer maximum, which LLVM vectorizes, where a float one must run in order."""
    top = B.dtype.type(0)
    sign = ~(B.dtype.type(1) << (8 * B.itemsize - 1))
    for r in range(rows):
        for i in range(cols):
            top = max(top, B[r, i] & sign)
    field = np.int64(top >> mantissa_bits)
    if field == (1 << (8 * B.itemsize - 1 - mantissa_bits)) - 1:  # all ones: NaN or infinity
        return 0, False
    if field > 0:
        return field - bias, True
    bit_length = 0  # a subnormal or zero: its exponent is its bit length less the subnormal scale
    while top >> bit_length:
        bit_length += 1
    return (bit_length - subnormal if bit_length else 0), True


# ---- the losses (model.LOSSES): each one's value and gradient side by side ----

BCE, MSE = LOSS_IDS["bce"], LOSS_IDS["mse"]


@KERNEL
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


@KERNEL
def loss_gradient(loss, labels, m, A2, dZ2, counts):
    """dLoss/dZ2 : (K, m), as `model.LOSSES[loss].delta`: bce (A2 - Y) / m; mse 2 (A2 - Y) A2 (1 - A2) / (m K).
    counts = [m, m K] in the weights' dtype (NumPy divides by them rounded to it)."""
    one = counts[0] / counts[0]
    zero, two = one - one, one + one
    for c in range(A2.shape[0]):
        for i in range(m):
            d = A2[c, i] - (one if labels[i] == c else zero)
            if loss == BCE:
                dZ2[c, i] = d / counts[0]
            else:
                dZ2[c, i] = two * d * A2[c, i] * (one - A2[c, i]) / counts[1]


# ---- one batch: forward, loss gradient, backward, update ----


@KERNEL
def pixel_rows(X, rows, P, M):
    """The batch's 0/1 pixels X[rows] : (m, 30), one pixel a row: P : (30, m) float64, and M : (30, m)
    int64 masks (-1 where inked, 0 where blank) for `pixel_gradient`'s integer sums."""
    for p in range(X.shape[1]):
        for i in range(rows.shape[0]):
            v = X[rows[i], p]
            P[p, i] = v
            M[p, i] = -np.int64(v)


@KERNEL
def pixel_product(P, m, S1, S2, acc1, acc2, Z1):
    """Z1 = (X W1)^T : (H, m) for P : (30, m) pixels and w1's slices S1, S2 : (30, H), as
    `portable.pixels_matmul`: each slice's sum is exact in any order, then the two are added once.
    A product with a 0/1 pixel is exact, so the sums multiply rather than branch on the pixels."""
    H = S1.shape[1]
    if m == 1:  # one example: the H sums side by side, pixel after pixel
        acc1[:, 0] = 0.0
        acc2[:, 0] = 0.0
        for p in range(P.shape[0]):
            x = P[p, 0]
            for h in range(H):
                acc1[h, 0] += x * S1[p, h]
                acc2[h, 0] += x * S2[p, h]
    else:
        for h in range(H):  # one hidden unit at a time: its two rows of m sums stay in the L1 cache
            a1, a2 = acc1[h], acc2[h]
            a1[:] = 0.0
            a2[:] = 0.0
            for p in range(P.shape[0]):
                s1, s2, x = S1[p, h], S2[p, h], P[p]
                for i in range(m):
                    a1[i] += x[i] * s1
                    a2[i] += x[i] * s2
    for h in range(H):
        for i in range(m):
            Z1[h, i] = acc1[h, i] + acc2[h, i]  # rounded once to float64 (and to float32 on the store)


@KERNEL
def forward(P, m, w1, w2, b1, b2, S1, S2, acc1, acc2, Z1, A1, Z2, A2, T, W):
    """Z1 = X W1 + b1, A1 = sigmoid(Z1) : (H, m); Z2 = A1 W2 + b2, A2 = sigmoid(Z2) : (K, m).

    w1, S1, S2 : (1, 30 H), one row (the slices' loops then run over all 30 H weights at once); the
    activations are C-contiguous (H, m) and (K, m), so each sigmoid is one pass over all of them."""
    H, K = w2.shape
    slices(w1, 1, w1.shape[1], P.shape[0], S1, S2)
    pixel_product(P, m, S1.reshape(P.shape[0], H), S2.reshape(P.shape[0], H), acc1, acc2, Z1)
    if b1.shape[0]:
        for h in range(H):
            for i in range(m):
                Z1[h, i] += b1[h]
    sigmoid_row(Z1.reshape(H * m), H * m, A1.reshape(H * m), T, W)
    for c in range(K):  # A1 W2 : (m, H) @ (H, K), summed over the H units in order
        for i in range(m):
            Z2[c, i] = w2[0, c] * A1[0, i]
        for h in range(1, H):
            for i in range(m):
                Z2[c, i] += w2[h, c] * A1[h, i]
        if b2.shape[0]:
            for i in range(m):
                Z2[c, i] += b2[c]
    sigmoid_row(Z2.reshape(K * m), K * m, A2.reshape(K * m), T, W)


@KERNEL
def hidden_delta(w2, dZ2, A1, dZ1, m, one):
    """dZ1 = (dZ2 W2^T) * A1 * (1 - A1) : (H, m), the sum over the K classes in order."""
    for h in range(A1.shape[0]):
        for i in range(m):
            dZ1[h, i] = w2[h, 0] * dZ2[0, i]
        for c in range(1, dZ2.shape[0]):
            for i in range(m):
                dZ1[h, i] += w2[h, c] * dZ2[c, i]
        for i in range(m):
            dZ1[h, i] = dZ1[h, i] * A1[h, i] * (one - A1[h, i])


@KERNEL
def pixel_gradient(P, M, dZ1, m, dW1, G1, G2, N1, N2):
    """dW1 = X^T dZ1 : (30, m) @ (m, H) -> (30, H), as `portable.pixels_matmul`.

    For m > 1 that is, for each slice of dZ1, a sum of the inked examples' entries, exact in any order.
    Each slice lies on a grid q: its entries are integers times q, so the sums run in int64 (which
    LLVM vectorizes: integer addition has no rounding to keep in order), then scale back exactly.
    M : (30, m) the pixels as int64 masks; G1, G2 : (H, m) float64 and N1, N2 : (H, m) int64 scratch."""
    H = dZ1.shape[0]
    if m == 1:  # one exact product each
        for p in range(P.shape[0]):
            for h in range(H):
                dW1[p, h] = P[p, 0] * np.float64(dZ1[h, 0])
        return
    q1, q2 = slices(dZ1, H, m, m, G1, G2)
    if q1 == 0.0:  # not finite: training has diverged, and the float sums make that show (as NaN)
        for p in range(P.shape[0]):
            for h in range(H):
                dW1[p, h] = exact_dot(P[p], G1[h], m) + exact_dot(P[p], G2[h], m)
        return
    for h in range(H):
        for i in range(m):
            N1[h, i] = np.int64(G1[h, i] / q1)  # exact: an integer below 2^53
            N2[h, i] = np.int64(G2[h, i] / q2)
    for p in range(P.shape[0]):
        for h in range(H):
            n1 = n2 = 0
            for i in range(m):
                n1 += M[p, i] & N1[h, i]
                n2 += M[p, i] & N2[h, i]
            dW1[p, h] = np.float64(n1) * q1 + np.float64(n2) * q2  # each product exact; one rounding


@KERNEL
def exact_dot(x, g, m):
    """The sum of x[i] g[i] for i < m, in order (0/1 x and g on a grid: every order gives the same)."""
    total = 0.0
    for i in range(m):
        total += x[i] * g[i]
    return total


@KERNEL
def update(lr, w1, w2, b1, b2, A1, dZ1, dZ2, dW1, m, scratch, zero, stack, values):
    """W -= lr dW for every weight, dW1 given; dW2 = A1^T dZ2 : (H, K) and the bias gradients are
    pairwise sums over the m examples, as NumPy's reductions."""
    H, K = w2.shape
    for p in range(w1.shape[0]):
        for h in range(H):
            w1[p, h] -= lr * dW1[p, h]
    for h in range(H):
        for c in range(K):
            for i in range(m):
                scratch[i] = A1[h, i] * dZ2[c, i]
            w2[h, c] -= lr * pairwise_sum(scratch, m, zero, stack, values)
    if b1.shape[0]:
        for h in range(H):
            b1[h] -= lr * pairwise_sum(dZ1[h], m, zero, stack, values)
        for c in range(K):
            b2[c] -= lr * pairwise_sum(dZ2[c], m, zero, stack, values)


@ENGINE
def scratch_rows(n, dtype):
    """W for the row kernels: four float rows and an int32 row of n entries."""
    return np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype), np.empty(n, np.int32)


@ENGINE
def train_epoch(X, y, order, lr, batch_size, loss, w1, w2, b1, b2, Z2_out, T):
    """One pass over X[order] : (N, 30) uint8, batch by batch, as `sgd.train_epoch`: the weights move in
    place, and Z2_out[i] : (K,) gets the i-th visited example's logits before its update."""
    N, (H, K), pixels, dtype = order.shape[0], w2.shape, X.shape[1], w1.dtype
    bs = max(1, min(batch_size, N))
    S1, S2, dW1 = np.empty((1, pixels * H)), np.empty((1, pixels * H)), np.empty((pixels, H), dtype)
    labels, scratch, counts = np.empty(bs, np.int64), np.empty(bs, dtype), np.empty(2, dtype)
    W, stack, values = scratch_rows(max(bs * H, 1024), dtype), np.empty((3, 64), np.int64), np.empty(64, dtype)
    floats, ints = np.empty((4 * H + pixels) * bs), np.empty((2 * H + pixels) * bs, np.int64)
    typed = np.empty(3 * (H + K) * bs, dtype)
    zero, one = T[0][ZERO], T[0][ONE]
    w1_row = w1.reshape(1, pixels * H)
    m = bs
    P, M, acc1, acc2, G1, G2, N1, N2, Z1, A1, dZ1, Z2, A2, dZ2 = batch_arrays(floats, ints, typed, pixels, H, K, m)
    for start in range(0, N, bs):
        if N - start < m:  # the last, shorter batch: its arrays, compact
            m = N - start
            arrays = batch_arrays(floats, ints, typed, pixels, H, K, m)
            P, M, acc1, acc2, G1, G2, N1, N2, Z1, A1, dZ1, Z2, A2, dZ2 = arrays
        rows = order[start : start + m]
        for i in range(m):
            labels[i] = y[rows[i]]
        counts[0], counts[1] = m, m * K
        pixel_rows(X, rows, P, M)
        forward(P, m, w1_row, w2, b1, b2, S1, S2, acc1, acc2, Z1, A1, Z2, A2, T, W)
        for i in range(m):
            for c in range(K):
                Z2_out[start + i, c] = Z2[c, i]
        loss_gradient(loss, labels, m, A2, dZ2, counts)
        hidden_delta(w2, dZ2, A1, dZ1, m, one)
        pixel_gradient(P, M, dZ1, m, dW1, G1, G2, N1, N2)
        update(lr, w1, w2, b1, b2, A1, dZ1, dZ2, dW1, m, scratch, zero, stack, values)


@ENGINE
def batch_arrays(floats, ints, typed, pixels, H, K, m):
    """A batch of m examples' arrays, each C-contiguous, carved out of three flat buffers: float64
    P (30, m) and acc1, acc2, G1, G2 (H, m); int64 M (30, m) and N1, N2 (H, m); in the weights' dtype
    Z1, A1, dZ1 (H, m) and Z2, A2, dZ2 (K, m)."""
    P, M = floats[: pixels * m].reshape(pixels, m), ints[: pixels * m].reshape(pixels, m)
    f = [floats[(pixels + j * H) * m : (pixels + (j + 1) * H) * m].reshape(H, m) for j in range(4)]
    n = [ints[(pixels + j * H) * m : (pixels + (j + 1) * H) * m].reshape(H, m) for j in range(2)]
    t = [typed[j * H * m : (j + 1) * H * m].reshape(H, m) for j in range(3)]
    u = [typed[3 * H * m + j * K * m : 3 * H * m + (j + 1) * K * m].reshape(K, m) for j in range(3)]
    return P, M, f[0], f[1], f[2], f[3], n[0], n[1], t[0], t[1], t[2], u[0], u[1], u[2]


# ---- an epoch's loss and accuracy ----


@ENGINE
def epoch_summary(loss, Z2, labels, T):
    """(sum of the examples' losses, correct argmax count, largest |logit|) of Z2 : (N, K) against
    labels : (N,), as `model.loss_value` (before its division), `model.accuracy` and `sgd.fit`."""
    N, K = Z2.shape
    per_example = np.zeros(N, Z2.dtype)  # 0 + the K outputs' losses, added in order
    block = min(N, 1024)
    z, target, out = np.empty(block, Z2.dtype), np.empty(block, Z2.dtype), np.empty(block, Z2.dtype)
    W, one = scratch_rows(block, Z2.dtype), T[0][ONE]
    for start in range(0, N, block):
        n = min(block, N - start)
        for c in range(K):
            for i in range(n):
                z[i], target[i] = Z2[start + i, c], one if labels[start + i] == c else one - one
            loss_outputs(loss, z, target, n, out, T, W)
            for i in range(n):
                per_example[start + i] += out[i]
    correct, largest = 0, 0.0
    for i in range(N):
        best = 0
        for c in range(K):
            v = Z2[i, c]
            a = abs(np.float64(v))
            if a > largest or math.isnan(a):  # np.max(np.abs(Z2)): a NaN wins
                largest = a
            if v > Z2[i, best] or (math.isnan(v) and not math.isnan(Z2[i, best])):  # np.argmax: first max, NaN first
                best = c
        correct += best == labels[i]
    stack, values = np.empty((3, 64), np.int64), np.empty(64, Z2.dtype)
    return np.float64(pairwise_sum(per_example, N, T[0][ZERO], stack, values)), correct, largest


# ---- the cache: what auto asks, and compiling ahead ----


def example_arguments(dtype: np.dtype | type) -> dict[str, tuple]:
    """Arguments of the types `sgd` passes, for each entry point: what is compiled, and cached, per dtype."""
    dtype = np.dtype(dtype)
    X, labels, T, none = np.zeros((3, 30), np.uint8), np.arange(3, dtype=np.int64), tables(dtype), np.empty(0, dtype)
    w1, w2, Z2 = np.zeros((30, 5), dtype), np.zeros((5, 3), dtype), np.zeros((3, 3), dtype)
    return {
        "train_epoch": (X, labels, np.arange(3), dtype.type(0.1), 1, 0, w1, w2, none, none, Z2, T),
        "epoch_summary": (0, Z2, labels, T),
    }


def is_cached(dtype: np.dtype | type) -> bool:
    """Whether both entry points for `dtype` are in Numba's on-disk cache for this CPU and this source,
    so that using them costs a load (a fraction of a second), not a compile. (Numba's cache index is
    internal: if it cannot be read, the answer is no.)"""
    try:
        for name, args in example_arguments(dtype).items():
            dispatcher = globals()[name]
            types = tuple(numba.typeof(a) for a in args)
            key = dispatcher._cache._index_key(types, dispatcher.targetctx.codegen())
            if key not in dispatcher._cache._cache_file._load_index():
                return False
    except (AttributeError, OSError, TypeError, ValueError):
        return False
    return True


def compile_ahead() -> None:
    """Compile (or load) every entry point for both dtypes, so that later runs only load them."""
    for dtype in (np.float64, np.float32):
        for name, args in example_arguments(dtype).items():
            globals()[name].compile(tuple(numba.typeof(a) for a in args))


if __name__ == "__main__":
    import sys
    import time

    start = time.perf_counter()
    compile_ahead()
    print(f"compiled engine ready for float64 and float32 in {time.perf_counter() - start:.1f} s", file=sys.stderr)
