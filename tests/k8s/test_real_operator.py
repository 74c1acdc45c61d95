"""dask-kubernetes' KubeCluster against the real Dask operator (kopf running
dask_kubernetes.operator.controller) on the API server double, with the process kubelet
running scheduler and worker Pods as local processes on their own loopback addresses.

Skipped, with the reason, when kopf is not installed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("kopf", reason="kopf is not installed: the real Dask operator cannot run")

from dask_kubernetes.operator import KubeCluster  # noqa: E402
from distributed import Client  # noqa: E402

DASK = "kubernetes.dask.org/v1"
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240), pytest.mark.usefixtures("no_leaked_processes")]


def wait(cond: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pods(op: Any, cluster: str, component: str | None = None) -> list[dict[str, Any]]:
    sel = f"dask.org/cluster-name={cluster}" + (f",dask.org/component={component}" if component else "")
    return op.server.sync(op.server.list, "v1", "pods", "jhub", sel)


def live(op: Any, cluster: str) -> list[str]:
    names = {p["metadata"]["name"] for p in pods(op, cluster)}
    return [n for n in op.kubelet.live() if n in names or n.startswith(f"{cluster}-")]


def new_cluster(name: str, n_workers: int) -> KubeCluster:
    # LoadBalancer, not the default ClusterIP: with ClusterIP the operator's service-status
    # handler ("Running") races its components handler's closing "Pending" patch, and when the
    # patch lands last the DaskCluster stays Pending (a race in the real operator, which our
    # fast double hits under load). The ingress arrives only once the scheduler is ready, after
    # that handler, so the phase ends Running. Workers and the operator still use cluster DNS.
    return KubeCluster(name=name, namespace="jhub", n_workers=n_workers, resource_timeout=60,
                       quiet=True, shutdown_on_close=True, scheduler_service_type="LoadBalancer")


def test_real_operator_runs_a_cluster_scales_it_and_deletes_everything(real_k8s: Any) -> None:
    op, name = real_k8s, f"real-{uuid.uuid4().hex[:6]}"
    cluster = new_cluster(name, 1)
    try:
        server = op.server
        dc = server.sync(server.get, DASK, "daskclusters", name, "jhub")
        # KubeCluster saw Running; a late "Pending" patch from the operator may follow it
        assert dc["status"]["phase"] in ("Running", "Pending"), dc["status"]
        assert "kopf.zalando.org/KopfFinalizerMarker" in dc["metadata"]["finalizers"]
        [scheduler] = pods(op, name, "scheduler")
        ip = scheduler["status"]["podIP"]
        assert ip.startswith("127.0.") and ip != "127.0.0.1"
        # the LoadBalancer ingress is the scheduler pod's own address; no port-forward
        assert cluster.scheduler_address == f"tcp://{ip}:8786"
        with Client(cluster, timeout="30s") as client:
            assert client.submit(lambda x: x + 1, 1).result(timeout=60) == 2
            client.wait_for_workers(1, timeout=60)
            [worker_addr] = client.scheduler_info()["workers"]
            [worker_pod] = pods(op, name, "worker")
            assert worker_addr.startswith(f"tcp://{worker_pod['status']['podIP']}:")

            cluster.scale(2)
            wait(lambda: len(client.scheduler_info()["workers"]) == 2, what="two workers")
            assert len(pods(op, name, "worker")) == 2
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6

            cluster.scale(0)
            wait(lambda: not client.scheduler_info()["workers"], what="no workers")
            wait(lambda: not pods(op, name, "worker"), what="worker pods deleted")
            wait(lambda: len(live(op, name)) == 1, what="worker processes gone")
        logs = cluster.get_logs()
        assert any("Scheduler at" in text for text in logs.values())
    finally:
        cluster.close(timeout=60)
    assert server.sync(server.get, DASK, "daskclusters", name, "jhub") is None
    wait(lambda: not live(op, name), 30, "every process of the cluster gone")
    left = [o for (_, _, ns, n), o in list(server.objects.items()) if n.startswith(name)]
    assert not left, [o["kind"] for o in left]


def test_two_clusters_both_listen_on_8786(real_k8s: Any) -> None:
    op = real_k8s
    names = [f"pair-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    clusters = []
    try:
        for name in names:
            clusters.append(new_cluster(name, 1))
        ips = [pods(op, n, "scheduler")[0]["status"]["podIP"] for n in names]
        assert len(set(ips)) == 2
        for cluster in clusters:
            with Client(cluster, timeout="30s") as client:
                assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.address).endswith(":8786")
                assert client.submit(lambda: 40 + 2).result(timeout=60) == 42
    finally:
        for cluster in clusters:
            cluster.close(timeout=60)
    for name in names:
        wait(lambda n=name: not live(op, n), 30, f"processes of {name} gone")


def test_backend_lease_on_the_real_operator_scales_to_and_from_zero(real_k8s: Any) -> None:
    """The project's Kubernetes backend end to end: its DaskCluster and DaskAutoscaler are
    reconciled by the real operator, whose autoscaler (5 s timer, 15 s cooldown) takes the
    idle worker away and brings one back for the next cell."""
    import asyncio
    import operator

    from jupyter_elastic.backends.kubernetes.tls import client_security
    from jupyter_elastic.controlplane.manager import ElasticClusterManager

    from .conftest import settings

    op, s = real_k8s, settings()
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        manager = ElasticClusterManager(s, owner="alice", tick=0.2)
        await manager.start()
        try:
            lease = await manager.acquire("kernel-real", backend="kubernetes", progress=lambda p, d: None)
            record = manager.find(lease["cluster_id"])
            seen["name"] = record.name
            async with Client(lease["scheduler_address"], asynchronous=True,
                              security=client_security(lease["client"])) as client:
                assert await client.submit(operator.mul, 2, 21, key="cell-1", resources={"GPU": 1}) == 42

                async def workers() -> int:
                    return len((await client.scheduler.identity())["workers"])

                deadline = time.monotonic() + 60
                while await workers() and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert await workers() == 0, "the operator's autoscaler did not scale to zero"
                manager.cell_started(lease["lease_id"], lease["lease_secret"])
                fut = client.submit(operator.mul, 2, 5, key="cell-2", resources={"GPU": 1})
                assert await asyncio.wait_for(fut, 60) == 10
        finally:
            await manager.close_all("test over")

    asyncio.run(scenario())
    name = seen["name"]
    server = op.server
    wait(lambda: server.sync(server.get, DASK, "daskclusters", name, "jhub") is None, 30, "DaskCluster deleted")
    wait(lambda: not live(op, name), 30, "every process of the cluster gone")
    assert "Autoscaler updated" in op.log()
