"""`python -m pipeline.sweep sweeps/NAME.yaml ...`: the command (pipeline/sweep/command.py)."""

from pipeline.errors import exit_on_error
from pipeline.sweep.command import main

raise SystemExit(exit_on_error(main))
