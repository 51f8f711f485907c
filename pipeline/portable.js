// pipeline/portable.js: the network's arithmetic for the explorer page, the JavaScript twin of
// pipeline/portable.py and pipeline/model.py. `python -m pipeline.explore` inlines it into
// metrics/explorer.html; tests/test_portable_js.py runs it in Chromium against vectors Python writes
// and requires every result to have the Python result's bits.
//
// Each function has its twin's name and does its twin's operations in its twin's order, one number at a
// time. JavaScript numbers are float64; for a float32 model every operation is rounded with Math.fround,
// which gives exactly float32's result for + - * / (float64 has more than twice float32's precision).
//
//   here                                 Python twin
//   _exp(x, sign), exp(x)                portable._exp, portable.exp
//   log1p(u)                             portable.log1p
//   sigmoid(z), softplus(z)              portable.sigmoid, portable.softplus
//   _round_to_grid(w, top)               portable._round_to_grid
//   _slices(w, k)                        portable._slices
//   pixels_matmul(x, w, m)               portable.pixels_matmul, one row of pixels
//   matmul(a, b, m)                      portable.matmul, one row
//   LOSSES                               model.LOSSES: each loss's outputs, count and delta
//   forward(net, x)                      model.forward, one example
//   example_losses(loss, z2, label)      model.example_losses, one example
//   loss_value(loss, z2, label)          model.loss_value, one example
//   backward(net, x, label, f)           model.backward, one example (a batch sum: +0.0 + its one term)
//   sgd_step(net, x, label, lr)          model.sgd_step, on a copy of net
//   nearest(pixels, training, labels)    glyphs.nearest, one glyph
//
// A network is {w1, w2, b1, b2, loss}: row-major Float64Arrays, w1 (30 x H), w2 (H x K), b1 and b2 null
// when the model has no biases, and a key of LOSSES. A glyph is an array of 30 zeros and ones.

"use strict";

