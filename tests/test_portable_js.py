"""pipeline/portable.js against pipeline/portable.py and model.py: every bit, float64 and float32.

Python writes the vectors (inputs and its results, each number as its bit pattern in hex) to
test-artifacts/portable-vectors-<dtype>.json; Chromium runs portable.js on the same inputs and every
result must have the same bits. The inputs include the hard cases: ties of each rounding to an
integer, the largest and smallest inputs, values around exp's limits, every table boundary, and
weights whose pixel products tip a tie.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import explore, portable
from pipeline.glyphs import PIXELS, clean_glyphs, codes
from pipeline.model import LOSSES, Network, backward, example_losses, forward, loss_value, sgd_step
from tests.conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts"
UINT = {np.dtype(np.float64): np.uint64, np.dtype(np.float32): np.uint32}
SCALARS = ("exp", "_exp", "log1p", "sigmoid", "softplus")


def hexes(values, dtype) -> list[str]:
    """Each value's bit pattern in `dtype`, in hex: the exact number, -0.0 and infinities included."""
    array = np.ascontiguousarray(np.asarray(values, dtype=dtype).ravel())
    return [f"{v:x}" for v in array.view(UINT[np.dtype(dtype)]).tolist()]


def around(values, dtype, steps: int = 2) -> np.ndarray:
    """Each value and its neighbours up to `steps` representable numbers away, in `dtype`."""
    values = np.asarray(values, dtype=dtype)
    out = [values]
    up, down = values.copy(), values.copy()
    for _ in range(steps):
        up, down = np.nextafter(up, dtype(np.inf)), np.nextafter(down, dtype(-np.inf))
        out += [up, down]
    return np.concatenate(out)


def exp_inputs(dtype) -> np.ndarray:
    """exp's hard cases: zero, tiny, the clipping limits and beyond, the rounding of x N / ln 2 to an
    integer at its ties, each table entry's boundaries (k mod 256 at 0 and 255, k // 256 changing)."""
    c = portable.CONSTANTS[np.dtype(dtype)]
    inv, big = float(c.inv_step), float(np.finfo(dtype).max)
    ks = np.array([*range(-600, 600), *range(-70000, 70000, 257), 255 * 256, -255 * 256])
    halves = (ks + 0.5) / inv  # x N / ln 2 halfway between integers: rounding's ties, and table boundaries
    with np.errstate(over="ignore"):
        ties = [x for x in halves.astype(dtype) if float(dtype(x) * dtype(inv)) % 1 == 0.5]
        edges = [
            0.0,
            -0.0,
            float(np.finfo(dtype).smallest_subnormal),
            float(np.finfo(dtype).tiny),
            1e-30,
            0.5,
            1.0,
            float(c.lowest),
            float(c.highest),
            -float(c.highest),
            -float(c.lowest),
            float(c.lowest) - 1,
            float(c.highest) + 1,
            709.0,
            745.0,
            big,
            np.inf,
        ]
        edges = around(edges, dtype)
        cases = np.concatenate([edges, -edges, around(halves, dtype, 1), around(ties, dtype, 1)])
        rng = np.random.default_rng(18)
        randoms = np.concatenate([rng.uniform(-750, 750, 400), np.exp(rng.uniform(-60, 6.6, 200))])
        return np.concatenate([cases, randoms, -randoms[400:]]).astype(dtype)


def log1p_inputs(dtype) -> np.ndarray:
    """log1p's domain [0, 1]: its ends, each centre 1 + j/256 and the ties halfway between two."""
    j = np.arange(257)
    points = np.concatenate([[0.0, 1.0, 2.0**-53, 2.0**-24, 1e-300, 1e-30], j / 256, (j[:-1] + 0.5) / 256])
    u = around(points.astype(dtype), dtype)
    u = np.concatenate([u, np.random.default_rng(19).uniform(0, 1, 300).astype(dtype)])
    return u[(u >= 0) & (u <= 1)]


