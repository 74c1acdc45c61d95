"""Faults of the Jupyter server that hosts the control plane, while a ``%%gpu`` cell runs.

A real ``jupyter server`` process (the extension loaded, local backend) hosts the control
plane: the scheduler of the notebook's cluster runs inside it and the worker processes are
its children. The kernel is started by the test with the server's address and kernel token,
as the server would start it, but as the test's child: a kernel the server starts itself
exits with it (ipykernel's parent poller), and what this suite looks at is what a kernel
that outlives its server shows (a remote kernel, or a kernel whose server was replaced).

Each test kills or stops the server mid-cell and checks: the cell ends with one clear line,
the name it would bind is not bound, no worker process outlives the server, and a new
server on the same address starts clean and runs the kernel's next cell.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from elastic_testing import wait_for
from kernel_harness import Kernel

from jupyter_elastic.protocol import SERVER_TOKEN_ENV, SERVER_URL_ENV

pytestmark = pytest.mark.kernel

KERNEL_TOKEN = "fault-suite-kernel-token"
SERVER_ENV = {
    "DASK_JUPYTER_ELASTIC__BACKEND": "local",
    "DASK_JUPYTER_ELASTIC__LEASE_TTL": "10s",
    "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "60s",
    "DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1",
    "DASK_JUPYTER_ELASTIC__WORKER__GPUS": "0",
    "DASK_JUPYTER_ELASTIC__WORKER__MEMORY": "400MiB",
    "DASK_JUPYTER_ELASTIC__INTERRUPT_GRACE": "1s",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``jupyter server`` with the extension on 127.0.0.1:``port``, a fixed kernel token."""

    def __init__(self, port: int, root: str) -> None:
        self.port, self.root = port, root
        self.url = f"http://127.0.0.1:{port}/"
        self.log = open(os.path.join(root, f"server-{time.monotonic_ns()}.log"), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
             "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", "--allow-root",
             "--ServerApp.token=fault-suite-user-token", f"--ServerApp.root_dir={root}",
             "--ServerApp.jpserver_extensions={'jupyter_elastic': True, 'jupyterlab': False}",
             f"--ElasticExtension.kernel_token={KERNEL_TOKEN}"],
            env={**os.environ, **SERVER_ENV}, stdout=self.log, stderr=subprocess.STDOUT,
            cwd=root,
        )
        wait_for(self.ready, timeout=60, interval=0.2, what="the Jupyter server to answer")

    def clusters(self) -> list[dict]:
        request = urllib.request.Request(self.url + "jupyter-elastic/api/clusters",
                                         headers={"Authorization": f"token {KERNEL_TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return list(json.load(response)["clusters"])

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"the Jupyter server exited with {self.process.returncode}")
        try:
            self.clusters()
        except OSError:
            return False
        return True

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def server_and_kernel(tmp_path_factory):
    """One kernel for the module; each test stops the newest server and starts the next on
    the same address. Nothing the module started is left running at its end."""
    from elastic_testing import children

    before = children()
    root = str(tmp_path_factory.mktemp("server-faults"))
    port = free_port()
    servers = [Server(port, root)]
    kernel = Kernel(env={SERVER_URL_ENV: servers[0].url, SERVER_TOKEN_ENV: KERNEL_TOKEN,
                         "JPY_SESSION_NAME": os.path.join(root, "faults.ipynb")})
    try:
        yield servers, kernel
    finally:
        kernel.shutdown()
        for server in servers:
            server.stop()
    wait_for(lambda: not (children() - before), timeout=30, what="every process to exit")


def stop_server_mid_cell(servers, kernel, signum):
    """Run a cell that sleeps on the worker; send ``signum`` to the server once it runs."""
    server = servers[-1]
    run = kernel.run("%%gpu\nwarm = 1", timeout=120)  # the cluster is up (it is after a test)
    assert run.status == "ok", run.error_text()
    assert len(server.clusters()) == 1, "the server hosts the notebook's cluster"
    workers = [p for p in server.descendants() if "multiprocessing" in " ".join(p.cmdline())]
    assert workers, "the server runs the worker processes"
    sent = []

    def on_message(msg):
        if not sent and msg["msg_type"] == "stream" and "pid=" in msg["content"]["text"]:
            sent.append(1)
            server.process.send_signal(signum)

    run = kernel.collect(kernel.submit(
        "%%gpu\nimport os, time\nprint(f'pid={os.getpid()}', flush=True)\ntime.sleep(600)\nnever = 1"),
        timeout=120, on_message=on_message)
    assert sent, run.stdout
    return run, workers


def check_outcome(servers, kernel, run, workers):
    """The cell failed with one WorkerLost line, bound nothing, and left no worker; a new
    server on the same address starts clean and runs the kernel's next cell."""
    text = run.error_text()
    assert run.status == "error", text
    assert len(run.error["traceback"]) == 1 and "WorkerLost" in text, text
    for noise in ("Traceback", "distributed.", "CommClosedError", "KeyboardInterrupt"):
        assert noise not in text and noise not in run.stderr, (noise, text, run.stderr)
    assert kernel.value("'never' in globals()") is False
    # no worker process outlives the server that ran it
    wait_for(lambda: not any(alive(p) for p in workers), timeout=30, what="the workers to exit")
    servers[-1].process.wait(60)
    # a new server on the same address starts clean, and the kernel's next cell runs on it
    servers.append(Server(servers[-1].port, servers[-1].root))
    assert servers[-1].clusters() == []
    after = kernel.run("%%gpu\nafter = 41 + 1", timeout=120)
    assert after.status == "ok", after.error_text()
    assert kernel.value("after") == 42
    assert len(servers[-1].clusters()) == 1
    return text


def test_server_killed_mid_cell(server_and_kernel):
    """SIGKILL: the scheduler dies with the server (it runs inside it) and nothing closes
    anything; this is also the local backend's "scheduler process killed". The workers
    exit as their parent goes."""
    servers, kernel = server_and_kernel
    run, workers = stop_server_mid_cell(servers, kernel, signal.SIGKILL)
    text = check_outcome(servers, kernel, run, workers)
    assert "lost the connection to the cluster's scheduler while the cell ran" in text, text
    assert "outcome is unknown" in text and "not re-run" in text


def test_server_terminated_mid_cell(server_and_kernel):
    """SIGTERM: the server shuts down and stops the clusters it runs; the cell says so."""
    servers, kernel = server_and_kernel
    run, workers = stop_server_mid_cell(servers, kernel, signal.SIGTERM)
    text = check_outcome(servers, kernel, run, workers)
    assert "the cluster was stopped while the cell ran (Jupyter server shutdown)" in text, text
