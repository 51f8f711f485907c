"""A sweep on a real multi-process Dask cluster: `dask scheduler` and two `dask worker` processes on localhost,
started with Dask's own commands as on several machines (minus the network). One worker is killed during a
trial; Dask runs that trial again on the other, and every result is the one this process computes itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import paths, sweep
from pipeline.params import read_yaml
from tests.conftest import assert_one_line_error, copy_project, env, free_port
from tests.test_sweep import SLOW, tsv_rows

pytestmark = pytest.mark.slow  # a Dask cluster of separate processes (python -m pytest -m slow)

DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers (no nanny, so nothing sets BLAS variables), as separate
    processes; the NumPy engine, so each trial lasts long enough to be caught running. Stopped afterwards."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    common = {"cwd": tmp_path, "env": env() | {"PIPELINE_ENGINE": "numpy"}, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **common)
    ]
    worker = [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
    procs += [subprocess.Popen([*worker, "--name", f"w{i}"], **common) for i in range(2)]
    try:
        yield address
    finally:
        for proc in procs[::-1]:  # the workers first: they would wait for a scheduler gone
            proc.terminate()
        for proc in procs[::-1]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_sweep_on_dask_commands_survives_a_worker_killed_mid_trial(cluster, tmp_path, monkeypatch):
    from distributed import Client

    project = copy_project(tmp_path / "p")
    (project / "sweeps/slow.yaml").write_text(SLOW)
    with Client(cluster, timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.sweep", "sweeps/slow.yaml", "--scheduler", cluster],
            cwd=project,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        busy, deadline = [], time.monotonic() + 120
        while not busy and proc.poll() is None and time.monotonic() < deadline:
            busy = [worker for worker, tasks in client.processing().items() if tasks]
            time.sleep(0.02)
        assert busy, "no trial was seen running"
        os.kill(client.run(os.getpid, workers=busy[:1])[busy[0]], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"note: lost worker {busy[0]}; Dask runs its trials again on the others" in err, err
    assert "6 trials: 0 reused" in out and f"6 ran on {cluster}" in out and "0 failed" in out, out
    # Every trial's metrics, whichever worker ran it, killed or not, are the bytes this process computes.
    monkeypatch.chdir(project)  # the sweep file and params.yaml, as the sweep read them
    spec = sweep.load_sweep(Path("sweeps/slow.yaml"))
    files = sweep.code_files()
    trials = sweep.trials(spec, read_yaml(paths.PARAMS), sweep.code_hash(files))
    for trial in trials:
        saved = json.loads((project / paths.SWEEP_CACHE / f"{trial.key}.json").read_text())
        assert saved == {"metrics": sweep.run_trial(trial.doc, files)["metrics"]}, trial.number


@contextlib.contextmanager
def tiny_server(answer: bytes | None):
    """A TCP server on 127.0.0.1 that sends `answer` to each connection and keeps it open (None: nothing is
    listening on its port at all); yields its address."""
    if answer is None:
        yield f"tcp://127.0.0.1:{free_port()}"
        return
    server = socket.create_server(("127.0.0.1", 0))
    held, stop = [], threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "cannot connect ("),  # nothing listening
        (b"", "cannot connect (no answer within 2 s)"),  # accepts, and never answers
        (b"HTTP/1.0 200 OK\r\n\r\n" * 8, "cannot connect (what it sent is not Dask's protocol: "),  # garbage
        (
            (2**62).to_bytes(8, "little") * 2,
            "cannot connect (what it sent is not Dask's protocol: MemoryError",
        ),  # 4 EiB
    ],
    ids=["closed", "silent", "garbage", "huge-frame"],
)
def test_a_scheduler_that_does_not_answer_or_answers_garbage_is_one_line(answer, reason, tmp_path):
    project = copy_project(tmp_path / "p")
    (project / "sweeps/slow.yaml").write_text(SLOW)
    with tiny_server(answer) as address:
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.sweep", "sweeps/slow.yaml", "--scheduler", address],
            cwd=project,
            env=env() | {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},  # Dask's own setting; 30 s by default
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert_one_line_error(proc, f"error: --scheduler {address}: {reason}")
    assert time.monotonic() - start < 30 and not (project / paths.SWEEP_CACHE).exists()


# Run on a worker with exec: its run_trial replaced by one that sends back test.accuracy 1.5, as any client of the
# scheduler can do to any worker (client.run).
FORGE = """
import contextlib
import json
import pipeline.sweep.work as work
true_run_trial = work.run_trial
def forged(doc, files):
    result = true_run_trial(doc, files)
    tree = json.loads(result["metrics"])
    tree["test"]["accuracy"] = 1.5
    return {"code": result["code"], "metrics": json.dumps(tree, indent=2) + "\\n"}
