"""``PodWatch``: what the Kubernetes backend reads from pods and events of a running cluster
and tells the cells (lost worker pods with the API's reason, blocked scale-ups), against the
API server double with pods written as the kubelet, scheduler and eviction API would."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_elastic.backends.kubernetes.backend import PodWatch, kube_api, loss_reason

from .conftest import run

pytestmark = pytest.mark.k8s
LABELS = {"dask.org/cluster-name": "c1", "dask.org/component": "worker"}


def pod(name: str, ip: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "jhub", "labels": dict(LABELS),
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "gpu-node-7", "containers": [
                {"name": "worker", "image": "img", "resources": {"limits": {"memory": "8Gi"}}}]},
            "status": {"phase": "Running", "podIP": ip, **status}}


def looks(k8s: Any, steps: list[Any]) -> list[list[dict[str, Any]]]:
    """Run ``steps`` (callables changing the API's objects) with a look after each."""
    watch = PodWatch("jhub", "c1", "tcp://127.0.0.1:1", 1.0)

    async def go() -> list[list[dict[str, Any]]]:
        api = await kube_api()
        seen = []
        for step in steps:
            step()
            seen.append(await watch.look(api))
        return seen

    return run(go())  # type: ignore[no-any-return]


def test_lost_worker_pods_are_told_with_the_api_reason(k8s: Any) -> None:
    s = k8s.server
    for i in range(1, 5):
        s.sync(s.put, "v1", "pods", pod(f"c1-w{i}", f"10.0.0.{i}"), "jhub")
    preempted = pod("c1-w1", "10.0.0.1", conditions=[{
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": "default-scheduler: preempting to accommodate a higher priority pod"}])
    evicted = pod("c1-w2", "10.0.0.2", phase="Failed", reason="Evicted",
                  message="The node was low on resource: memory.")
    oom = pod("c1-w3", "10.0.0.3", containerStatuses=[{"name": "worker", "state": {"terminated": {
        "reason": "OOMKilled", "exitCode": 137}}}])

    def disrupt() -> None:
        for p in (preempted, evicted, oom):
            s.sync(s.put, "v1", "pods", p, "jhub")
        w4 = s.sync(s.get, "v1", "pods", "c1-w4", "jhub")
        s.sync(s.event, w4, "Killing", "Stopping container worker", "Normal")
        s.sync(s.delete, "v1", "pods", "c1-w4", "jhub")

    first, second, third = looks(k8s, [lambda: None, disrupt, lambda: None])
    assert first == [{"kind": "scale-ok"}]  # the first look says where things stand
    lost = {m["pod"]: m for m in second}
    assert set(lost) == {"c1-w1", "c1-w2", "c1-w3", "c1-w4"}, second
    assert lost["c1-w1"]["reason"].startswith("PreemptionByScheduler: default-scheduler: preempting")
    assert lost["c1-w2"]["reason"] == "Evicted: The node was low on resource: memory."
    assert lost["c1-w3"]["reason"] == "OOMKilled: the container ran out of memory (its limit is 8Gi)"
    assert lost["c1-w4"]["reason"] == "Killing: Stopping container worker"
    assert {m["node"] for m in second} == {"gpu-node-7"} and lost["c1-w2"]["ip"] == "10.0.0.2"
    assert third == [], "each loss is told once"


def test_a_container_restarted_in_place_is_a_lost_worker(k8s: Any) -> None:
    """A Deployment's pod stays and its container restarts: OOM-killed, the reason is in
    ``lastState``; each restart is told."""
    s = k8s.server
    s.sync(s.put, "v1", "pods", pod("c1-w1", "10.0.0.1", containerStatuses=[
        {"name": "worker", "restartCount": 0, "state": {"running": {}}}]), "jhub")

    def oom(n: int) -> Any:
        return lambda: s.sync(s.put, "v1", "pods", pod("c1-w1", "10.0.0.1", containerStatuses=[
            {"name": "worker", "restartCount": n, "state": {"running": {}},
             "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]), "jhub")

    told = looks(k8s, [lambda: None, oom(1), lambda: None, oom(2)])
    assert [m["pod"] for m in told[1]] == ["c1-w1"] and told[2] == [] and len(told[3]) == 1
    assert told[1][0]["reason"] == "OOMKilled: the container ran out of memory (its limit is 8Gi)"


def test_loss_reason_of_a_plain_delete() -> None:
    assert loss_reason(pod("p", "1.2.3.4"), [], gone=True).startswith("deleted through the Kubernetes API")


def test_blocked_scale_up_is_told_and_cleared(k8s: Any) -> None:
    s = k8s.server
    s.sync(s.put, "v1", "pods", pod("c1-w1", "10.0.0.1"), "jhub")
    pending = pod("c1-w2", "", phase="Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    rs = {"kind": "ReplicaSet", "metadata": {"name": "c1-default-worker-abc-7d4b9c", "namespace": "jhub",
                                             "uid": "u1"}}

    def quota() -> None:
        s.sync(s.event, rs, "FailedCreate", 'Error creating: pods "c1-default-worker-abc-x" is forbidden: '
               "exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, used: "
               "requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1", "Warning")

    def unschedulable() -> None:
        s.sync(s.delete, "v1", "events", s.sync(s.list, "v1", "events", "jhub")[0]["metadata"]["name"], "jhub")
        s.sync(s.put, "v1", "pods", pending, "jhub")

    def scheduled() -> None:
        s.sync(s.put, "v1", "pods", pod("c1-w2", "10.0.0.2"), "jhub")

    told = looks(k8s, [lambda: None, quota, lambda: None, unschedulable, scheduled])
    assert told[0] == [{"kind": "scale-ok"}]
    assert told[1][0]["kind"] == "scale-blocked" and told[1][0]["reason"].startswith(
        "quota exceeded: Error creating: pods") and "exceeded quota: gpu-quota" in told[1][0]["reason"]
    assert told[2] == []  # unchanged: not told again
    assert told[3] == [{"kind": "scale-blocked", "reason": "worker pod c1-w2 is unschedulable: "
                        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    assert told[4] == [{"kind": "scale-ok"}]
