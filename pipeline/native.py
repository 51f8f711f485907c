"""The compiled engine's machine code: where it is kept, once per machine, and how a run loads it.

`compiled.py` builds an epoch as a C function with Numba, once per machine, dtype and engine source;
this module keeps its object code in the user's cache and loads it into a process with llvmlite alone.
A run that trains with it never imports Numba: loading costs an llvmlite import and a link, where
Numba's own cache would first build its whole compiler (about 0.5 s a process, more with SciPy).

Where: `$PIPELINE_CACHE_DIR`, else `$NUMBA_CACHE_DIR/abc-pipeline`, else
`$XDG_CACHE_HOME/abc-pipeline` (`~/.cache/abc-pipeline`). Every clone, worktree and Dask worker of
this machine finds the same files. An entry's name is a digest of all that decides its code: the
engine's sources (so clones with different sources never overwrite each other's), the Numba and
llvmlite versions, the dtype, the CPU and its features as Numba sees them (NUMBA_CPU_NAME,
NUMBA_CPU_FEATURES and the rest of Numba's code-generation variables). An entry is written whole
(a temporary file renamed) and carries the SHA-256 of its code, checked before it is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import os
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline import portable

SOURCES = ("compiled.py", "portable.py", "native.py")  # what the machine code is made from
MAGIC = b"abc-pipeline engine 1\n"
MAX_ENTRY_BYTES = 1 << 24  # an entry is about 0.2 MB: anything past 16 MB is not one
KEEP = 16  # entries kept per machine; older ones are removed when a new one is written
WAIT_SECONDS = 600  # how long a process waits for another's compile of the same entry before it compiles too
CODEGEN_VARIABLES = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_ENABLE_AVX", "NUMBA_OPT", "NUMBA_LOOP_VECTORIZE")
# What the object code refers to besides the Python C API and Numba's C helpers (`_helpers`): Numba's
# runtime frees memory it allocated, and the entry point's arrays have none (they are views of NumPy's).
SHIM = r"""
define void @NRT_MemInfo_call_dtor(ptr %info) {
  ret void
}
define void @NRT_Free(ptr %pointer) {
  ret void
}
"""
_loaded: dict[str, object] = {}  # key -> the C function, for this process
_engines: list = []  # llvmlite's engines, kept alive with their code
_kept: dict[str, object] = {}  # dtype name -> the C function this process compiled and could not store


# ---- what the engine is given: its constants, tables and scratch (NumPy: no Numba needed) ----

# Indices into `consts`, the scalars of one dtype.
ZERO, ONE, LOWEST, HIGHEST, INV_STEP, STEP_HI, STEP_LO, ROUND_SHIFT, E0, E1, E2, TABLE_SIZE = range(12)
LOG_POLY = 12  # five coefficients, 12 .. 16
LOSS_IDS = {"bce": 0, "mse": 1}  # the losses of `model.LOSSES`, as the kernels know them


def tables(dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """(consts, powers, pow2, centers, log_centers) for `dtype`, from `portable.py`'s own constants.

    powers[j] = 2^(j/256) and pow2[e + OFFSET] = 2^e: portable adds k // 256 to the exponent field of
    2^(j/256); multiplying by 2^(k // 256) gives the same number whenever it is normal, which the
    clipping of exp's input guarantees."""
    c = portable.CONSTANTS[np.dtype(dtype)]
    scalars = [0.0, 1.0, c.lowest, c.highest, c.inv_step, c.step_hi, c.step_lo, c.round_shift, *c.exp_poly]
    scalars.append(portable.TABLE_SIZE)
    consts = np.array(scalars + list(c.log_poly), dtype=c.dtype)
    powers, centers, log_centers = (t.astype(c.dtype) for t in portable.TABLES)
    with np.errstate(over="ignore", under="ignore"):  # float32 holds 2^-149 .. 2^127: the rest are never read
        pow2 = np.ldexp(np.ones(2 * POW2_OFFSET, c.dtype), np.arange(-POW2_OFFSET, POW2_OFFSET))
    return consts, powers, pow2, centers, log_centers


def scratch_rows(n: int, dtype: np.dtype | type) -> tuple[np.ndarray, ...]:
    """W for the row kernels: four float rows and an int32 row of n entries."""
    return (*(np.empty(n, dtype) for _ in range(4)), np.empty(n, np.int32))


def workspace(
    N: int, batch_size: int, H: int, K: int, pixels: int, dtype: np.dtype | type, threads: int = 1
) -> tuple[np.ndarray, ...]:
    """The scratch `train_epoch` carves its arrays from (`carve`), made once for a run, in NumPy: the
    kernels allocate nothing, so the entry point runs without Numba's runtime. Five flat buffers:
    float64, int64, the weights' dtype, uint8 and int32; each is what `threads` threads share, then
    each thread's own part."""
    sizes = workspace_sizes(N, batch_size, H, K, pixels, threads)
    kinds = (np.float64, np.int64, dtype, np.uint8, np.int32)
    return tuple(np.zeros(size, kind) for size, kind in zip(sizes, kinds))


def workspace_sizes(N: int, batch_size: int, H: int, K: int, pixels: int, threads: int = 1) -> tuple[int, ...]:
    """The lengths of `workspace`'s five buffers, which `carve` cuts its views from without checks."""
    bs, rows_k, pH, nodes = max(1, min(batch_size, N)), SUMMARY_ROWS * K, pixels * H, 2 * threads
    n = max(bs * H, rows_k)
    shared = (
        4 * H * bs + threads,  # acc1, acc2, G1, G2; each thread's largest |logit|
        8 + bs + 2 * H * bs + N + 2 * threads + threads * 2 * pH,  # counter, labels, N1 and N2, visited, ...
        pH + bs + 3 * (H + K) * bs + N + (H * K + H + K) * nodes,  # dW1, scratch, typed, per_example, sums
        pixels * bs,  # P
        0,
    )
    own = (2 * pH, 192 + nodes + 1, 2 + 4 * n + 64 + 2 * H + K + 3 * rows_k, 0, n)
    return tuple(a + threads * b for a, b in zip(shared, own))


POW2_OFFSET = 1024  # pow2 covers 2^-1024 .. 2^1023; exp's clipped input needs 2^-1020 .. 2^1021 at most
SUMMARY_ROWS = 1024  # rows of logits summarized at once: 24 KiB of float64 for K = 3, in the L1 cache
MIN_COLUMNS = 128  # examples a thread takes at least, when threads share a batch (`compiled.plan`)
SPINS = 2000  # looks at the barrier's counter before a waiting thread starts yielding its core


# ---- the machine's cache ----


def cache_root() -> Path:
    if os.environ.get("PIPELINE_CACHE_DIR"):
        return Path(os.environ["PIPELINE_CACHE_DIR"])
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]) / "abc-pipeline"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "abc-pipeline"


