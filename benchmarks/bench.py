"""Training speed side by side in one process run: our trainer, scikit-learn, the tutorial's loop; memory; DVC.

    pip install -c constraints.txt -e '.[bench]'
    python benchmarks/bench.py [--samples 300000] [--rounds 3] [--baseline REV] [--batches 1 64 1024]
                               [--skip-memory] [--skip-dvc]

"ours" is the compiled engine (PIPELINE_ENGINE=numba; its batches from 256 shared by every core's
thread, and "ours 1 thread" the same in one), "ours numpy" the NumPy reference; both give
the same bytes. Every trainer fits the same 30-5-3 logistic network with plain SGD (lr 0.1, no momentum, no
shuffling) on the same noisy glyphs for one epoch, and the figures are samples per second and their
ratios. scikit-learn's MLPClassifier has biases and a softmax output (ours: no biases, sigmoid
outputs, as the tutorial): the same work per sample up to a few exponentials. Peak memory is the
resident set of a child process that trains on --memory-samples samples. The DVC figure compares
`dvc repro -f` of this pipeline with the same DAG whose commands only touch their outputs.
--baseline REV also times the trainer of git revision REV (its pipeline/ package, in a child process
on the same data), in the same rounds, and this tree's the same way (a child process each: "ours" runs
in this process, which at batch 64 alone moves its rate by up to a fifth): before and after a change,
side by side.
Timings on a shared machine are noisy: compare the ratios, each measured side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from pipeline.glyphs import CLASSES, PIXELS, clean_glyphs, noisy_copies
from pipeline.model import init_network
from pipeline.sgd import fit, threads_for

LR = 0.1
ROOT = Path(__file__).resolve().parents[1]


def data(samples: int) -> tuple[np.ndarray, np.ndarray]:
    return noisy_copies(clean_glyphs(), samples // 3, 0.1, np.random.default_rng(0))


def ours(X: np.ndarray, y: np.ndarray, batch_size: int, engine: str, dtype: str = "float64", threads=None) -> float:
    """Seconds for one epoch with PIPELINE_ENGINE=engine (the compiled engine loaded beforehand, as it is
    once per process: `warm_up`), in `threads` threads (PIPELINE_THREADS) or as the environment says."""
    os.environ["PIPELINE_ENGINE"] = engine
    before = os.environ.get("PIPELINE_THREADS")
    if threads is not None:
        os.environ["PIPELINE_THREADS"] = str(threads)
    net = init_network(np.random.default_rng(0), PIXELS, 5, CLASSES, "bce", False, np.dtype(dtype))
    start = time.perf_counter()
    fit(net, X, y, lr=LR, epochs=1, batch_size=batch_size, shuffle=False, rng=np.random.default_rng(0))
    seconds = time.perf_counter() - start
    if before is None:
        os.environ.pop("PIPELINE_THREADS", None)
    else:
        os.environ["PIPELINE_THREADS"] = before
    return seconds


def warm_up() -> float:
    """Load (or compile, the first time on a machine) the compiled engine for both dtypes; seconds taken."""
    start = time.perf_counter()
    for dtype in ("float64", "float32"):
        ours(*data(30), 2, "numba", dtype)
    return time.perf_counter() - start


TARGETS = {1: ("tutorial loop", 100), 64: ("scikit-learn", 8), 1024: ("scikit-learn", 3)}  # issues 23 (1), 16


def sklearn(X: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(5,),
        activation="logistic",
        solver="sgd",
        momentum=0,
        batch_size=batch_size,
        learning_rate_init=LR,
        shuffle=False,
        max_iter=1,
        alpha=0.0,
        random_state=0,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one epoch is all we ask for
        clf.fit(X, y)
    return time.perf_counter() - start


def tutorial(X: np.ndarray, y: np.ndarray) -> float:
    """The tutorial's per-sample loop, bugs fixed: explicit arguments, argmax accuracy, BCE's own update."""

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    def f_forward(x, w1, w2):
        return sigmoid(sigmoid(x.dot(w1)).dot(w2))

    def back_prop(x, target, w1, w2, alpha):
        a1 = sigmoid(x.dot(w1))
        a2 = sigmoid(a1.dot(w2))
        d2 = a2 - target
        d1 = np.multiply(w2.dot(d2.transpose()).transpose(), np.multiply(a1, 1 - a1))
        return w1 - alpha * x.transpose().dot(d1), w2 - alpha * a1.transpose().dot(d2)

    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((30, 5)), rng.standard_normal((5, 3))
    xs = [row.reshape(1, 30).astype(np.float64) for row in X]  # the tutorial's list of (1, 30) rows
    targets = np.eye(3)[y]
    start = time.perf_counter()
    losses, correct = [], 0
    for x, target, label in zip(xs, targets, y):
        out = f_forward(x, w1, w2)
        losses.append(-np.sum(target * np.log(out) + (1 - target) * np.log(1 - out)))
        correct += int(np.argmax(out) == label)
        w1, w2 = back_prop(x, target, w1, w2, LR)
    return time.perf_counter() - start


BASELINE_CHILD = """
import sys, time, numpy as np
sys.path.insert(0, sys.argv[1])  # the baseline revision's pipeline/ package comes first
from pipeline.glyphs import clean_glyphs, noisy_copies
from pipeline.model import init_network
from pipeline.sgd import fit
samples, batch_size = int(sys.argv[2]), int(sys.argv[3])
X, y = noisy_copies(clean_glyphs(), samples // 3, 0.1, np.random.default_rng(0))
def network():
    try:  # revisions since the math takes its sizes as arguments
        return init_network(np.random.default_rng(0), 30, 5, ("A", "B", "C"), "bce", False)
    except TypeError:  # earlier ones
        return init_network(np.random.default_rng(0), 5, "bce", False)
def train(n):
    fit(network(), X[:n], y[:n], lr=0.1, epochs=1, batch_size=batch_size, shuffle=False, rng=np.random.default_rng(0))
train(30)  # a compiled engine loads (or compiles) outside the timing, as warm_up does for ours
start = time.perf_counter()
train(len(X))
print(time.perf_counter() - start)
"""


def checkout(rev: str, dest: Path) -> Path:
    """REV's pipeline/ package, extracted into dest."""
    archive = subprocess.run(["git", "archive", rev, "pipeline"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def baseline(tree: Path, samples: int, batch_size: int) -> float:
    """Seconds for one epoch with REV's trainer, its compiled engine if it has one (as "ours")."""
    out = subprocess.run(
        [sys.executable, "-c", BASELINE_CHILD, str(tree), str(samples), str(batch_size)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PIPELINE_ENGINE": "numba"},
    ).stdout
    return float(out)


def speed(
    samples: int, sklearn_bs1_samples: int, rounds: int, before: tuple[str, Path] | None = None, batches=(1, 64, 1024)
) -> None:
    """Samples/s of each trainer and ours/theirs, each the median over rounds that run them back to back."""
    X, y = data(samples)
    print(
        f"training speed, one epoch on {len(X):,} noisy glyphs (30-5-3, lr {LR}, no shuffle), "
        f"median of {rounds} rounds; ratios are per round, then the median. ours: the compiled engine "
        f"(loaded in {warm_up():.2f} s), float64 unless named; ours numpy: the NumPy engine"
    )
    for bs in batches:
        n_sk = len(X) if bs > 1 else min(len(X), sklearn_bs1_samples)
        trainers = {
            "ours": lambda: len(X) / ours(X, y, bs, "numba"),
            "ours float32": lambda: len(X) / ours(X, y, bs, "numba", "float32"),
            "ours numpy": lambda: len(X) / ours(X, y, bs, "numpy"),
            "scikit-learn": lambda: n_sk / sklearn(X[:n_sk], y[:n_sk], bs),
        }
        if threads_for(bs) > 1:  # "ours" shares these batches between threads: and in one
            trainers["ours 1 thread"] = lambda: len(X) / ours(X, y, bs, "numba", threads=1)
        if bs == 1:
            trainers["tutorial loop"] = lambda: len(X) / tutorial(X, y)
        if before is not None:  # both timed alike, each in a child process: an in-process "ours" is not
            trainers[f"before ({before[0]})"] = lambda: len(X) / baseline(before[1], len(X), bs)
            trainers["this tree, as before"] = lambda: len(X) / baseline(ROOT, len(X), bs)
        rates = {name: [] for name in trainers}
        for _ in range(rounds):
            for name, measure in trainers.items():
                rates[name].append(measure())
        cells = [f"{name} {np.median(r):,.0f}/s" for name, r in rates.items()]
        ratio = {theirs: np.median(np.array(rates["ours"]) / np.array(rates[theirs])) for theirs in rates}
        pair = ("this tree, as before", f"before ({before[0]})") if before is not None else ()
        ratios = [f"ours/{theirs} {r:.1f}x" for theirs, r in ratio.items() if theirs not in ("ours", *pair)]
        if pair:
            fair = np.median(np.array(rates[pair[0]]) / np.array(rates[pair[1]]))
            ratios.append(f"this tree/{pair[1]}, both in a child process {fair:.2f}x")
        note = f" (scikit-learn on the first {n_sk:,})" if n_sk < len(X) else ""
        print(f"  batch {bs:>4}: " + " | ".join(cells) + " || " + " | ".join(ratios) + note, flush=True)
        against, target = TARGETS[bs]
        verdict = "met" if ratio[against] >= target else "missed"
        print(f"             target: ours/{against} >= {target}x: {ratio[against]:.1f}x, {verdict}", flush=True)


PROCESS_CHILD = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from pipeline.glyphs import clean_glyphs, noisy_copies
from pipeline.model import init_network
from pipeline.sgd import fit
X, y = noisy_copies(clean_glyphs(), 10, 0.1, np.random.default_rng(0))
net = init_network(np.random.default_rng(0), 30, 5, ("A", "B", "C"), "bce", False)
fit(net, X, y, lr=0.1, epochs=1, batch_size=1, shuffle=False, rng=np.random.default_rng(0))
"""


def process_seconds(tree: Path, engine: str, cache: Path, rounds: int) -> float:
    """Median wall time of a process that imports `tree`'s trainer and trains 30 glyphs with `engine`."""
    env = {**os.environ, "PIPELINE_ENGINE": engine, "PIPELINE_CACHE_DIR": str(cache), "NUMBA_CACHE_DIR": str(cache)}
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", PROCESS_CHILD, str(tree)], cwd=tree, env=env, check=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def startup(rounds: int, before: tuple[str, Path] | None) -> None:
    """What a user pays before the compiled engine trains: the compile in an empty cache (once per machine),
    a second clone's first load of it, and the load a train process pays against the NumPy engine."""
    with tempfile.TemporaryDirectory() as tmp:
        cache, first, second = Path(tmp) / "cache", Path(tmp) / "first", Path(tmp) / "second"
        for clone in (first, second):
            shutil.copytree(ROOT / "pipeline", clone / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        env = {**os.environ, "PIPELINE_CACHE_DIR": str(cache)}
        compiles = []
        for dtype in ("float64", "float32"):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipeline.compiled", dtype], cwd=first, env=env, check=True)
            compiles.append(f"{dtype} {time.perf_counter() - start:.1f} s")
        numba_process = process_seconds(second, "numba", cache, rounds)
        numpy_process = process_seconds(second, "numpy", cache, rounds)
        print(
            f"compiled engine start-up: compile in an empty cache (a process each, once per machine): "
            f"{', '.join(compiles)}; a train process in another clone, median of {rounds}: "
            f"{numba_process:.2f} s with it against {numpy_process:.2f} s with NumPy: "
            f"a load of {numba_process - numpy_process:.2f} s"
        )
        if before is not None:
            process_seconds(before[1], "numba", cache, 1)  # its own cache, warm
            old = process_seconds(before[1], "numba", cache, rounds)
            print(
                f"  before ({before[0]}): {old:.2f} s with its compiled engine loaded from its cache: "
                f"a load of {old - numpy_process:.2f} s"
            )


MEMORY_CHILD = """
import resource, sys, numpy as np
from pipeline.glyphs import CLASSES, PIXELS, clean_glyphs, noisy_copies
from pipeline.model import init_network
from pipeline.sgd import fit
X, y = noisy_copies(clean_glyphs(), int(sys.argv[1]) // 3, 0.1, np.random.default_rng(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
net = init_network(np.random.default_rng(0), PIXELS, 5, CLASSES, "bce", False)
fit(net, X, y, lr=0.1, epochs=1, batch_size=int(sys.argv[2]), shuffle=True, rng=np.random.default_rng(0))
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, X.nbytes + y.nbytes)
"""


def memory(samples: int, batch_size: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(samples), str(batch_size)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    data_kib, peak_kib, nbytes = int(out[0]), int(out[1]), int(out[2])
    print(
        f"peak memory, training one shuffled epoch on {samples:,} samples at batch {batch_size}: "
        f"{peak_kib / 1024:.0f} MiB resident (after making the data: {data_kib / 1024:.0f} MiB; "
        f"the uint8 data itself: {nbytes / 2**20:.0f} MiB)"
    )


def dvc_floor(rounds: int) -> None:
    """Median wall time of `dvc repro -f`, the real pipeline against the same DAG doing nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        real, floor = Path(tmp) / "real", Path(tmp) / "floor"
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        files = [name for name in listed if (ROOT / name).is_file()]
        for dest in (real, floor):
            for name in files:
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, dest / name)
            subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
        stages = yaml.safe_load((floor / "dvc.yaml").read_text())
        for stage in stages["stages"].values():
            declared = [o for kind in ("outs", "metrics", "plots") for o in stage.get(kind, [])]
            outs = [next(iter(o)) if isinstance(o, dict) else o for o in declared]
            dirs = sorted({str(Path(o).parent) for o in outs})
            stage["cmd"] = f"mkdir -p {' '.join(dirs)} && touch {' '.join(outs)}"
        (floor / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
        times: dict[Path, list[float]] = {real: [], floor: []}
        for _ in range(rounds):
            for dest in (real, floor):  # alternate, so both see the same machine load
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "dvc", "repro", "-f", "-q"],
                    cwd=dest,
                    check=True,
                    env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
                )
                times[dest].append(time.perf_counter() - start)
        t_real, t_floor = np.median(times[real]), np.median(times[floor])
        print(
            f"dvc repro -f, median of {rounds}: pipeline {t_real:.2f} s, same DAG doing nothing {t_floor:.2f} s, "
            f"ratio {t_real / t_floor:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300_000)
    parser.add_argument(
        "--sklearn-bs1-samples",
        type=int,
        default=30_000,
        help="scikit-learn at batch 1 takes minutes on the full set; its rate is measured on a prefix",
    )
    parser.add_argument("--memory-samples", type=int, default=3_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each measurement (medians are reported)")
    parser.add_argument("--skip-dvc", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also time the trainer of this git revision")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024], choices=[1, 64, 1024])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-startup", action="store_true", help="skip the compile and load figures (a minute)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = (args.baseline, checkout(args.baseline, Path(tmp))) if args.baseline else None
        if not args.skip_startup:
            startup(args.rounds, before)
        speed(args.samples, args.sklearn_bs1_samples, args.rounds, before, args.batches)
    if not args.skip_memory:
        memory(args.memory_samples, 1024)
    if not args.skip_dvc:
        dvc_floor(args.rounds)


if __name__ == "__main__":
    main()
