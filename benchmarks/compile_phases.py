"""Where the compiled engine's compile goes: one `compiled.build(dtype)` in this process, its phases timed.

    python benchmarks/compile_phases.py [float64|float32]

Each phase's seconds exclude the phases nested in it (Numba types a kernel's callees while it types the
kernel): Numba's typing, its lowering to LLVM IR, its other passes, the IR's text and LLVM's parse of it,
LLVM's function passes, its module passes and its machine code. Then the LLVM IR text each function
handed to LLVM, the largest first: the code Numba made, which lowering, parsing and LLVM all pay for.
Nothing is cached: every run compiles everything.
"""

from __future__ import annotations

import collections
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from numba.core import codegen, compiler_machinery, lowering, typeinfer

from pipeline import compiled

PHASES = (
    (typeinfer.TypeInferer, "propagate", "Numba: typing"),
    (lowering.Lower, "lower", "Numba: lowering to LLVM IR"),
    (compiler_machinery.PassManager, "run", "Numba: its other passes"),
    (codegen.CPUCodeLibrary, "add_ir_module", "the IR as text, parsed by LLVM"),
    (codegen.CPUCodeLibrary, "_optimize_functions", "LLVM: function passes"),
    (codegen.CPUCodeLibrary, "_optimize_final_module", "LLVM: module passes"),
    (codegen.CPUCodeLibrary, "_finalize_final_module", "LLVM: machine code"),
)


def main() -> None:
    dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float64")
    seconds, nested, ir_chars = collections.Counter(), [], collections.Counter()

    def timed(function, label):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            nested.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                spent, inner = time.perf_counter() - start, nested.pop()
                seconds[label] += spent - inner
                if nested:
                    nested[-1] += spent
                if label.startswith("the IR"):
                    ir_chars[args[0].name] += len(str(args[1]))

        return wrapper

    for owner, name, label in PHASES:
        setattr(owner, name, timed(getattr(owner, name), label))
    start = time.perf_counter()
    compiled.build(dtype)
    total = time.perf_counter() - start
    print(f"compiled.build({dtype.name}): {total:.1f} s")
    for label, spent in seconds.most_common():
        print(f"  {spent:5.2f} s  {label}")
    print(f"  {total - sum(seconds.values()):5.2f} s  the rest")
    megabytes = sum(ir_chars.values()) / 1e6
    print(f"LLVM IR handed to LLVM: {megabytes:.2f} MB of text, {len(ir_chars)} libraries; the largest:")
    for name, chars in ir_chars.most_common(8):
        print(f"  {chars / 1e3:7.0f} kB  {name}")


if __name__ == "__main__":
    main()
