"""The Kubernetes backend end to end: real kr8s/dask-kubernetes over HTTP to the API server
double, the stand-in operator running local scheduler and worker processes."""

from __future__ import annotations

import asyncio
import operator
import time

import pytest
from distributed import Client, Event
from elastic_testing import async_wait_for, wait_for

from jupyter_elastic.backends.kubernetes.backend import KubernetesBackend
from jupyter_elastic.backends.kubernetes.manifests import (
    cluster_manifest,
    kubernetes_options,
    validate_manifest,
)
from jupyter_elastic.backends.kubernetes.tls import client_security
from jupyter_elastic.controlplane.manager import ElasticClusterManager
from jupyter_elastic.errors import ClusterStartError, ConfigError
from jupyter_elastic.models import ClusterSpec

from .apiserver import DASK
from .conftest import run, settings

pytestmark = pytest.mark.k8s


def test_lease_runs_cells_scales_from_and_to_zero_and_deletes_everything(k8s, no_leaked_processes):
    s = settings()
    phases: list[tuple[str, str]] = []
    timings: dict[str, float] = {}

    # a pull that takes a moment: the "pulling" phase lasts more than one reconcile pass
    k8s.operator.pull_delay[s.kubernetes.image] = 0.5

    async def scenario() -> None:
        manager = ElasticClusterManager(s, owner="alice", tick=0.2)
        await manager.start()
        try:
            await body(manager)
        finally:
            await manager.close_all("test over")

    async def body(manager: ElasticClusterManager) -> None:
        t0 = time.monotonic()
        lease = await manager.acquire("kernel-1", backend="kubernetes",
                                      progress=lambda p, d: phases.append((p, d)))
        timings["start"] = time.monotonic() - t0
        assert lease["has_gpu"] is True
        record = manager.find(lease["cluster_id"])

        # the exact custom resources the backend created
        posted = {o["kind"]: o for o in k8s.server.posted}
        assert set(posted) == {"Secret", "DaskCluster", "DaskAutoscaler"}  # Secret: test_tls.py
        expected = cluster_manifest(record.spec, kubernetes_options(s, namespace="jhub"),
                                    replicas=1)
        assert posted["DaskCluster"] == expected
        for kind in ("DaskCluster", "DaskAutoscaler"):
            validate_manifest(posted[kind])
        assert posted["DaskAutoscaler"]["spec"] == {"cluster": record.name, "minimum": 0, "maximum": 2}
        worker = expected["spec"]["worker"]["spec"]
        container = worker["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert ["--resources", "GPU=1"] == container["args"][8:10]
        assert "jupyter_elastic.execution.worker" in container["args"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker["tolerations"]
        sched = expected["spec"]["scheduler"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in str(sched["resources"])
        labels = expected["metadata"]["labels"]
        assert labels["jupyter-elastic/owner"] == "alice"
        assert labels["jupyter-elastic/session"] == "kernel-1"
        assert labels["team"] == "vision"

        async with Client(lease["scheduler_address"], asynchronous=True,
                          security=client_security(lease["client"])) as client:
            fut = client.submit(operator.mul, 2, 21, key="gpu-cell-1", resources={"GPU": 1})
            assert await fut == 42
            del fut
            # the scheduler's own view: the worker runs (not the "init" it joined with)
            await manager.refresh_workers(record)
            assert [w.status for w in record.workers] == ["running"]
            # idle-timeout is 1 s: the operator's autoscaler takes the worker away
            t1 = time.monotonic()
            await async_wait_for(lambda: _no_workers(client), what="scale to zero")
            timings["scale_to_zero"] = time.monotonic() - t1
            await manager.refresh_workers(record)
            assert record.workers == []
            # a cell on the empty cluster: wake() + the autoscaler start a worker again
            t2 = time.monotonic()
            manager.cell_started(lease["lease_id"], lease["lease_secret"])
            fut = client.submit(operator.mul, 2, 5, key="gpu-cell-2", resources={"GPU": 1})
            assert await fut == 10
            timings["scale_from_zero"] = time.monotonic() - t2
            del fut

    async def _no_workers(client: Client) -> bool:
        info = await client.scheduler.identity()
        return not info["workers"]

    run(scenario())
    names = [p for p, _ in phases]
    for phase in ("pending", "pulling", "starting", "ready"):
        assert phase in names, phases
    assert names.index("pending") < names.index("pulling") < names.index("starting") < names.index("ready")
    assert all(d.endswith("s)") for p, d in phases if p in ("pending", "pulling", "starting")), phases
    assert any(old == 1 and new == 0 for _, old, new in k8s.operator.scale_log)
    # whole-cluster removal: the custom resources, pods and processes are gone
    wait_for(lambda: not k8s.operator.live(), what="pods' processes to stop")
    assert k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters")) == []
    assert k8s.server.sync(lambda: k8s.server.list("v1", "pods")) == []
    print("\nkubernetes stand-in timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))


def test_reconnect_by_name_after_restart(k8s, no_leaked_processes):
    s = settings()
    spec = ClusterSpec.from_settings(s, name="keep-me", backend="kubernetes", owner="alice")

    async def scenario() -> None:
        first = await KubernetesBackend(s).start(spec, lambda p, d: None)
        # a new control plane (kernel restart) finds the same cluster by name
        again = KubernetesBackend(s)
        handle = await again.connect("keep-me")
        assert handle is not None and handle.scheduler_address == first.scheduler_address
        assert handle.has_gpu
        async with Client(handle.scheduler_address, asynchronous=True,
                          security=client_security(handle.extra["client"])) as client:
            assert await client.submit(operator.mul, 2, 1, key="gpu-cell-r", resources={"GPU": 1}) == 2
        # start() with the same name and owner reconnects instead of failing
        handle2 = await KubernetesBackend(s).start(spec, lambda p, d: None)
        assert handle2.scheduler_address == first.scheduler_address
        assert await again.connect("not-there") is None
        # someone else's cluster of that name is not taken over
        other = ClusterSpec.from_settings(s, name="keep-me", backend="kubernetes", owner="bob")
        with pytest.raises(ConfigError, match="not started by jupyter-elastic for you"):
            await KubernetesBackend(s).start(other, lambda p, d: None)
        await KubernetesBackend._discard(first.cluster)
        await KubernetesBackend._discard(handle2.cluster)
        await again.close(handle)

    run(scenario())
    wait_for(lambda: not k8s.operator.live(), what="processes to stop")
    assert k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters")) == []


def test_stale_daskcluster_gives_a_clear_error_instead_of_hanging(k8s, no_leaked_processes):
    s = settings()
    spec = ClusterSpec.from_settings(s, name="stale", backend="kubernetes", owner="alice", max_workers=1)

    async def scenario() -> None:
        handle = await KubernetesBackend(s).start(spec, lambda p, d: None)
        await KubernetesBackend._discard(handle.cluster)
        # the scheduler's pod dies and is not replaced
        srv = k8s.server
        for pod in srv.sync(lambda: srv.list("v1", "pods", "jhub", "dask.org/component=scheduler")):
            srv.sync(srv.delete, "v1", "pods", pod["metadata"]["name"], "jhub")
        with pytest.raises(ClusterStartError, match="stale: its scheduler pod is gone") as info:
            await KubernetesBackend(s).connect("stale")
        assert "kubectl delete daskcluster stale -n jhub" in info.value.message

    run(scenario())


def test_scheduler_pod_running_but_unreachable_times_out(k8s, no_leaked_processes):
    s = settings(**{"connect-timeout": "2s"})
    spec = ClusterSpec.from_settings(s, name="mute", backend="kubernetes", owner="alice", max_workers=1)

    async def scenario() -> None:
        handle = await KubernetesBackend(s).start(spec, lambda p, d: None)
        await KubernetesBackend._discard(handle.cluster)
        for name in list(k8s.operator.live()):  # processes die; pods still say Running
            proc = k8s.operator.processes[name]
            proc.terminate()
            proc.wait(10)
        with pytest.raises(ClusterStartError, match="did not answer within 2s"):
            await KubernetesBackend(s).connect("mute")

    run(scenario())


def test_busy_and_starting_workers_are_not_scaled_down(k8s, no_leaked_processes):
    s = settings()
    spec = ClusterSpec.from_settings(s, name="steady", backend="kubernetes", owner="alice")
    image = "registry.example/elastic-notebook:1.0"

    async def scenario() -> None:
        backend = KubernetesBackend(s)
        handle = await backend.start(spec, lambda p, d: None)
        try:
            await body(backend, handle)
        finally:
            await backend.close(handle)

    async def body(backend: KubernetesBackend, handle) -> None:
        srv, op = k8s.server, k8s.operator
        async with Client(handle.scheduler_address, asynchronous=True,
                          security=client_security(handle.extra["client"])) as client:
            def _wait_for_event(name: str) -> bool:  # a cell that runs until the test says
                from distributed import Event

                return bool(Event(name).wait(120))

            release = Event("release-long-cell", client=client)
            fut = client.submit(_wait_for_event, "release-long-cell", key="gpu-cell-long",
                                resources={"GPU": 1})
            await async_wait_for(lambda: _processing(client), what="the cell to run")
            first = await _worker_names(client)
            op.pull_delay[image] = 3600.0  # the next worker stays in "pulling"
            await backend.scale(handle, 2)
            await async_wait_for(lambda: _pod_count(srv, 2), what="a second pod")
            await backend.scale(handle, 0)  # nothing may go: one busy, one starting
            await asyncio.sleep(1.0)
            assert await _worker_names(client) == first
            pods = srv.sync(lambda: srv.list("v1", "pods", "jhub", "dask.org/component=worker"))
            assert len(pods) == 2
            await release.set()
            assert await fut is True  # the cell finished on its worker
            del fut
            # now idle: the operator retires the connected worker, never the pulling pod
            await backend.scale(handle, 1)
            await async_wait_for(lambda: _pod_count(srv, 1), what="the idle worker to go")
            left = srv.sync(lambda: srv.list("v1", "pods", "jhub", "dask.org/component=worker"))
            assert left[0]["status"]["phase"] == "Pending"

    async def _processing(client: Client) -> bool:
        return any((await client.processing()).values())

    async def _worker_names(client: Client) -> set[str]:
        return {w["name"] for w in (await client.scheduler.identity())["workers"].values()}

    async def _pod_count(srv, n: int) -> bool:
        return len(srv.sync(lambda: srv.list("v1", "pods", "jhub", "dask.org/component=worker"))) == n

    run(scenario())
    wait_for(lambda: not k8s.operator.live(), what="processes to stop")
