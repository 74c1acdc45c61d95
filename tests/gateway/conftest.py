"""Fixtures for the Dask Gateway backend tests: a real ``dask-gateway-server`` on 127.0.0.1.

The server runs in a subprocess with dask-gateway's ``UnsafeLocalBackend`` (scheduler and
workers as local processes, no user switching), simple password auth, and cluster options
a hub might offer (worker cores and memory, but no GPUs). Two more options exist only for
these tests: ``resources`` picks what the workers offer (``--resources CELL=1``, ``GPU=1``,
or nothing) and ``scheduler`` can make the scheduler fail to start.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from jupyter_elastic.config import load_settings

PASSWORD = "open-sesame"
USER = "alice"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gateway: runs a real dask-gateway-server on 127.0.0.1 (UnsafeLocalBackend)"
    )


def worker_module() -> Any:
    """The module with the cell runner and the workers' Dask preload (``dask_setup``)."""
    from jupyter_elastic.execution import worker

    return worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CONFIG = '''
import os
from dask_gateway_server.options import Float, Integer, Options, Select

c.DaskGateway.address = "127.0.0.1:0"
c.Proxy.address = "127.0.0.1:{port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.UnsafeLocalBackend.clusters_directory = {clusters!r}
c.UnsafeLocalBackend.cluster_status_period = 0.5
c.UnsafeLocalBackend.worker_status_period = 0.5
c.UnsafeLocalBackend.cluster_start_timeout = 20
c.UnsafeLocalBackend.sigint_timeout = 5
c.ClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
WORKER_CMD = [{dask!r}, "worker", "--preload", {preload!r}]
c.ClusterConfig.worker_cmd = WORKER_CMD
c.ClusterConfig.adaptive_period = 0.5
c.ClusterConfig.worker_memory = "512 M"
c.ClusterConfig.cluster_max_workers = 3
BASE_ENV = {{"DASK_CONFIG": {dask_config!r}, "MPLBACKEND": "agg", "JUPYTER_ELASTIC_WORKER": "1"}}
c.ClusterConfig.environment = BASE_ENV


def handler(options):
    # Dask lower-cases DASK_DISTRIBUTED__WORKER__RESOURCES__* names: use --resources
    resources = {{"cell": ["--resources", "CELL=1"], "gpu": ["--resources", "GPU=1"],
                  "none": []}}[options.resources]
    out = {{
        "worker_cores": options.worker_cores,
        "worker_memory": int(options.worker_memory * 2**30),
        "worker_cmd": WORKER_CMD + resources,
    }}
    if options.scheduler == "broken":
        out["scheduler_cmd"] = [{python!r}, "-c", "import sys; sys.exit(3)"]
    return out


c.Backend.cluster_options = Options(
    Integer("worker_cores", 1, min=1, max=2, label="Worker cores"),
    Float("worker_memory", 0.5, min=0.25, max=1, label="Worker memory (GiB)"),
    Select("resources", ["cell", "gpu", "none"], default="cell"),
    Select("scheduler", ["ok", "broken"], default="ok"),
    handler=handler,
)
'''


@dataclass
class GatewayServer:
    """A running dask-gateway-server: its address, process and log."""

    address: str
    process: subprocess.Popen[bytes]
    log: Path

    def settings(self, user: str = USER, **gateway: Any) -> Any:
        """Settings for the gateway backend against this server (short timers, 2 workers)."""
        conf = {"address": self.address, "auth": "simple", "username": user,
                "password": PASSWORD, "start-timeout": "60s", "connect-timeout": "5s"}
        conf.update(gateway)
        return load_settings({
            "backend": "gateway", "idle-timeout": "1s", "shutdown-after": "20m",
            "lease-ttl": "2m", "max-workers": 2,
            "worker": {"gpus": 1, "cpus": 4, "memory": "2GiB"}, "gateway": conf,
        })

    def clusters(self, user: str = USER, path: str = "/api/v1/clusters/") -> Any:
        """Names of this user's pending or running clusters, from the gateway's REST API
        (or the JSON of another user-authenticated GET ``path``)."""
        import base64
        import json

        request = urllib.request.Request(self.address + path)
        token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", "Basic " + token)
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
        return sorted(answer) if path == "/api/v1/clusters/" else answer

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""


