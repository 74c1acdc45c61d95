"""A killed single-user server's clusters are stopped after the gateway's lease.

alice's server, spawned by the real hub, runs a ``%%gpu`` cell on a dask-gateway-server that
authenticates her with the hub (the same quota module and hub auth as the package's gateway,
but an 8 s lease checked every 0.5 s: the package's gateway keeps clusters without a client
for the other tests). Her kernel's Dask client holds the lease while her server lives; once
the server and its kernel are SIGKILLed (nothing of theirs stops the cluster), the quota
module sees no client on the scheduler and stops the cluster: the gateway lists none for her,
its scheduler and worker processes are gone, and a new server of hers runs a cell again.
"""

from __future__ import annotations

import json
import secrets
import signal
import urllib.error
import urllib.request
from typing import Any

import psutil
import pytest
import yaml
from elastic_testing import wait_for

pytest.importorskip("dask_gateway", reason="the tests talk to the gateway with dask-gateway")

from gateway.conftest import GatewayServer, stop_gateway  # noqa: E402

from .conftest import start_hub_gateway, user_settings  # noqa: E402
from .kernel_ws import RemoteKernel  # noqa: E402

pytestmark = pytest.mark.hub

#: Long enough for a kernel to connect once its cluster's first worker is up on a loaded
#: machine (the lease counts from then), short enough to wait out.
LEASE_S = 8


def clusters(hub: Any, gateway: GatewayServer, user: str) -> list[str]:
    """Names of ``user``'s pending or running clusters, from the gateway's API (their token)."""
    request = urllib.request.Request(gateway.address + "/api/v1/clusters/")
    request.add_header("Authorization", f"jupyterhub {hub.token(user)}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=15) as resp:
        return sorted(json.loads(resp.read()))


def cluster_processes(gateway: GatewayServer) -> list[str]:
    """Dask schedulers and workers the gateway started (its proxy aside)."""
    found = []
    for proc in psutil.Process(gateway.process.pid).children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if " scheduler" in line or " worker" in line:
            found.append(line[:120])
    return found


def server_process(hub: Any, user: str) -> psutil.Process:
    """``user``'s single-user server process, a child of the hub."""
    for proc in psutil.Process(hub.process.pid).children():
        try:
            if ("jupyterhub-singleuser" in " ".join(proc.cmdline())
                    and proc.environ().get("JUPYTERHUB_USER") == user):
                return proc
        except psutil.Error:
            continue
    pytest.fail(f"no single-user server process of {user} under the hub")


def running(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie its parent has not reaped yet does not)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_server(hub: Any, user: str) -> None:
    """Stop ``user``'s server through the hub's API (also one whose process is gone)."""
    try:
        hub.admin_api(f"/users/{user}/server", "DELETE")
    except urllib.error.HTTPError as exc:
        if exc.code != 400:  # 400: not running
            raise
    wait_for(lambda: not hub.admin_api(f"/users/{user}").get("servers"), timeout=120,
             interval=0.5, what=f"the hub to forget {user}'s server")


def test_a_killed_servers_cluster_is_stopped_after_the_lease(hub, tmp_path,
                                                              no_leaked_processes):
    settings = hub.homes / "alice" / ".config" / "dask" / "jupyter-elastic.yaml"
    original = settings.read_text()
    gateway = start_hub_gateway(tmp_path / "gateway", hub.api, hub.gateway_token,
                                secrets.token_hex(16), lease=LEASE_S)
    try:
        stop_server(hub, "alice")  # a server started earlier reads the package's gateway
        settings.write_text(yaml.safe_dump(user_settings(gateway)))
        hub.start_server("alice")
        kernel = RemoteKernel(hub, "alice")
        run = kernel.execute("%%gpu\nimport os\nos.getpid()")
        assert run.status == "ok", (run.error, run.stderr)
        [name] = clusters(hub, gateway, "alice")
        assert len(cluster_processes(gateway)) == 2  # its scheduler and one worker

        # her kernel's Dask client holds the lease: the cluster outlives several lease checks
        marks = gateway.log.read_text().count("heartbeat [count")
        wait_for(lambda: gateway.log.read_text().count("heartbeat [count") > marks + LEASE_S + 3,
                 timeout=60, interval=0.2, what="more scheduler heartbeats than the lease lasts")
        assert clusters(hub, gateway, "alice") == [name]
        assert "lease lapsed" not in gateway.log.read_text()

        server = server_process(hub, "alice")
        kernels = server.children(recursive=True)
        assert kernels, "alice's server runs no kernel"
        kernel.ws.close()
        for proc in [server, *kernels]:  # the server first: it would restart a dead kernel
            proc.send_signal(signal.SIGKILL)
        wait_for(lambda: not any(map(running, [server, *kernels])), timeout=30,
                 what="alice's server and kernel to die")

        wait_for(lambda: clusters(hub, gateway, "alice") == [], timeout=90, interval=0.5,
                 what="the gateway to stop alice's cluster once her lease lapsed")
        assert (f"lease lapsed: stopping cluster {name} of alice, no Dask client for "
                f"{LEASE_S}s") in gateway.log.read_text()
        wait_for(lambda: cluster_processes(gateway) == [], timeout=60, interval=0.5,
                 what="the cluster's scheduler and worker processes to exit")

        # the hub still lists the dead server until it is stopped; a new one runs cells
        stop_server(hub, "alice")
        hub.start_server("alice")
        kernel = RemoteKernel(hub, "alice")
        try:
            again = kernel.execute("%%gpu\n6 * 7")
            assert again.status == "ok", (again.error, again.stderr)
            assert any(r.get("text/plain") == "42" for r in again.results)
            assert len(clusters(hub, gateway, "alice")) == 1
            assert kernel.execute("%gpu stop", timeout=120).status == "ok"
        finally:
            kernel.shutdown()
        wait_for(lambda: clusters(hub, gateway, "alice") == [], timeout=60, interval=0.5,
                 what="alice's second cluster to stop")
    finally:
        settings.write_text(original)
        try:
            stop_server(hub, "alice")
        finally:
            stop_gateway(gateway)


def test_a_starting_clusters_workers_are_read_from_its_metrics():
    from jupyter_elastic.hub.gateway import _workers

    body = (b'# TYPE dask_scheduler_workers gauge\n'
            b'dask_scheduler_workers{state="idle"} %s\n'
            b'dask_scheduler_workers{state="partially_saturated"} 0.0\n'
            b'dask_scheduler_workers{state="saturated"} 1.0\n'
            b'dask_scheduler_workers{state="paused"} 0.0\n'
            b'dask_scheduler_workers{state="retiring"} 0.0\n')
    assert _workers(body % b"0.0") == 1
    assert _workers(body % b"2.0") == 3
    assert _workers(b"dask_scheduler_clients 1.0\n") is None  # unknown: the lease runs
    assert _workers(None) is None
