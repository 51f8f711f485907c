"""Every file the pipeline reads or writes, relative to the project root: the one place that names them.

dvc.yaml names them again, as each stage's deps and outs; tests/test_dvc.py checks that the two agree,
so renaming a file is an edit here and one in dvc.yaml. `special` tells a reader, before it opens a
path, whether it is a regular file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")  # marks the project root, where every path below starts
DVC_LOCK = Path("dvc.lock")  # DVC's record of what each stage last ran with (read to catch two runs at once)

# check_params
PARAMS_OK = Path("data/params.ok")  # written once params.yaml passed the checks; the same bytes whatever the values

# make_dataset
X_TRAIN, Y_TRAIN = Path("data/x_train.npy"), Path("data/y_train.npy")
X_TEST, Y_TEST = Path("data/x_test.npy"), Path("data/y_test.npy")
SAMPLES = Path("data/samples")  # hand-drawn glyph files (git), read by predict and explore

# train
MODEL = Path("models/model.npz")
TRACE = Path("models/trace.npz")  # the weights after each epoch, for the explorer
HISTORY = Path("metrics/history.tsv")  # step, loss, accuracy per epoch (it grows as a DVC run goes: resume.py)
CHECKPOINTS = Path(".train-checkpoints")  # a long run's state, to resume it after a crash (git-ignored; not DVC's)

# evaluate
METRICS = Path("metrics/metrics.json")
CONFUSION = Path("metrics/confusion.json")
ROBUSTNESS = Path("metrics/robustness.json")
PREDICTIONS_PNG = Path("metrics/images/predictions.png")
MISCLASSIFIED_PNG = Path("metrics/images/misclassified.png")
MOVED_PNG = Path("metrics/images/moved.png")
HIDDEN_WEIGHTS_PNG = Path("metrics/images/hidden_weights.png")
CURVES_PNG = Path("metrics/images/curves.png")
CONFUSION_PNG = Path("metrics/images/confusion.png")

# predict
PREDICTIONS = Path("metrics/predictions.json")
SAMPLES_PNG = Path("metrics/images/samples.png")

# explore
EXPLORER = Path("metrics/explorer.html")

# not a stage's: the page template `dvc plots show` uses (scripts/plots_page.py writes it)
PLOTS_TEMPLATE = Path(".dvc/plots/offline.html")

# not a stage's: sweeps (pipeline/sweep/). Results and plot data are git's; the cache of finished trials is not.
SWEEPS = Path("sweeps")  # sweeps/NAME.tsv: every trial's params and metrics
SWEEP_PLOTS = Path("sweeps/plots")  # sweeps/plots/NAME.json: the ranking metric against each swept key (dvc.yaml)
SWEEP_CACHE = Path(".sweep-cache")  # one file per finished trial, by its params and the code's hash (git-ignored)


def at_root() -> bool:
    """Whether the working directory is the project root, from which every path here is relative."""
    return DVC_YAML.is_file()


def named_here(path: Path) -> bool:
    """Whether `path` is one of the files named in this module (as a stage or predict's default uses it)."""
    return any(path == value for value in globals().values() if isinstance(value, Path))


def split(name: str) -> tuple[Path, Path]:
    """The (pixels, labels) files of split `name`, 'train' or 'test'."""
    return {"train": (X_TRAIN, Y_TRAIN), "test": (X_TEST, Y_TEST)}[name]


# What a path can be besides a regular file, as a message names it.
_SPECIAL = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special(path: Path) -> str | None:
    """None if `path` is a regular file (or a link to one), else what it is ("a FIFO"). Readers call
    this before they open a file: opening a FIFO waits for a writer forever, and opening a device can
    act on it. Raises FileNotFoundError (or another OSError) as os.stat does."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _SPECIAL if test(mode)), "a special file")
