"""Running trials on Dask: a Client of a scheduler or of a LocalCluster, and every trial submitted to it."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import signal
import time
from collections.abc import Iterator
from typing import Any

from pipeline.errors import PipelineError, first_line, shown
from pipeline.sweep.trials import Trial
from pipeline.sweep.work import run_trial

DIED = "workers died running it"  # a trial Dask gave up on: not a result of its params, so never cached
# Dask's nanny sets these for the worker processes it starts; they change no bit here, but the project sets no
# BLAS variable anywhere, so LocalCluster's workers start with this process's environment as it is.
NO_BLAS_ENV = {name: None for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A Client of the cluster at `scheduler`, or of a LocalCluster of `workers` processes, one thread each."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with connected(scheduler) as client:
            yield client
        return
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": NO_BLAS_ENV}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",  # the scheduler's HTTP server (health checks) on a free port: None
            scheduler_kwargs={"dashboard": False},  # means 8787, and a warning when another cluster has it
            # A worker lost is told in one line below, not in Dask's log; and at the end a worker's heartbeat to
            # the scheduler that just closed logged an ERROR with two tracebacks, now and then.
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]")  # a name, IPv4, or IPv6 in brackets
SCHEMES = ("tcp", "tls")  # Dask's network protocols; tls:// takes its certificates from Dask's configuration


def check_address(scheduler: str) -> None:
    """A scheduler's address as Dask takes it, SCHEME://HOST:PORT; a one-line PipelineError otherwise."""
    expected = f"--scheduler {shown(scheduler)}: expected tcp://HOST:PORT or tls://HOST:PORT"
    scheme, sep, rest = scheduler.partition("://")
    if not sep or scheme not in SCHEMES:
        raise PipelineError(f"{expected}, found {'the scheme ' + shown(scheme, 20) if sep else 'no scheme'}")
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise PipelineError(f"{expected}, found {'the port ' + shown(port, 20) if colon else 'no port'}")
    if not HOST.fullmatch(host):
        raise PipelineError(f"{expected}, found the host {shown(host, 60)!r}")


@contextlib.contextmanager
def connected(scheduler: str) -> Iterator[Any]:
    """A Client of the scheduler at `scheduler`. Whatever the other end does (nothing, garbage, a frame
    claiming exabytes, a hang after the handshake), the answer comes within Dask's connect timeout
    (distributed.comm.timeouts.connect, 30 s) as one line: the whole of Client() runs under an alarm."""
    import dask
    from dask.utils import parse_timedelta
    from distributed import Client

    check_address(scheduler)
    if scheduler.startswith("tls://") and not dask.config.get("distributed.comm.tls.ca-file", None):
        raise PipelineError(
            f"--scheduler {shown(scheduler)}: no certificates for tls://; set Dask's distributed.comm.tls.ca-file, "
            ".client.cert and .client.key (DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ...__CLIENT__CERT, ...__CLIENT__KEY)"
        )
    seconds = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds + 1)
    try:
        client = Client(scheduler, timeout=seconds)
    except Exception as err:  # not a Dask scheduler: any error its bytes caused, MemoryError included
        reason = first_line(err)
        if not isinstance(err, (OSError, TimeoutError)):
            reason = f"what it sent is not Dask's protocol: {type(err).__name__}: {reason}"
        raise PipelineError(f"--scheduler {shown(scheduler)}: cannot connect ({reason})") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with client:
        yield client


def wait_for_workers(client: Any, where: str) -> None:
    try:
        client.wait_for_workers(1, timeout=60)
    except TimeoutError:
        raise PipelineError(f"{where}: no worker joined within 60 s; start some with `dask worker`") from None


def run_all(todo: list[Trial], files: list[str], code: str, client: Any, on_result, progress) -> None:
    """Submit every trial of `todo`; `on_result(trial, result, worker)` as each finishes, in any order, with
    what the worker sent back (checked by the caller: `received.checked`) and the worker's address. A worker
    that dies mid-trial is Dask's to handle: it runs the trial again elsewhere (up to
    distributed.scheduler.allowed-failures times, then the trial fails as KilledWorker). Task keys carry a
    token of this run's, so another client's tasks under a trial's name are never taken for this one's."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    token = secrets.token_hex(8)
    progress.tally.started = time.monotonic()
    futures = {client.submit(run_trial, t.doc, files, key=f"trial-{t.key}-{token}"): t for t in todo}
    workers = set(client.nthreads())  # not scheduler_info(): a periodic refresh can blank its list
    pending = as_completed(futures)
    while not pending.is_empty():
        for future in pending.next_batch(block=False) if pending.has_ready() else []:
            trial = futures[future]
            where = _holder(client, future)
            try:
                result = future.result()
            except KilledWorker as err:
                result = {"code": code, "error": f"{DIED}: {first_line(err)}"}
            except Exception as err:  # whatever a worker's replaced function raised: a failed trial, said in one line
                result = {"code": code, "error": f"the worker raised {type(err).__name__}: {first_line(err)}"}
            on_result(trial, result, where)
            future.release()
        threads = client.nthreads()
        now = set(threads)
        for lost in sorted(workers - now):
            progress.note(f"note: lost worker {lost}; Dask runs its trials again on the others")
        workers = now
        progress.tally.running = min(pending.count(), sum(threads.values()))
        progress.tick()
        time.sleep(0.1)


def _holder(client: Any, future: Any) -> str:
    """The address of the worker that holds `future`'s result, as the scheduler says (not the worker)."""
    try:
        held = client.who_has([future]).get(future.key, ())
    except Exception:  # a scheduler gone: the result itself will say so
        held = ()
    return ", ".join(sorted(map(str, held))) or "a worker"
