"""RemoteControlPlane: the kernel's side of the server extension's REST API.

Against a real Jupyter server with the extension (``jp_serverapp``; the plane's blocking
calls run in a worker thread so the server's loop keeps serving), and against a tiny
stub HTTP server to show that cell events never wait for the network.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import threading

import pytest

from jupyter_elastic.controlplane import connect_control_plane
from jupyter_elastic.controlplane.remote import RemoteControlPlane
from jupyter_elastic.errors import BackendUnavailable, ClusterNotFound, ConfigError
from jupyter_elastic.protocol import SERVER_TOKEN_ENV, SERVER_URL_ENV

pytest_plugins = ["pytest_jupyter.jupyter_server"]






@pytest.fixture
def plane(jp_serverapp, http_server_client):
    remote = RemoteControlPlane(os.environ[SERVER_URL_ENV], os.environ[SERVER_TOKEN_ENV])
    yield remote
    remote.close()


def run(fn, *args, **kwargs):
    """Run a blocking plane call off the server's event loop."""
    return asyncio.to_thread(fn, *args, **kwargs)


async def test_lease_lifecycle_over_rest(plane, no_leaked_processes):
    phases: list[str] = []
    lease = await run(plane.acquire, "kernel-a", progress=lambda p, d: phases.append(p))
    cid = lease["cluster_id"]
    try:
        assert phases[0] == "queued" and phases[-1] == "ready" and "scheduler" in phases
        assert lease["session"] == "kernel-a" and lease["backend"] == "local"
        assert lease["scheduler_address"].startswith("tls://127.0.0.1:")
        assert await run(plane.heartbeat, lease["lease_id"]) is True

        plane.cell_started(cid)
        plane.cell_finished(
            cid,
            {
                "id": "cell-1", "cell": 1, "started": "2026-11-29T05:00:00+00:00",
                "backend": "local", "cluster_id": cid, "worker": None, "device": "cpu",
                "seconds": 0.5, "compute_seconds": 0.25, "gpus": 0.0, "gpu_seconds": 0.0,
                "cpu_seconds": 0.25, "cost": 0.0, "status": "ok",
            },
        )
        assert await run(plane.flush) is True
        history = await run(plane.history)
        assert [row["id"] for row in history] == ["cell-1"]
        assert (await run(plane.usage))["cells"]["count"] == 1

        assert [c["id"] for c in await run(plane.clusters)] == [cid]
        scaled = await run(plane.scale, cid, 1)
        assert scaled["requested_workers"] == 1
        detail = await run(plane.cluster, cid)
        assert "worker_details" in detail
        adapted = await run(plane.adapt, cid, 0, 2)
        assert adapted["adapt"] == {"minimum": 0, "maximum": 2}
        assert (await run(plane.set_idle_timeout, cid, 42.0))["idle_timeout"] == 42.0

        with pytest.raises(ConfigError, match="'n'"):
            await run(plane.scale, cid, -1)
        await run(lambda: plane.release(lease["lease_id"], keep=True))  # a kernel restarting
        assert await run(plane.heartbeat, lease["lease_id"]) is False
        assert [c["id"] for c in await run(plane.clusters)] == [cid], "kept for the restarted kernel"
        again = await run(lambda: plane.acquire("kernel-a2", name=lease["name"]))
        assert again["cluster_id"] == cid
        await run(plane.release, again["lease_id"])  # a kernel shutting down: its cluster stops
        with pytest.raises(ClusterNotFound, match=cid):
            await run(plane.cluster, cid)
    finally:
        if any(c["id"] == cid for c in await run(plane.clusters)):
            await run(plane.stop, cid)


async def test_errors_come_back_as_elastic_errors(plane):
    with pytest.raises(ClusterNotFound, match="'nope'"):
        await run(plane.scale, "nope", 1)
    with pytest.raises(ConfigError, match="mainframe"):
        await run(plane.acquire, "kernel-b", backend="mainframe")
    bad = RemoteControlPlane(plane.base.rsplit("jupyter-elastic/", 1)[0], "wrong-token")
    with pytest.raises(Exception) as info:
        await run(bad.clusters)
    assert getattr(info.value, "status_code", None) == 403


def test_unreachable_server_is_backend_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plane = RemoteControlPlane(f"http://127.0.0.1:{port}/", "t")
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
        plane.clusters()
    plane.cell_started("c")  # never raises: reported from the background thread
    plane.close()


class _GatedHandler(http.server.BaseHTTPRequestHandler):
    """Records each request, then answers 204 only once the test opens the gate."""

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, json.loads(body), self.headers["Authorization"],
                                 self.headers.get("X-Elastic-Lease-Secret")))
        self.server.gate.wait(30)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_cell_events_do_not_wait_for_the_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHandler)
    server.seen, server.gate = [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    plane = RemoteControlPlane(f"http://127.0.0.1:{server.server_address[1]}/base/", "tok")
    try:
        plane._leases.add({"lease_id": "l1", "cluster_id": "c1", "lease_secret": "s3cret"})
        # The gate is closed: a blocking implementation would hang here until it opens.
        plane.cell_started("c1", 60.0)
        plane.cell_finished("c1", {"id": "r"})
        assert plane.flush(timeout=0.2) is False  # still queued behind the closed gate
        server.gate.set()
        assert plane.flush(timeout=30) is True
        assert server.seen == [
            ("/base/jupyter-elastic/api/cells/start", {"lease_id": "l1", "timeout": 60.0},
             "token tok", "s3cret"),
            ("/base/jupyter-elastic/api/cells/finish",
             {"lease_id": "l1", "row": {"id": "r"}}, "token tok", "s3cret"),
        ]
    finally:
        server.gate.set()
        plane.close()
        server.shutdown()
        server.server_close()


def test_connect_control_plane_picks_the_server(monkeypatch):
    monkeypatch.setenv(SERVER_URL_ENV, "http://127.0.0.1:1/")
    monkeypatch.setenv(SERVER_TOKEN_ENV, "secret")
    plane = connect_control_plane()
    try:
        assert isinstance(plane, RemoteControlPlane)
        assert plane.kind == "server"
        assert plane.base == "http://127.0.0.1:1/jupyter-elastic/api/"
        assert plane.token == "secret"
    finally:
        plane.close()


def test_a_quota_refusal_in_the_lease_stream_stays_a_quota_refusal():
    """A hub gateway's refusal crosses the server's lease stream as 403 and is raised in the
    kernel as QuotaExceeded; a plain 403 reply (Jupyter's own auth) is not called a quota."""
    from jupyter_elastic.controlplane.remote import error_for
    from jupyter_elastic.errors import ElasticError, QuotaExceeded

    line = "alice may hold 2 GPUs (group students) and holds 2: cluster c1 (2 worker(s) x 1 GPU)"
    streamed = error_for(403, line, streamed=True)
    assert type(streamed) is QuotaExceeded and streamed.message == line
    assert type(error_for(403, "Forbidden")) is ElasticError