def scalar_vectors(dtype) -> dict:
    x, u = exp_inputs(dtype), log1p_inputs(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        results = {
            "exp": portable.exp(x),
            "_exp": portable._exp(x.copy(), -1),
            "log1p": portable.log1p(u),
            "sigmoid": portable.sigmoid(x),
            "softplus": portable.softplus(x),
        }
    return {
        name: {"x": hexes(u if name == "log1p" else x, dtype), "want": hexes(result, dtype)}
        for name, result in results.items()
    }


def networks(dtype) -> list[tuple[Network, np.ndarray, int, float]]:
    """(network, glyph, label, lr): both losses, with and without biases, 1 to 16 hidden units, weights
    from tiny to huge, the blank and the full glyph, and a pixel product that tips a tie."""
    rng = np.random.default_rng(20)
    glyphs = [*clean_glyphs(), np.zeros(PIXELS, np.uint8), np.ones(PIXELS, np.uint8)]
    cases = []
    for i in range(48):
        hidden = (1, 2, 5, 16)[i % 4]
        scale = (1.0, 1e-3, 30.0, 1e-12, 1e6)[i % 5]
        loss = sorted(LOSSES)[i % len(LOSSES)]
        w = [rng.standard_normal(shape) * scale for shape in ((PIXELS, hidden), (hidden, 3), (hidden,), (3,))]
        bias = i % 3 == 0
        net = Network(
            *(a.astype(dtype) for a in w[:2]),
            *((a.astype(dtype) for a in w[2:]) if bias else (None, None)),
            loss,
            ("A", "B", "C"),
        )
        glyph = glyphs[i % len(glyphs)] if i % 2 else rng.integers(0, 2, PIXELS).astype(np.uint8)
        cases.append((net, glyph, i % 3, (0.1, 0.5, 3.0)[i % 3]))
    tie = np.zeros((PIXELS, 2))  # portable.pixels_matmul's docstring: 1 + 2^-53 (1 + 2^-52) gives 1.0
    tie[0], tie[1] = 1.0, 2.0**-53 * (1 + 2.0**-52)
    glyph = np.zeros(PIXELS, np.uint8)
    glyph[:2] = 1
    for loss in sorted(LOSSES):
        net = Network(tie.astype(dtype), np.ones((2, 3), dtype), None, None, loss, ("A", "B", "C"))
        cases.append((net, glyph, 1, 0.1))
    return cases


def weights(net: Network) -> dict[str, np.ndarray | None]:
    return {"w1": net.w1, "w2": net.w2, "b1": net.b1, "b2": net.b2}


def network_vectors(dtype) -> list[dict]:
    vectors = []
    for net, glyph, label, lr in networks(dtype):
        X, y = glyph.reshape(1, PIXELS).astype(np.float64), np.array([label])
        A1, Z2, A2 = forward(net, X)
        grads = backward(net, X, y)
        after = Network(*(None if a is None else a.copy() for a in weights(net).values()), net.loss, net.classes)
        sgd_step(after, X, y, lr)
        vectors.append(
            {
                "net": {k: None if a is None else hexes(a, dtype) for k, a in weights(net).items()},
                "loss": net.loss,
                "x": glyph.tolist(),
                "label": label,
                "lr": lr,
                "want": {
                    "pixels_matmul": hexes(portable.pixels_matmul(X, net.w1)[0], dtype),
                    "a1": hexes(A1, dtype),
                    "z2": hexes(Z2, dtype),
                    "a2": hexes(A2, dtype),
                    "example_losses": hexes(example_losses(net.loss, Z2, y), dtype),
                    "loss_value": hexes([loss_value(net.loss, Z2, y)], np.float64),
                    **{f"grad_{k}": hexes(v, dtype) for k, v in grads.items()},
                    **{f"after_{k}": hexes(a, dtype) for k, a in weights(after).items() if a is not None},
                },
            }
        )
    return vectors


def nearest_vectors() -> dict:
    """Training glyphs with repeats and ties: the first of the nearest wins, as glyphs.nearest."""
    from pipeline.glyphs import nearest

    rng = np.random.default_rng(21)
    training = np.concatenate([clean_glyphs(), clean_glyphs(), rng.integers(0, 2, (40, PIXELS))]).astype(np.uint8)
    labels = np.concatenate([[0, 1, 2], [2, 0, 1], rng.integers(0, 3, 40)])
    queries = np.concatenate([clean_glyphs(), 1 - clean_glyphs(), rng.integers(0, 2, (60, PIXELS))]).astype(np.uint8)
    found = nearest(queries, training, labels)
    assert codes(queries).size == len(found)
    return {
        "training": training.tolist(),
        "labels": labels.tolist(),
        "queries": queries.tolist(),
        "want": [[n.label, n.distance] for n in found],
    }


RUN = """([source, text]) => {  // strings both ways: Playwright carries a long string faster than objects
  const vectors = JSON.parse(text);
  new Function(source + "\\nwindow.make_portable = make_portable;")();
  const P = window.make_portable(vectors.constants), f32 = vectors.constants.dtype === "float32";
  const view = new DataView(new ArrayBuffer(8));
  const read = h => { if (f32) { view.setUint32(0, parseInt(h, 16)); return view.getFloat32(0); }
                      view.setBigUint64(0, BigInt("0x" + h)); return view.getFloat64(0); };
  const hex = (v, as32 = f32) => { if (as32) { view.setFloat32(0, v); return view.getUint32(0).toString(16); }
                                   view.setFloat64(0, v); return view.getBigUint64(0).toString(16); };
  const hexes = values => Array.from(values, v => hex(v));
  const out = {scalars: {}, networks: [], nearest: null};
  for (const [name, {x}] of Object.entries(vectors.scalars)) {
    out.scalars[name] = x.map(read).map(v => hex(name === "_exp" ? P._exp(v, -1) : P[name](v)));
  }
  for (const v of vectors.networks) {
    const net = {loss: v.loss};
    for (const k of ["w1", "w2", "b1", "b2"]) net[k] = v.net[k] && Float64Array.from(v.net[k].map(read));
    const f = P.forward(net, v.x), g = P.backward(net, v.x, v.label, f);
    const after = P.sgd_step(net, v.x, v.label, v.lr).net;
    const got = {pixels_matmul: hexes(P.pixels_matmul(v.x, net.w1, net.w1.length / v.x.length)),
                 a1: hexes(f.a1), z2: hexes(f.z2), a2: hexes(f.a2),
                 example_losses: [hex(P.example_losses(v.loss, f.z2, v.label))],
                 loss_value: [hex(P.loss_value(v.loss, f.z2, v.label), false)],
                 grad_dW1: hexes(g.w1), grad_dW2: hexes(g.w2), after_w1: hexes(after.w1), after_w2: hexes(after.w2)};
    if (net.b1) Object.assign(got, {grad_db1: hexes(g.b1), grad_db2: hexes(g.b2),
                                    after_b1: hexes(after.b1), after_b2: hexes(after.b2)});
    out.networks.push(got);
  }
  const n = vectors.nearest;
  out.nearest = n.queries.map(q => { const b = P.nearest(q, n.training, n.labels); return [b.label, b.distance]; });
  out.losses = Object.keys(P.LOSSES);
  return JSON.stringify(out);
}"""


@pytest.fixture(scope="module")
def js_page(browser):
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto("about:blank")
    yield page, problems
    page.close()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_portable_js_gives_pythons_bits(js_page, dtype):
    vectors = {
        "constants": portable.constants(np.dtype(dtype)),
        "scalars": scalar_vectors(dtype),
        "networks": network_vectors(dtype),
        "nearest": nearest_vectors(),
    }
    text = json.dumps(vectors)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"portable-vectors-{np.dtype(dtype).name}.json").write_text(text + "\n")
    page, problems = js_page
    got = json.loads(page.evaluate(RUN, [explore.ARITHMETIC.read_text(encoding="utf-8"), text]))
    for name, case in vectors["scalars"].items():
        wrong = [(x, w, g) for x, w, g in zip(case["x"], case["want"], got["scalars"][name]) if w != g]
        assert not wrong, f"{name}: {len(wrong)} of {len(case['x'])} differ (x, python, js): {wrong[:5]}"
        assert len(case["x"]) > 250, name
    for i, (case, shown) in enumerate(zip(vectors["networks"], got["networks"])):
        assert shown == case["want"], (i, [k for k in case["want"] if shown.get(k) != case["want"][k]])
    assert got["nearest"] == vectors["nearest"]["want"]
    assert got["losses"] == list(LOSSES)  # the names come from model.LOSSES: one table each side
    assert problems == []


def test_the_vectors_reach_the_hard_cases():
    """The ties are ties, the limits are crossed, every table entry is used: vectors that missed them
    would prove less."""
    for dtype in (np.float64, np.float32):
        c = portable.CONSTANTS[np.dtype(dtype)]
        x = exp_inputs(dtype)
        assert (x < c.lowest).any() and (x > c.highest).any() and np.isinf(x).any() and (x == c.highest).any()
        inside = x[(x >= c.lowest) & (x <= c.highest)]
        shifted = inside * c.inv_step  # in dtype, as _exp rounds it
        assert (np.abs(shifted) % 1 == 0.5).sum() >= 20  # ties of the rounding to k
        assert len(set(np.rint(shifted).astype(int) % 256)) == 256  # every entry of the table of 2^(j/256)
        u = log1p_inputs(dtype)
        assert u.min() == 0 and u.max() == 1
        assert len(set(np.rint((u + 1 - 1) * 256).astype(int))) == 257  # every centre of log1p's table
