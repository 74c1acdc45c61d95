"""A restart of the Jupyter server while a detached cell runs: real ``jupyter server``
processes (stopped with SIGTERM, or killed with SIGKILL), real kernels, supervisors and
worker processes. The restarted server on the same runtime dir re-adopts the running job
from the registry, which then completes and is listed with its results and cost; a job
whose supervisor died while no server ran is reported ``lost`` with why, not as running."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from elastic_testing import wait_for
from kernel_harness import Kernel

from jupyter_elastic.controlplane.jobs import JobRegistry
from jupyter_elastic.protocol import SERVER_TOKEN_ENV, SERVER_URL_ENV

pytestmark = pytest.mark.kernel

ENV = {
    "DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1",
    "DASK_JUPYTER_ELASTIC__WORKER__GPUS": "0",
    "DASK_JUPYTER_ELASTIC__LEASE_TTL": "5s",
}


class Server:
    """``jupyter server`` with the extension, on 127.0.0.1, in this test's directories."""

    def __init__(self, root: Path, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.token, self.kernel_token = secrets.token_hex(16), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, **ENV}
        for key in (SERVER_URL_ENV, SERVER_TOKEN_ENV):
            env.pop(key, None)
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                 "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
                 f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={root}",
                 f"--ElasticExtension.kernel_token={self.kernel_token}"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root,
            )
        wait_for(self._up, timeout=90, interval=0.2, what=f"the Jupyter server to start ({log})")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"the Jupyter server exited with {self.process.returncode}")
        try:
            self.api("api/status")
            return True
        except OSError:
            return False

    def api(self, path: str) -> dict:
        request = urllib.request.Request(self.url + path)
        request.add_header("Authorization", f"token {self.token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read())

    def job(self, job_id: str) -> dict:
        return self.api(f"jupyter-elastic/api/jobs/{job_id}")

    def kernel_env(self, notebook: str) -> dict[str, str]:
        return {**ENV, SERVER_URL_ENV: self.url, SERVER_TOKEN_ENV: self.kernel_token,
                "JPY_SESSION_NAME": notebook}

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ok(run):
    assert run.status == "ok", run.error_text()
    return run


def detach(kernel: Kernel, name: str, gate: Path, body: str) -> str:
    run = ok(kernel.run(
        f"%%gpu --detach --name {name}\n"
        "import os, time\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.02)\n" + body))
    words = run.stdout.split()
    assert words[:1] == ["job"], run.stdout
    return words[1]


def supervisor_gone(job_id: str) -> bool:
    try:
        return psutil.Process(JobRegistry().get(job_id)["pid"]).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_job_survives_a_server_restart(signum, tmp_path, no_leaked_processes):
    gate, never = tmp_path / "gate", tmp_path / "never"
    killed = signum == signal.SIGKILL
    server = Server(tmp_path, tmp_path / "server-1.log")
    kernel = second = None
    try:
        kernel = Kernel(env=server.kernel_env("train.ipynb"))
        ok(kernel.run("import numpy as np\nx = np.arange(5.0)"))
        job_id = detach(kernel, f"restart-{signum}", gate, "y = x * 3\nprint('fitted')")
        # SIGKILL: also a job whose supervisor dies while no server runs.
        orphan = detach(kernel, f"orphan-{signum}", never, "z = 1") if killed else None
        wait_for(lambda: server.job(job_id)["state"] == "running", timeout=120, interval=0.2,
                 what="the job to run")
        if orphan:
            wait_for(lambda: server.job(orphan)["state"] == "running", timeout=120, interval=0.2,
                     what="the second job to run")
        assert server.job(job_id)["control_plane"] == "supervisor"
        assert server.api("jupyter-elastic/api/clusters")["clusters"] == [], \
            "the job's cluster is not one of the server's"

        server.stop(signum)
        if orphan:
            os.kill(JobRegistry().get(orphan)["pid"], signal.SIGKILL)
            wait_for(lambda: supervisor_gone(orphan), what="the killed supervisor to exit")
        assert JobRegistry().get(job_id)["state"] == "running"

        server = Server(tmp_path, tmp_path / "server-2.log")
        listed = {j["id"]: j for j in server.api("jupyter-elastic/api/jobs")["jobs"]}
        assert listed[job_id]["state"] == "running", "the restarted server re-adopts the job"
        if orphan:
            assert listed[orphan]["state"] == "lost"
            assert "supervisor process ended before the job finished" in listed[orphan]["error"]
        gate.write_text("go")
        wait_for(lambda: server.job(job_id)["state"] not in ("running", "starting"), timeout=120,
                 interval=0.2, what="the job to finish")
        job = server.job(job_id)
        assert job["state"] == "done", job["error"]
        assert job["names"] == ["y"] and job["cost"] > 0 and job["currency"]
        results = server.api(f"jupyter-elastic/api/jobs/{job_id}/results")
        assert results["complete"] and results["names"]["y"]["shape"] == [5]

        second = Kernel(env=server.kernel_env("report.ipynb"))
        listing = ok(second.run("jobs = %gpu jobs --json\n"
                                f"print([j['state'] for j in jobs if j['id'] == {job_id!r}])"))
        assert listing.stdout.strip() == "['done']"
        run = ok(second.run(f"%gpu attach restart-{signum}"))
        assert "fitted" in run.stdout
        assert second.value("y.tolist()") == [0.0, 3.0, 6.0, 9.0, 12.0]
        wait_for(lambda: supervisor_gone(job_id), what="the supervisor to exit with its cluster")
    finally:
        for k in (kernel, second):
            if k is not None:
                k.shutdown()
        server.stop()
