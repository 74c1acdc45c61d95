"""Kubernetes clusters are authenticated and encrypted: the real Dask operator runs the
project's DaskCluster, whose scheduler and workers speak TLS with the credentials of a
per-cluster Secret (mounted into their pods by the process kubelet); only the lease's
holder gets in, and the Secret goes with the DaskCluster.

Skipped, with the reason, when kopf is not installed."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

pytest.importorskip("kopf", reason="kopf is not installed: the real Dask operator cannot run")

from distributed import Client  # noqa: E402
from distributed.security import Security  # noqa: E402

from jupyter_elastic.backends.kubernetes.manifests import TLS_MOUNT  # noqa: E402
from jupyter_elastic.backends.kubernetes.tls import client_security  # noqa: E402
from jupyter_elastic.controlplane.cells import new_client  # noqa: E402

from .conftest import settings  # noqa: E402

DASK = "kubernetes.dask.org/v1"
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240), pytest.mark.usefixtures("no_leaked_processes")]


def _marker_writer() -> Any:
    """A function that writes a marker file (made locally: pickled by value, since the
    scheduler pod cannot import this test module)."""
    def write(path: str) -> str:
        with open(path, "w") as f:
            f.write("ran")
        return "ran"

    return write


def _refused(address: str, marker: str, **client_kwargs: Any) -> BaseException:
    """Try to run code on the scheduler at ``address``; the error that refused it."""
    try:
        with new_client(address, timeout="3s", **client_kwargs) as client:
            client.run_on_scheduler(_marker_writer(), marker)
    except Exception as exc:  # no TLS context, a plain-TCP handshake, a foreign certificate
        return exc
    pytest.fail(f"a client without the cluster's credentials ran code on {address}")


def _owner_client(address: str, creds: dict[str, str], marker: str) -> tuple[str, str, Any]:
    with Client(address, set_as_default=False, timeout="30s", security=client_security(creds)) as client:
        ran = client.run_on_scheduler(_marker_writer(), marker)
        worker = next(iter(client.scheduler_info()["workers"]))
        answer = client.submit(lambda: 6 * 7, key="gpu-cell-tls", resources={"GPU": 1}).result(timeout=60)
    return ran, worker, answer


def _wait(cond: Any, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def test_kubernetes_cluster_refuses_clients_without_its_credentials(real_k8s: Any, tmp_path: Any) -> None:
    from jupyter_elastic.controlplane.manager import ElasticClusterManager

    op, server = real_k8s, real_k8s.server
    marker = tmp_path / "marker"
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        manager = ElasticClusterManager(settings(), owner="alice", tick=0.2)
        await manager.start()
        try:
            lease = await manager.acquire("kernel-tls", backend="kubernetes", progress=lambda p, d: None)
            record = manager.find(lease["cluster_id"])
            name = seen["name"] = record.name
            address, creds = lease["scheduler_address"], lease["client"]
            seen["creds"] = creds
            assert address.startswith("tls://") and creds["kind"] == "tls"
            assert "PRIVATE KEY" in creds["tls_key"]

            # the Secret: made for this cluster, owned by its DaskCluster, mounted in its pods
            secret = server.sync(server.get, "v1", "secrets", f"{name}-tls", "jhub")
            dc = server.sync(server.get, DASK, "daskclusters", name, "jhub")
            assert secret["metadata"]["ownerReferences"] == [
                {"apiVersion": DASK, "kind": "DaskCluster", "name": name, "uid": dc["metadata"]["uid"]}]
            for component in ("scheduler", "worker"):
                [pod] = server.sync(server.list, "v1", "pods", "jhub",
                                    f"dask.org/cluster-name={name},dask.org/component={component}")
                container = pod["spec"]["containers"][0]
                assert container["volumeMounts"][0]["mountPath"] == TLS_MOUNT
                assert pod["spec"]["volumes"][0]["secret"]["secretName"] == f"{name}-tls"
                assert "--protocol" in container["args"] and "tls" in container["args"]

            # the lease's holder gets in, and its cell runs on a TLS worker
            ran, worker, answer = await asyncio.to_thread(_owner_client, address, creds, str(marker))
            assert (ran, answer) == ("ran", 42) and worker.startswith("tls://127.0.")
            marker.unlink()

            # nobody else does: no credentials, plain TCP, or a certificate of their own
            await asyncio.to_thread(_refused, address, str(marker))
            await asyncio.to_thread(_refused, address.replace("tls://", "tcp://"), str(marker))
            await asyncio.to_thread(_refused, address, str(marker), security=Security.temporary())
            await asyncio.to_thread(_refused, worker, str(marker), security=Security.temporary())
            assert not marker.exists(), "run_on_scheduler ran without the cluster's credentials"

            # the credentials are in the lease only: not in reports, objects or any log
            reports = json.dumps([manager.list_clusters(details=True), manager.history(), manager.usage(),
                                  repr(record), address, dc], default=str)
            logs = op.log() + "".join(op.kubelet.logs("jhub", p) or "" for p in op.kubelet.live())
            for text in (creds["tls_key"], creds["tls_cert"]):
                line = text.splitlines()[1]
                assert line not in reports and line not in logs

            # `kubectl delete daskcluster`: its Secret goes with it (ownerReferences)
            server.sync(server.delete, DASK, "daskclusters", name, "jhub")
            await asyncio.to_thread(
                _wait, lambda: server.sync(server.get, "v1", "secrets", f"{name}-tls", "jhub") is None,
                60, "the Secret to go with its DaskCluster")
        finally:
            await manager.close_all("test over")

    asyncio.run(scenario())
    name = seen["name"]
    _wait(lambda: not [p for p in op.kubelet.live() if p.startswith(f"{name}-")], 30, "the cluster's processes")
    assert server.sync(server.get, DASK, "daskclusters", name, "jhub") is None
