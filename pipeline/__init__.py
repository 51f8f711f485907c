"""A 30-H-3 sigmoid network that tells the letters A, B and C apart, as a DVC pipeline.

Every stage imports this package first, so it checks here, before any stage module runs, that this Python
has the packages the stages import. The stage commands in dvc.yaml call `python`: from a shell where the
project's environment is not active (`.venv/bin/dvc repro`), that is the system's Python, which would die
part way with a traceback (`No module named 'PIL'`). It gets one line naming the Python and the fix
instead, and exit status 2; check_params depends on every file under pipeline/, params.yaml and the
samples, so DVC runs it, and stops there, before any stage whose inputs changed deletes its outputs.
"""

import importlib.util
import sys

# What the stages import (numba is optional: the training loop falls back to NumPy without it).
REQUIRED = ("numpy", "PIL", "ruamel.yaml")


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


if _missing := missing_packages():
    print(
        f"error: {sys.executable} has no module {', '.join(_missing)}: not the project's environment; "
        "activate it (`. .venv/bin/activate`, after the README's install command) and rerun",
        file=sys.stderr,
    )
    raise SystemExit(2)