def _llvm():
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def sources_digest() -> str:
    """The SHA-256 of the engine's sources (SOURCES), each named."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return digest.hexdigest()


def key(dtype: np.dtype | type) -> str:
    """The digest that names the entry for `dtype` on this machine, as it is now."""
    llvm = _llvm()
    digest = hashlib.sha256(sources_digest().encode())
    numba_spec = importlib.util.find_spec("numba")
    version = Path(numba_spec.origin).with_name("_version.py") if numba_spec and numba_spec.origin else None
    digest.update(version.read_bytes() if version and version.exists() else b"no numba")
    facts = [llvm.llvm_version_info, sys.version_info[:2], np.dtype(dtype).name, llvm.get_process_triple()]
    facts += [llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()]
    facts += [os.environ.get(name) for name in CODEGEN_VARIABLES]
    digest.update(repr(facts).encode())
    return digest.hexdigest()[:32]


def path(dtype: np.dtype | type) -> Path:
    return cache_root() / f"epoch-{np.dtype(dtype).name}-{key(dtype)}.o"


def is_ready(dtype: np.dtype | type) -> bool:
    """Whether the entry for `dtype` is in this machine's cache (loading it costs a tenth of a second), or
    kept by this process."""
    if np.dtype(dtype).name in _kept:
        return True
    try:
        return path(dtype).is_file()
    except (ImportError, OSError, ValueError):
        return False


def store(dtype: np.dtype | type, symbol: str, code: bytes) -> bool:
    """Write the entry for `dtype`: whole or not at all (a temporary file, renamed); then drop the oldest
    beyond KEEP. Whether it was written: a cache that cannot be written is not an error (`keep`)."""
    body = symbol.encode() + b"\n" + code
    data = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    try:
        target = path(dtype)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, target)
        entries = sorted(target.parent.glob("epoch-*.o"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
            old.with_name(f".{old.name}.lock").unlink(missing_ok=True)
    except (OSError, ValueError):
        return False
    return True


def keep(dtype: np.dtype | type, symbol: str, code: bytes) -> None:
    """Link code this process compiled for `dtype` and could not store, so that its later runs load it
    rather than compile it again (a process compiles at most once per dtype, whatever the cache)."""
    function = _link(symbol, code, np.dtype(dtype))
    if function is not None:
        _kept[np.dtype(dtype).name] = function


@contextlib.contextmanager
def compiling(dtype: np.dtype | type):
    """Held while this process compiles the entry for `dtype`: another process (a test worker, a second
    run) that needs the same entry meanwhile waits, then loads it rather than compiling it too. An
    exclusive lock on a file beside the entry, released when its holder ends, however it ends. Without a
    cache to lock in, or after WAIT_SECONDS of waiting, nothing is held (the run compiles anyway)."""
    target = path(dtype)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK: a FIFO planted there fails to open rather than blocking; O_NOFOLLOW: no link followed
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        handle = os.open(target.with_name(f".{target.name}.lock"), flags, 0o600)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # held by another process
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            except OSError:  # a file system without locks
                break
        yield
    finally:
        os.close(handle)  # and with it the lock


def load(dtype: np.dtype | type):
    """The C function of the entry for `dtype`, or None when the cache has no sound entry for it (and this
    process kept none: `keep`)."""
    if np.dtype(dtype).name in _kept:
        return _kept[np.dtype(dtype).name]
    try:
        name = path(dtype)
    except (ImportError, OSError, ValueError):
        return None
    if str(name) not in _loaded:
        function = load_file(name, dtype)
        if function is None:
            return None
        _loaded[str(name)] = function
    return _loaded[str(name)]


def load_file(name: Path, dtype: np.dtype | type):
    """The C function of the entry file `name` (for `dtype`), linked into this process, or None when it is
    not a sound entry (`benchmarks/engine_ab.py` also loads another revision's entry with it)."""
    try:  # a regular file of a sane size only: a FIFO would block the read, a huge file fill memory
        info = name.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ENTRY_BYTES:
            return None
        data = name.read_bytes()
    except OSError:
        return None
    header, _, rest = data.partition(b"\n")
    stamp, _, body = rest.partition(b"\n")
    if header + b"\n" != MAGIC or hashlib.sha256(body).hexdigest().encode() != stamp:
        return None
    symbol, _, code = body.partition(b"\n")
    return _link(symbol.decode(errors="replace"), code, np.dtype(dtype))  # a garbled name links nowhere


def _helpers() -> dict[str, int]:
    """Numba's C helpers (reshape, ldexp, raising an error) by symbol: from its `_helperlib` extension,
    loaded alone when Numba is not imported (1 ms; it imports nothing), as Numba registers them."""
    module = sys.modules.get("numba._helperlib")
    if module is None:
        spec = importlib.util.find_spec("numba")
        if spec is None or spec.origin is None:
            raise ImportError("numba is not installed")
        folder = Path(spec.origin).parent
        candidates = (folder / f"_helperlib{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES)
        library = next((path for path in candidates if path.is_file()), None)
        if library is None:
            raise ImportError("numba has no _helperlib extension")
        loader = importlib.machinery.ExtensionFileLoader("_helperlib", str(library))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader("_helperlib", loader))
        loader.exec_module(module)
    return {f"numba_{name}": address for name, address in module.c_helpers.items()}


def _libc_address(name: str) -> int:
    """The address of the C library's function `name` in this process (the engine's threads yield with
    sched_yield)."""
    return ctypes.cast(getattr(ctypes.CDLL(None), name), ctypes.c_void_p).value


def _link(symbol: str, code: bytes, dtype: np.dtype):
    """The C function `symbol` of the object `code`, linked into this process, or None when it cannot be
    (no Numba to take helpers from; LLVM refused the object; no such symbol)."""
    try:
        llvm = _llvm()
        for name, address in _helpers().items():
            llvm.add_symbol(name, address)
        llvm.add_symbol("sched_yield", _libc_address("sched_yield"))
        target = llvm.Target.from_triple(llvm.get_process_triple())
        machine = target.create_target_machine(codemodel="jitdefault", jit=True)
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(SHIM), machine)
        engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        engine.finalize_object()
        address = engine.get_function_address(symbol)
    except (ImportError, OSError, RuntimeError, ValueError):
        return None
    if not address:
        return None
    _engines.append(engine)
    lr = ctypes.c_double if dtype == np.float64 else ctypes.c_float
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 19, lr, ctypes.c_void_p)(address)


