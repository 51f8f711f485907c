"""Running trials on Dask: a Client of a scheduler or of a LocalCluster, and every trial submitted to it."""

from __future__ import annotations

import contextlib
import logging
import secrets
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
        try:
            client = Client(scheduler)  # waits distributed.comm.timeouts.connect (30 s) for an answer
        except (OSError, TimeoutError) as err:
            raise PipelineError(f"--scheduler {shown(scheduler)}: cannot connect ({first_line(err)})") from None
        with client:
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
            silence_logs=logging.ERROR,  # a worker lost is told in one line below, not in Dask's log
        ) as cluster,
        Client(cluster) as client,
    ):
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
        now = set(client.nthreads())
        for lost in sorted(workers - now):
            progress.note(f"note: lost worker {lost}; Dask runs its trials again on the others")
        workers = now
        progress.tick()
        time.sleep(0.1)


def _holder(client: Any, future: Any) -> str:
    """The address of the worker that holds `future`'s result, as the scheduler says (not the worker)."""
    try:
        held = client.who_has([future]).get(future.key, ())
    except Exception:  # a scheduler gone: the result itself will say so
        held = ()
    return ", ".join(sorted(map(str, held))) or "a worker"
