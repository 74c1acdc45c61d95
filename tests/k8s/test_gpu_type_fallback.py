"""``--gpu-type A,B``: each type in order, the next when the current one's worker stays
unschedulable for ``kubernetes.pending-timeout``. The stand-in operator plays the
kube-scheduler (the real operator never schedules): its nodes carry only NVIDIA-A100."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jupyter_elastic.config import load_settings
from jupyter_elastic.controlplane.manager import ElasticClusterManager
from jupyter_elastic.errors import ClusterStartError
from jupyter_elastic.models import utcnow_iso

from .apiserver import DASK

pytestmark = [pytest.mark.k8s, pytest.mark.usefixtures("no_leaked_processes")]


def typed_settings(**kubernetes: Any) -> Any:
    return load_settings({
        "backend": "kubernetes", "idle-timeout": "1s", "max-workers": 1,
        "worker": {"gpus": 1, "cpus": 1, "memory": "2GiB"},
        "pricing": {"gpu-hour": {"NVIDIA-H100": 4.0, "NVIDIA-A100": 1.5, "default": 3.0}},
        "kubernetes": {"image": "registry.example/elastic-notebook:1.0", "namespace": "jhub",
                       "scheduler-service-type": "LoadBalancer", "pending-timeout": "1s",
                       "start-timeout": "90s", "connect-timeout": "5s", **kubernetes},
    })


def gpu_row(seconds: float) -> dict[str, Any]:
    return {"id": "cell-1", "cell": 1, "started": utcnow_iso(), "backend": "kubernetes",
            "cluster_id": None, "worker": "w", "device": "gpu", "seconds": seconds,
            "compute_seconds": seconds, "gpus": 1.0, "status": "ok"}


def test_falls_back_to_the_next_gpu_type_and_prices_the_one_it_got(k8s: Any) -> None:
    phases: list[tuple[str, str]] = []
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        manager = ElasticClusterManager(typed_settings(), owner="alice", tick=0.2)
        await manager.start()
        try:
            lease = await manager.acquire("kernel-1", backend="kubernetes",
                                          gpu_type="NVIDIA-H100,NVIDIA-A100",
                                          progress=lambda p, d: phases.append((p, d)))
            record = manager.find(lease["cluster_id"])
            seen["type"] = record.spec.gpu_type
            [cluster] = k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters"))
            seen["selector"] = cluster["spec"]["worker"]["spec"]["nodeSelector"]
            seen["row"] = manager.cell_finished(lease["lease_id"], lease["lease_secret"], gpu_row(3600.0))
        finally:
            await manager.close_all("test over")

    asyncio.run(scenario())
    assert seen["type"] == "NVIDIA-A100"
    assert seen["selector"] == {"nvidia.com/gpu.product": "NVIDIA-A100"}
    details = [d for _, d in phases]
    assert any("worker pod unschedulable" in d and d.endswith("waiting for GPU type NVIDIA-H100, 1 of 2")
               for d in details), details
    assert ("queued", "no node took a worker with GPU type NVIDIA-H100 within "
                      "kubernetes.pending-timeout; trying NVIDIA-A100") in phases
    assert any(d.endswith("waiting for GPU type NVIDIA-A100, 2 of 2") for d in details), details
    assert phases[-1] == ("ready", "got GPU type NVIDIA-A100")
    # the history row names the type the cell ran on and is priced with that type's price
    assert seen["row"]["gpu_type"] == "NVIDIA-A100" and seen["row"]["cost"] == pytest.approx(1.5)
    assert k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters")) == []


def test_every_type_unschedulable_is_one_error_naming_them(k8s: Any) -> None:
    async def scenario() -> None:
        manager = ElasticClusterManager(typed_settings(**{"gpu-type": ["NVIDIA-H100", "NVIDIA-L4"]}),
                                        owner="alice", tick=0.2)
        await manager.start()
        try:
            await manager.acquire("kernel-1", backend="kubernetes")  # the configured list
        finally:
            await manager.close_all("test over")

    with pytest.raises(ClusterStartError) as info:
        asyncio.run(scenario())
    message = info.value.message
    assert "no node can run the worker pod" in message and "didn't match Pod's node affinity/selector" in message
    assert "tried GPU types NVIDIA-H100, NVIDIA-L4 in order" in message
    assert k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters")) == []
    assert k8s.server.sync(lambda: k8s.server.list("v1", "pods")) == []