def epoch(function, X, y, order, lr, batch_size, loss, w1, w2, b1, b2, Z2, T, ws, threads: int = 1):
    """`compiled.train_epoch`'s (loss sum, correct, largest |logit|), through the C function: every array
    C-contiguous and of the entry's types (X uint8, y and order int64, the rest as `workspace` and
    `tables` make them, ws for `threads`), which its pointers are taken from. With threads > 1 the
    function runs in that many threads at once, this one the first (each call releases the GIL)."""
    pointers, sizes = arguments(X, y, order, batch_size, loss, w1, w2, b1, b2, Z2, T, ws, threads)
    result = np.zeros(3)
    helpers = _pool(threads - 1) if threads > 1 else None
    threads = threads if helpers else 1  # helpers that cannot start: one thread, the same bits
    dims = [np.array([*sizes, thread, threads], np.int64) for thread in range(threads)]
    ws[1][0] = 0  # the barrier's counter
    others = [helpers.submit(function, *pointers, d.ctypes.data, lr, result.ctypes.data) for d in dims[1:]]
    function(*pointers, dims[0].ctypes.data, lr, result.ctypes.data)
    for other in others:
        other.result()
    return float(result[0]), int(result[1]), float(result[2])


def arguments(X, y, order, batch_size, loss, w1, w2, b1, b2, Z2, T, ws, threads: int) -> tuple[list[int], list[int]]:
    """The entry point's array pointers and its dims but the last two (thread, threads), for `epoch`'s
    arguments, checked first: C-contiguous arrays, a workspace as long as its layout."""
    arrays = (X, y, order, w1, w2, b1, b2, Z2, *T, *ws)
    if not all(a.flags.c_contiguous for a in arrays):
        raise ValueError("the compiled engine takes C-contiguous arrays")
    H, K = w2.shape
    if any(len(w) < size for w, size in zip(ws, workspace_sizes(len(order), batch_size, H, K, X.shape[1], threads))):
        raise ValueError("the compiled engine's workspace is smaller than `workspace` makes it for this run")
    sizes = [len(order), X.shape[1], H, K, int(len(b1) > 0), batch_size, loss]
    sizes += [len(T[0]), len(T[1]), len(T[2]), len(T[3]), *(len(w) for w in ws)]
    return [a.ctypes.data for a in arrays], sizes


_pools = threading.local()  # each calling thread's own helpers, so two trainings at once never queue for them


def _pool(size: int) -> ThreadPoolExecutor | None:
    """The calling thread's `size` helper threads, kept for its epochs (starting threads costs more than
    a small epoch). All are started before any is given an epoch's part: one that could not start (the
    system's limit on threads) would leave the others waiting at a barrier for ever. None when they
    cannot all start."""
    pool = getattr(_pools, "pool", None)
    if pool is not None and pool._max_workers == size:
        return pool
    if pool is not None:
        pool.shutdown()
    _pools.pool, started = None, threading.Barrier(size + 1)
    pool = ThreadPoolExecutor(size, thread_name_prefix="engine")
    try:
        for _ in range(size):
            pool.submit(started.wait)
        started.wait()
    except (RuntimeError, threading.BrokenBarrierError):  # RuntimeError: can't start new thread
        started.abort()  # those that started go back
        pool.shutdown()
        return None
    _pools.pool = pool
    return pool