def start_gateway(tmp: Path, extra: str = "") -> GatewayServer:
    """Start a dask-gateway-server in ``tmp`` and wait until its API answers; ``extra`` is
    appended to its configuration file."""
    pytest.importorskip(
        "sqlalchemy",
        reason="dask-gateway-server's local backend needs SQLAlchemy: "
        "pip install 'dask-gateway-server[local]'",
    )
    pytest.importorskip("dask_gateway_server")
    port = free_port()
    clusters = tmp / "clusters"
    clusters.mkdir(parents=True, exist_ok=True)
    config = tmp / "dask_gateway_config.py"
    dask = str(Path(sys.executable).parent / "dask")
    config.write_text(_CONFIG.format(
        port=port, password=PASSWORD, preload=worker_module().__name__, clusters=str(clusters), dask=dask, python=sys.executable,
        dask_config=os.environ.get("DASK_CONFIG", str(tmp / "dask")),
    ) + extra)
    log = tmp / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dask_gateway_server", "-f", str(config)],
            cwd=str(tmp), stdout=out, stderr=subprocess.STDOUT,
        )
    server = GatewayServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"dask-gateway-server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.address + "/api/version", timeout=1) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            stop_gateway(server)
            pytest.fail(f"dask-gateway-server did not answer within 30 s:\n{server.log_tail()}")
        time.sleep(0.1)


def stop_gateway(server: GatewayServer) -> None:
    """Stop the server and everything it started (its proxy, any cluster processes)."""
    try:
        started = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.Error:
        started = []
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
    for child in started:
        try:
            child.kill()  # only processes this server started and left behind
        except psutil.Error:
            pass
    psutil.wait_procs(started, timeout=10)


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """One dask-gateway-server for the tests of a module."""
    server = start_gateway(tmp_path_factory.mktemp("gateway"))
    try:
        yield server
    finally:
        stop_gateway(server)


@pytest.fixture
def no_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No gateway address or hub token inherited from the environment."""
    import dask.config

    for var in ("DASK_GATEWAY__ADDRESS", "JUPYTERHUB_API_TOKEN",
                "DASK_JUPYTER_ELASTIC__GATEWAY__ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(dask.config.config.setdefault("gateway", {}), "address", None)


def user_gateway(server: GatewayServer, user: str) -> Any:
    """An asynchronous dask-gateway client of ``server`` logged in as ``user``."""
    from dask_gateway import BasicAuth, Gateway

    return Gateway(address=server.address, auth=BasicAuth(user, PASSWORD), asynchronous=True)


def run(coro: Any) -> Any:
    """Run a coroutine on a fresh event loop (the backend's loop in these tests)."""
    return asyncio.run(coro)


_QUOTA_CONFIG = '''

# --- jupyter-elastic quotas (tests/gateway/test_quota*.py) ---
from dask_gateway_server.auth import SimpleAuthenticator
from dask_gateway_server.models import User
from jupyter_elastic.hub.gateway import quota_backend

GROUPS = {{"alice": ["students"], "bob": ["staff"]}}


class GroupAuthenticator(SimpleAuthenticator):
    async def authenticate(self, request):
        user = await super().authenticate(request)
        return User(user.name, groups=GROUPS.get(user.name, ()))


c.DaskGateway.authenticator_class = GroupAuthenticator
c.DaskGateway.backend_class = quota_backend("dask_gateway_server.backends.local.UnsafeLocalBackend")
c.ElasticQuota.user_gpus = 1
c.ElasticQuota.groups = {{"students": {{"gpus": 2, "workers": 3, "gpu_types": ["t4"]}},
                         "staff": {{"gpus": 4}}}}
c.ElasticQuota.contact = "hub-admins@example.org"
c.ElasticQuota.idle_timeout = {idle}
c.ElasticQuota.max_idle_timeout = 120
c.ElasticQuota.lease_ttl = {lease}
c.ElasticQuota.lease_check_period = 0.5
c.UnsafeLocalBackend.cluster_heartbeat_period = 1


def quota_handler(options):
    gpus = ["--resources", f"GPU={{options.worker_gpus}}"] if options.worker_gpus else \\
        ["--resources", "CELL=1"]
    return {{"worker_cores": 1, "worker_memory": 2**29, "worker_cmd": WORKER_CMD + gpus,
             "idle_timeout": options.idle_timeout}}


c.Backend.cluster_options = Options(
    Integer("worker_gpus", 0, min=0, max=8, label="GPUs per worker"),
    Select("gpu_type", ["t4", "a100"], default="t4", label="GPU type"),
    Float("idle_timeout", 0, min=0, max=1000, label="Idle timeout (s, 0: the hub's default)"),
    handler=quota_handler,
)
'''


def quota_config(*, idle: float, lease: float) -> str:
    """Gateway configuration with the quota module: alice is a student (2 GPUs, 3 workers,
    T4 only), bob is staff (4 GPUs), anyone else gets 1 GPU; workers offer ``GPU=<n>``."""
    return _QUOTA_CONFIG.format(idle=idle, lease=lease)