// make_portable(C): the functions above for one float type. C is what explore.py's `constants` writes:
// {dtype: "float64" or "float32", table_bits, powers, centers, log_centers, inv_step, step_hi, step_lo,
// round_shift, lowest, highest, exp_poly, log_poly}, every number already rounded to that type.
function make_portable(C) {
  const R = C.dtype === "float32" ? Math.fround : x => x;  // rounds a float64 result to the model's type
  const N = 2 ** C.table_bits;
  const word = new DataView(new ArrayBuffer(8));

  function pow2(e) {                      // exactly 2^e, -1022 <= e <= 1023
    word.setUint32(0, (e + 1023) << 20); word.setUint32(4, 0);
    return word.getFloat64(0);
  }
  function ldexp(m, e) {                  // math.ldexp, but infinity past the float64 range (portable catches
    while (e > 1023) { m *= pow2(1023); e -= 1023; }   // math.ldexp's OverflowError and uses infinity)
    while (e < -1022) { m *= pow2(-1022); e += 1022; }
    return m * pow2(e);
  }
  function frexp_exponent(x) {            // math.frexp(x)[1]: x = m 2^e, 0.5 <= |m| < 1; 0 for 0 and infinity
    if (x === 0 || !Number.isFinite(x)) return 0;
    word.setFloat64(0, x);
    const biased = (word.getUint32(0) >>> 20) & 0x7ff;
    return biased === 0 ? frexp_exponent(x * pow2(64)) - 64 : biased - 1022;
  }

  function _exp(x, sign) {                // e^(sign x), sign = 1 or -1
    x = sign > 0 ? Math.min(Math.max(x, C.lowest), C.highest) : Math.min(Math.max(x, -C.highest), -C.lowest);
    let shifted = R(x * (sign * C.inv_step));
    shifted = R(shifted + C.round_shift);
    const k = R(shifted - C.round_shift);  // sign x N / ln 2, rounded to an integer
    let r = R(k * C.step_hi);
    r = sign > 0 ? R(r - x) : R(r + x);
    r = R(r + R(k * C.step_lo));          // minus the reduced argument
    const [e0, e1, e2] = C.exp_poly;
    let p = R(r * -e0);
    p = R(p + e1); p = R(p * r); p = R(e2 - p); p = R(p * R(r * r)); p = R(p - r);
    const j = ((k % N) + N) % N;
    const t = C.powers[j] * pow2(Math.floor(k / N));  // exact: portable adds k // N to the exponent field
    p = R(p * t);
    return R(p + t);
  }
  function exp(x) { return _exp(x, 1); }
  function log1p(u) {                     // 0 <= u <= 1
    const w = R(u + 1);
    let lost = R(w - 1);
    let shifted = R(lost * N);
    shifted = R(shifted + C.round_shift);
    const j = shifted - C.round_shift;    // the nearest centre's index, 0 .. N (exact)
    lost = R(u - lost); lost = R(lost / w);
    const center = C.centers[j];
    let r = R(w - center); r = R(r / center);
    let p = R(r * C.log_poly[0]);
    for (const coef of C.log_poly.slice(1)) { p = R(p + coef); p = R(p * r); }
    p = R(p * r); p = R(p + r); p = R(p + lost);
    return R(p + C.log_centers[j]);
  }
  function sigmoid(z) { return R(1 / R(_exp(z, -1) + 1)); }
  function softplus(z) { return R(log1p(_exp(Math.abs(z), -1)) + (z >= 0 ? z : 0)); }  // np.maximum keeps -0

  function _round_to_grid(w, top) {       // float64, whatever the model's type
    const big = ldexp(1.5, top - 1);
    return w.map(v => (v + big) - big);
  }
  function _slices(w, k) {                // w (k x m): two slices on which sums of k entries are exact
    const spare = Math.max(2, k.toString(2).length);
    const largest = w.reduce((most, v) => Math.max(most, Math.abs(v)), 0);
    const e = frexp_exponent(largest);
    const s1 = _round_to_grid(w, e + spare), rest = w.map((v, i) => v - s1[i]);
    return [s1, _round_to_grid(rest, e + spare - 54 + spare)];
  }
  function pixels_matmul(x, w, m) {       // x (k) pixels @ w (k x m): exact sums of each slice, rounded once
    const k = x.length, out = new Float64Array(m);
    if (k === 1) { for (let h = 0; h < m; h++) out[h] = R(x[0] * w[h]); return out; }
    const [s1, s2] = _slices(w, k);
    for (let h = 0; h < m; h++) {
      let p1 = 0, p2 = 0;
      for (let i = 0; i < k; i++) { p1 += x[i] * s1[i * m + h]; p2 += x[i] * s2[i * m + h]; }
      out[h] = R(p1 + p2);                // in float64, then (float32 models) rounded again, as portable does
    }
    return out;
  }
  function matmul(a, b, m) {              // a (k) @ b (k x m), summed over k in order
    const out = new Float64Array(m);
    for (let c = 0; c < m; c++) {
      let s = R(b[c] * a[0]);
      for (let h = 1; h < a.length; h++) s = R(s + R(b[h * m + c] * a[h]));
      out[c] = s;
    }
    return out;
  }

  const LOSSES = {                        // model.LOSSES, for one example: z, a and y are numbers
    bce: {outputs: (z, y) => softplus(R(z * (1 - 2 * y))), count: (n, k) => n, delta: (a, y, n, k) => R(R(a - y) / n)},
    mse: {outputs: (z, y) => { const d = R(sigmoid(z) - y); return R(d * d); }, count: (n, k) => n * k,
          delta: (a, y, n, k) => R(R(R(R(2 * R(a - y)) * a) * R(1 - a)) / (n * k))},
  };

  function forward(net, x) {              // {a1, z2, a2} for one glyph x
    const H = net.w1.length / x.length, K = net.w2.length / H;
    const z1 = pixels_matmul(x, net.w1, H);
    if (net.b1) for (let h = 0; h < H; h++) z1[h] = R(z1[h] + net.b1[h]);
    const a1 = z1.map(sigmoid);
    const z2 = matmul(a1, net.w2, K);
    if (net.b2) for (let c = 0; c < K; c++) z2[c] = R(z2[c] + net.b2[c]);
    return {a1, z2, a2: z2.map(sigmoid)};
  }
  function example_losses(loss, z2, label) {  // the example's loss summed over the K outputs, in order
    let total = 0;
    z2.forEach((z, c) => { total = R(total + LOSSES[loss].outputs(z, c === label ? 1 : 0)); });
    return total;
  }
  function loss_value(loss, z2, label) {  // float64 division, as `total(...) / count` in Python
    return example_losses(loss, z2, label) / LOSSES[loss].count(1, z2.length);
  }
  function backward(net, x, label, f) {   // {w1, w2, b1, b2}: the gradient of each weight
    const H = f.a1.length, K = f.a2.length;
    const dz2 = f.a2.map((a, c) => LOSSES[net.loss].delta(a, c === label ? 1 : 0, 1, K));
    const w2t = new Float64Array(K * H);  // w2.T, (K x H)
    for (let h = 0; h < H; h++) for (let c = 0; c < K; c++) w2t[c * H + h] = net.w2[h * K + c];
    const da1 = matmul(dz2, w2t, H);
    const dz1 = da1.map((d, h) => R(R(d * f.a1[h]) * R(1 - f.a1[h])));
    const g = {w1: new Float64Array(x.length * H), w2: new Float64Array(H * K), b1: null, b2: null};
    for (let i = 0; i < x.length; i++) g.w1.set(pixels_matmul([x[i]], dz1, H), i * H);  // 1 x 1 @ 1 x H
    // outer_sum and column_sum add pairwise from +0.0 over the batch: here one term, and 0 + -0 is +0
    for (let h = 0; h < H; h++) for (let c = 0; c < K; c++) g.w2[h * K + c] = 0 + R(f.a1[h] * dz2[c]);
    if (net.b1) { g.b1 = dz1.map(d => 0 + d); g.b2 = dz2.map(d => 0 + d); }
    return g;
  }
  function sgd_step(net, x, label, lr) {  // {net: the network after the step, grads, f: forward's}
    const f = forward(net, x), grads = backward(net, x, label, f), step = R(lr);
    const after = {loss: net.loss};
    for (const name of Object.keys(grads)) {  // every parameter has its gradient (null: no biases)
      after[name] = net[name] && net[name].map((w, i) => R(w - R(step * grads[name][i])));
    }
    return {net: after, grads, f};
  }
  return {_exp, exp, log1p, sigmoid, softplus, _round_to_grid, _slices, pixels_matmul, matmul, LOSSES,
          forward, example_losses, loss_value, backward, sgd_step, nearest};
}

function nearest(pixels, training, labels) {  // {label, distance}: the first training glyph at the least distance
  let best = {label: -1, distance: Infinity};
  training.forEach((row, i) => {
    let d = 0;
    for (let j = 0; j < pixels.length; j++) d += row[j] !== pixels[j];
    if (d < best.distance) best = {label: labels[i], distance: d};
  });
  return best;
}
