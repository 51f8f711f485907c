"""A 30-H-3 sigmoid network that tells the letters A, B and C apart, as a DVC pipeline.

`import pipeline` never exits: a notebook or a Dask worker without a package gets Python's ImportError
where that package is imported (Pillow and matplotlib only where a stage draws). A command starts differently: the
stage commands in dvc.yaml call `python -m pipeline.<stage>`, and from a shell where the project's
environment is not active (`.venv/bin/dvc repro`) that `python` is the system's, which would die part
way with a traceback (`No module named 'PIL'`). So while `python -m` locates one of this package's
modules (sys.argv[0] is then "-m": before the stage's own imports run), `check_packages` prints one
line naming the Python and the fix, and exits with status 2; check_params depends on every file under
pipeline/, params.yaml and the samples, so DVC runs it, and stops there, before any stage whose inputs
changed deletes its outputs.
"""

import importlib.util
import sys

# What the stages import (numba is optional: the training loop falls back to NumPy without it).
REQUIRED = ("numpy", "PIL", "matplotlib", "ruamel.yaml")


def missing_packages(names: tuple[str, ...] = REQUIRED) -> list[str]:
    """The modules of `names` this Python cannot import; found without importing them (find_spec)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # find_spec("ruamel.yaml") imports ruamel, which may be missing
            found = False
        if not found:
            missing.append(name)
    return missing


def check_packages() -> None:
    """Exit with status 2 and one line on stderr if this Python lacks a package of REQUIRED."""
    if missing := missing_packages():
        print(
            f"error: {sys.executable} has no module {', '.join(missing)}: not the project's environment; "
            "activate it (`. .venv/bin/activate`, after the README's install command) and rerun",
            file=sys.stderr,
        )
        raise SystemExit(2)


if sys.argv[:1] == ["-m"]:  # `python -m pipeline.<command>` is starting: a stage's entry, before its imports
    check_packages()
