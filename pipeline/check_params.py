"""Stage check_params: refuse a bad params.yaml before DVC deletes any other stage's outputs.

    python -m pipeline.check_params

DVC removes a stage's outputs before it looks at the stage's params, so a misspelled key used to
cost the model ("Parameters 'train.lr' are missing", after models/ was emptied), and a key no stage
reads passed unseen. This stage depends on the whole of params.yaml (`params: - params.yaml:` in
dvc.yaml), so any edit reruns it, and checks it with pipeline/params.py: every key known, every
value allowed, the run's size within bounds. Every stage that reads params depends on its output,
so DVC runs it first, whatever the target; when it fails, nothing else runs and nothing is deleted.

Its output, data/params.ok, lists every key and what it may hold: the same bytes whatever the
values, so the stages after it rerun only for the params they read themselves.
"""

from __future__ import annotations

import argparse

from pipeline import paths
from pipeline.errors import exit_on_error
from pipeline.params import allowed_values, load_params
from pipeline.writing import save_text


def main() -> None:
    argparse.ArgumentParser(prog="python -m pipeline.check_params", description=__doc__.splitlines()[0]).parse_args()
    load_params()
    save_text(paths.PARAMS_OK, f"{paths.PARAMS} passed pipeline/params.py's checks. Allowed:\n{allowed_values()}")


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