work.run_trial = forged
"""


def test_a_forged_worker_and_a_client_under_the_sweeps_task_names_change_no_result(cluster, tmp_path, monkeypatch):
    from distributed import Client

    project = copy_project(tmp_path / "p")
    (project / "sweeps/slow.yaml").write_text(SLOW)
    monkeypatch.chdir(project)
    spec = sweep.load_sweep(Path("sweeps/slow.yaml"))
    files = sweep.code_files()
    code = sweep.code_hash(files)
    trials = sweep.trials(spec, read_yaml(paths.PARAMS), code)
    true = {t.number: sweep.run_trial(t.doc, files)["metrics"] for t in trials}
    with Client(cluster, timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
        forged_worker = sorted(client.nthreads())[0]
        client.run(exec, FORGE, {}, workers=[forged_worker])
        # Another client's tasks under the names trials had before (trial-<hash>): plausible, and not the sweep's.
        decoy = json.loads(true[1]) | {"moved": {"clean": 0.123457, "noisy": 0.123457}}
        text = json.dumps(decoy, indent=2) + "\n"
        decoys = [client.submit(dict, code=code, metrics=text, key=f"trial-{t.key}") for t in trials]
        client.gather(decoys)
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.sweep", "sweeps/slow.yaml", "--scheduler", cluster],
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    rows = {int(r["trial"]): r for r in tsv_rows(project / "sweeps/slow.tsv")}
    refused = f"refused what {forged_worker} sent back: test.accuracy: expected a number in [0, 1], found 1.5"
    failed = [n for n, r in rows.items() if r["status"] == "failed"]
    assert failed and len(failed) < len(trials), proc.stderr  # both workers ran trials
    for number, row in rows.items():
        saved = project / paths.SWEEP_CACHE / f"{trials[number - 1].key}.json"
        if row["status"] == "failed":
            assert refused in row["error"] and not saved.exists(), row
        else:
            assert json.loads(saved.read_text()) == {"metrics": true[number]}, number
    assert "0.123457" not in (project / "sweeps/slow.tsv").read_text()
    assert sum(refused in line for line in proc.stderr.splitlines()) == len(failed), proc.stderr


def certificate(folder: Path, name: str, ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, signed by `ca`, or self-signed (a CA of its own) when None."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subject = ["-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-nodes"]
    if ca is None:
        args = ["req", "-x509", "-newkey", "rsa:2048", *subject, "-keyout", key, "-out", cert]
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
        return cert, key
    request = folder / f"{name}.csr"
    args = ["req", "-new", "-newkey", "rsa:2048", *subject, "-keyout", key, "-out", request]
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    sign = [
        "x509",
        "-req",
        "-in",
        request,
        "-CA",
        ca[0],
        "-CAkey",
        ca[1],
        "-days",
        "2",
        "-out",
        cert,
        "-copy_extensions",
        "copy",
    ]
    subprocess.run(["openssl", *map(str, sign)], check=True, capture_output=True)
    return cert, key


def test_a_sweep_through_a_tls_cluster_and_what_a_client_without_its_certificates_gets(tmp_path):
    """`dask scheduler` and `dask worker` with certificates of one CA, as the docs set them up: the sweep with the
    client's certificate gets every trial's true result; without certificates, or with another CA's, one line."""
    ca = certificate(tmp_path, "ca")
    tls = {name: certificate(tmp_path, name, ca) for name in ("scheduler", "worker", "client")}
    port = free_port()
    address = f"tls://127.0.0.1:{port}"

    def flags(name: str) -> list[str]:
        return ["--tls-ca-file", str(ca[0]), "--tls-cert", str(tls[name][0]), "--tls-key", str(tls[name][1])]

    common = {"cwd": tmp_path, "env": env(), "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--protocol",
                "tls",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
                *flags("scheduler"),
            ],
            **common,
        )
    ]
    procs.append(
        subprocess.Popen(
            [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", *flags("worker")], **common
        )
    )
    project = copy_project(tmp_path / "p")
    (project / "sweeps/slow.yaml").write_text(SLOW.replace("0.3, 0.4, 0.5, 0.6]", "0.3]"))
    client_env = {
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(ca[0]),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(tls["client"][0]),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(tls["client"][1]),
        "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "10s",
    }

    def sweep_with(extra: dict[str, str]) -> subprocess.CompletedProcess:
        shutil.rmtree(project / paths.SWEEP_CACHE, ignore_errors=True)  # nothing to reuse: each run connects
        return subprocess.run(
            [sys.executable, "-m", "pipeline.sweep", "sweeps/slow.yaml", "--scheduler", address],
            cwd=project,
            env=env() | extra,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    try:
        ran = sweep_with(client_env)
        rows = tsv_rows(project / "sweeps/slow.tsv")
        bare = sweep_with({})
        other = certificate(tmp_path, "stranger")  # a certificate of a CA the cluster does not trust
        strange = client_env | {
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(other[0]),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(other[1]),
        }
        stranger = sweep_with(strange)
    finally:
        for proc in procs[::-1]:
            proc.terminate()
            proc.wait(timeout=10)
    assert ran.returncode == 0, ran.stderr
    assert f"3 trials: 0 reused from .sweep-cache/ (same params, same code), 3 ran on {address}" in ran.stdout, (
        ran.stdout
    )
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert_one_line_error(bare, f"error: --scheduler {address}: no certificates for tls://; set Dask's")
    assert_one_line_error(stranger, f"error: --scheduler {address}: cannot connect (")
