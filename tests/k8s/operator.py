"""A stand-in for the Dask operator (and the kubelet) in tests.

It reconciles the custom resources held by the API server double the way the real
operator does (dask_kubernetes/operator/controller/controller.py, read for behaviour):
DaskCluster -> phase Created, a scheduler Deployment + Pod, the scheduler Service and the
``<name>-default`` DaskWorkerGroup, then phase Running once the Service has an address;
worker-group replicas -> one Deployment + Pod per worker, scale-down by asking the
scheduler which workers to retire (``workers_to_close``/``retire_workers``) and deleting
only those; DaskAutoscaler -> every ``interval`` ask ``adaptive_target``, clamp to
[minimum, maximum], step down by at most 25 %, then cool down.

Pods become local ``dask scheduler`` / ``dask worker`` processes started from the pod's own
container args. There is no cluster DNS, so the scheduler Service is given a LoadBalancer
ingress of 127.0.0.1 and the ports the local scheduler really listens on, and workers get
that address in DASK_SCHEDULER_ADDRESS. Faults a real cluster shows are played from
settings: ``nodes`` (GPU capacity and labels -> Unschedulable with the kube-scheduler's
message), ``bad_images`` (ErrImagePull/ImagePullBackOff), ``gpu_quota``
(FailedCreate: exceeded quota), ``pull_delay`` (a Pulling phase).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from distributed.core import rpc
from distributed.security import Security

from .apiserver import DASK, APIServer
from .kubelet import at_mounts, mount_secrets

GPU = "nvidia.com/gpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _owner(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
             "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


class StandInOperator:
    """Runs on the API server double's loop; started and stopped by the test fixture."""

    def __init__(self, server: APIServer, *, interval: float = 0.3, cooldown: float = 0.5) -> None:
        self.server = server
        self.interval = interval
        self.cooldown = cooldown
        self.nodes: list[dict[str, Any]] = [
            {"name": f"gpu-node-{i}", "gpus": 1, "labels": {"nvidia.com/gpu.product": "NVIDIA-A100"}}
            for i in range(3)
        ]
        self.bad_images: set[str] = set()
        self.pull_delay: dict[str, float] = {}
        self.gpu_quota: int | None = None
        #: Kueue's pod webhook: pods labelled with a LocalQueue are created gated until
        #: ``kueue_admit`` (Kueue admitting the workload) removes the gate.
        self.kueue_gate = False
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.scheduler_addr: dict[str, tuple[str, int, int]] = {}
        # cluster -> (scheme, rpc connection args): TLS with the pod's mounted Secret
        self.scheduler_comm: dict[str, tuple[str, dict[str, Any]]] = {}
        self.scale_log: list[tuple[str, int, int]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy: set[str] = set()
        self._pulling_since: dict[str, float] = {}
        self._cooldown_until: dict[str, float] = {}
        self._next_autoscale = 0.0
        self._tmp = tempfile.mkdtemp(prefix="standin-operator-")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> StandInOperator:
        async def go() -> None:
            self._wake = asyncio.Event()
            self.server.on_change.append(self._wake.set)
            self._task = asyncio.ensure_future(self._run())

        self.server.call(go())
        return self

    def stop(self) -> None:
        async def halt() -> None:
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except (asyncio.CancelledError, Exception):
                    pass

        self.server.call(halt())
        for pid in list(self.processes):
            self._kill(pid)

    def live(self) -> list[str]:
        """Names of pods whose process is still running."""
        return [name for name, p in self.processes.items() if p.poll() is None]

    def _kill(self, pod: str) -> None:
        proc = self.processes.pop(pod, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception as exc:  # keep reconciling, like kopf does
                print(f"stand-in operator: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self) -> None:
        s = self.server
        for dc in s.list(DASK, "daskclusters"):
            if not dc.get("status", {}).get("phase"):
                self._create_components(dc)
        for pod in s.list("v1", "pods"):
            await self._kubelet(pod)
        live_pods = {p["metadata"]["name"] for p in s.list("v1", "pods")}
        for name in list(self.processes):
            if name not in live_pods:
                await asyncio.get_running_loop().run_in_executor(None, self._kill, name)
        for wg in s.list(DASK, "daskworkergroups"):
            await self._scale_group(wg)
        if time.monotonic() >= self._next_autoscale:
            self._next_autoscale = time.monotonic() + self.interval
            for auto in s.list(DASK, "daskautoscalers"):
                await self._autoscale(auto)

    def _create_components(self, dc: dict[str, Any]) -> None:
        s, name, ns = self.server, dc["metadata"]["name"], dc["metadata"]["namespace"]
        dc = s.put(DASK, "daskclusters", {**dc, "status": {"phase": "Created"}})
        spec = dc["spec"]
        labels = {**(spec["scheduler"].get("metadata", {}).get("labels") or {}),
                  "dask.org/cluster-name": name, "dask.org/component": "scheduler"}
        dep = s.put("apps/v1", "deployments", {
            "metadata": {"name": f"{name}-scheduler", "namespace": ns, "labels": labels,
                         "ownerReferences": _owner(dc)},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec["scheduler"]["spec"]}}})
        self._new_pod(dep, f"{name}-scheduler-{uuid.uuid4().hex[:5]}", labels, spec["scheduler"]["spec"])
        s.put("v1", "services", {
            "metadata": {"name": f"{name}-scheduler", "namespace": ns, "labels": labels,
                         "ownerReferences": _owner(dc)},
            "spec": dict(spec["scheduler"]["service"]), "status": {"loadBalancer": {}}})
        wg_labels = {**(dc["metadata"].get("labels") or {}), "dask.org/cluster-name": name,
                     "dask.org/component": "workergroup"}
        s.put(DASK, "daskworkergroups", {
            "metadata": {"name": f"{name}-default", "namespace": ns, "labels": wg_labels,
                         "ownerReferences": _owner(dc)},
            "spec": {"cluster": name, "worker": spec["worker"]}})
        s.put(DASK, "daskclusters", {**dc, "status": {"phase": "Pending"}})

    def _new_pod(self, owner: dict[str, Any], name: str, labels: dict[str, str],
                 pod_spec: dict[str, Any], env: dict[str, str] | None = None) -> None:
        spec = {**pod_spec, "containers": [dict(c) for c in pod_spec["containers"]]}
        if self.kueue_gate and "kueue.x-k8s.io/queue-name" in labels:
            spec["schedulingGates"] = [{"name": "kueue.x-k8s.io/admission"}]
        for c in spec["containers"]:
            c["env"] = list(c.get("env") or []) + [{"name": k, "value": v} for k, v in (env or {}).items()]
        self.server.put("v1", "pods", {
            "metadata": {"name": name, "namespace": owner["metadata"]["namespace"], "labels": labels,
                         "ownerReferences": _owner(owner)},
            "spec": spec,
            "status": {"phase": "Pending", "conditions": []},
        })

    def kueue_admit(self) -> list[str]:
        """Kueue admits every gated pod: its gate is removed (call on the server's loop)."""
        admitted = []
        for pod in self.server.list("v1", "pods"):
            if pod["spec"].pop("schedulingGates", None):
                pod.setdefault("status", {})["conditions"] = []
                self.server.put("v1", "pods", pod)
                admitted.append(pod["metadata"]["name"])
        self._wake.set()
        return admitted

    # ------------------------------------------------------------------ kubelet + kube-scheduler
    def _fits(self, pod: dict[str, Any]) -> str | None:
        """None if some node can take the pod, else the kube-scheduler's message."""
        limits = pod["spec"]["containers"][0].get("resources", {}).get("limits", {})
        want = int(limits.get(GPU, 0))
        selector = pod["spec"].get("nodeSelector") or {}
        used: dict[str, int] = {}
        for other in self.server.list("v1", "pods"):
            node = other["spec"].get("nodeName")
            if node and other is not pod:
                used[node] = used.get(node, 0) + int(
                    other["spec"]["containers"][0].get("resources", {}).get("limits", {}).get(GPU, 0))
        n = len(self.nodes)
        mismatch = [nd for nd in self.nodes if any(nd["labels"].get(k) != v for k, v in selector.items())]
        short = [nd for nd in self.nodes if nd not in mismatch and nd["gpus"] - used.get(nd["name"], 0) < want]
        fit = [nd for nd in self.nodes if nd not in mismatch and nd not in short]
        if fit:
            pod["spec"]["nodeName"] = fit[0]["name"]
            return None
        reasons = []
        if short:
            reasons.append(f"{len(short)} Insufficient {GPU}")
        if mismatch:
            reasons.append(f"{len(mismatch)} node(s) didn't match Pod's node affinity/selector")
        return (f"0/{n} nodes are available: {', '.join(reasons)}. preemption: 0/{n} nodes are "
                f"available: {n} No preemption victims found for incoming pod.")

    async def _kubelet(self, pod: dict[str, Any]) -> None:
        s, name = self.server, pod["metadata"]["name"]
        if name in self._busy:
            return
        status = pod.setdefault("status", {})
        if status.get("phase") != "Pending" or status.get("failed"):
            return
        container = pod["spec"]["containers"][0]
        image = container["image"]
        if pod["spec"].get("schedulingGates"):  # what the kube-scheduler reports for it
            if not any(c.get("reason") == "SchedulingGated" for c in status.get("conditions", [])):
                status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                         "reason": "SchedulingGated",
                                         "message": "Scheduling is blocked due to non-empty "
                                                    "scheduling gates"}]
                s.put("v1", "pods", pod)
            return
        if mount_secrets(self.server, pod, container, os.path.join(self._tmp, "volumes", name)) is None:
            return  # its Secret is not there yet (ContainerCreating); retried on the next change
        if not pod["spec"].get("nodeName"):
            message = self._fits(pod)
            if message is not None:
                if not any(c.get("reason") == "Unschedulable" for c in status.get("conditions", [])):
                    status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                             "reason": "Unschedulable", "message": message}]
                    s.put("v1", "pods", pod)
                    s.event(pod, "FailedScheduling", message, "Warning")
                return
            status["conditions"] = [{"type": "PodScheduled", "status": "True"}]
            s.put("v1", "pods", pod)
            s.event(pod, "Scheduled", f"Successfully assigned {pod['metadata']['namespace']}/{name} "
                                      f"to {pod['spec']['nodeName']}")
            s.event(pod, "Pulling", f'Pulling image "{image}"')
            self._pulling_since[name] = time.monotonic()
            return
        if image in self.bad_images:
            status["failed"] = True
            status["containerStatuses"] = [{"name": container["name"], "image": image, "ready": False,
                                            "restartCount": 0, "state": {"waiting": {
                                                "reason": "ErrImagePull",
                                                "message": f'rpc error: code = NotFound desc = failed to pull and '
                                                           f'unpack image "{image}": not found'}}}]
            s.put("v1", "pods", pod)
            s.event(pod, "Failed", f'Failed to pull image "{image}": not found', "Warning")
            return
        if time.monotonic() - self._pulling_since.get(name, 0) < self.pull_delay.get(image, 0.0):
            return
        self._busy.add(name)
        try:
            s.event(pod, "Pulled", f'Successfully pulled image "{image}"')
            if pod["metadata"]["labels"].get("dask.org/component") == "scheduler":
                await self._start_scheduler(pod)
            else:
                await self._start_worker(pod)
        finally:
            self._busy.discard(name)

    def _args(self, pod: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        container = pod["spec"]["containers"][0]
        mounts = mount_secrets(self.server, pod, container,
                               os.path.join(self._tmp, "volumes", pod["metadata"]["name"])) or {}
        env = {e["name"]: at_mounts(e.get("value", ""), mounts) for e in container.get("env") or []}
        args = [at_mounts(a.replace("$(DASK_WORKER_NAME)", env.get("DASK_WORKER_NAME", "")), mounts)
                for a in container["args"]]
        return args, env

    def _address(self, cluster: str) -> tuple[str, dict[str, Any]]:
        host, port, _ = self.scheduler_addr[cluster]
        scheme, args = self.scheduler_comm.get(cluster, ("tcp", {}))
        return f"{scheme}://{host}:{port}", args

    @staticmethod
    def _comm_security(args: list[str]) -> tuple[str, dict[str, Any]]:
        """The scheduler's scheme and what a client needs to reach it (its TLS files)."""
        opts = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--tls-")}
        if "--tls-ca-file" not in opts:
            return "tcp", {}
        security = Security(tls_ca_file=opts["--tls-ca-file"], tls_client_cert=opts["--tls-cert"],
                            tls_client_key=opts["--tls-key"], require_encryption=True)
        return "tls", security.get_connection_args("client")

    def _running(self, pod: dict[str, Any], ready: bool) -> None:
        if self.server.get("v1", "pods", pod["metadata"]["name"], pod["metadata"]["namespace"]) is None:
            return  # deleted meanwhile; reconcile kills its process
        c = pod["spec"]["containers"][0]
        pod["status"] = {
            "phase": "Running", "podIP": "127.0.0.1",
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Initialized", "status": "True"},
                           {"type": "ContainersReady", "status": str(ready)},
                           {"type": "Ready", "status": str(ready)}],
            "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": ready,
                                   "restartCount": 0, "started": True,
                                   "state": {"running": {"startedAt": "now"}}}],
        }
        self.server.put("v1", "pods", pod)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(os.path.join(self._tmp, f"{name}.log"), "wb")
        self.processes[name] = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        log.close()

    async def _start_scheduler(self, pod: dict[str, Any]) -> None:
        args, env = self._args(pod)
        assert args[:2] == ["dask", "scheduler"], args
        port, dash = free_port(), free_port()
        rest, i = [], 2
        while i < len(args):
            if args[i] in ("--host", "--port", "--dashboard-address"):
                i += 2
                continue
            rest.append(args[i])
            i += 1
        argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                "--port", str(port), "--dashboard-address", f"127.0.0.1:{dash}", *rest]
        name = pod["metadata"]["name"]
        self._spawn(name, argv, env)
        self._running(pod, ready=False)
        cluster = pod["metadata"]["labels"]["dask.org/cluster-name"]
        for _ in range(600):
            if self.processes[name].poll() is not None:
                return
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                await asyncio.sleep(0.05)
        self.scheduler_addr[cluster] = ("127.0.0.1", port, dash)
        self.scheduler_comm[cluster] = self._comm_security(args)
        self._running(pod, ready=True)
        s, ns = self.server, pod["metadata"]["namespace"]
        svc = s.get("v1", "services", f"{cluster}-scheduler", ns)
        if svc is not None:
            for p in svc["spec"]["ports"]:
                p["port"] = port if p["name"] == "tcp-comm" else dash
            svc["status"] = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
            s.put("v1", "services", svc)
            dc = s.get(DASK, "daskclusters", cluster, ns)
            if dc is not None:
                s.put(DASK, "daskclusters", {**dc, "status": {"phase": "Running"}})

    async def _start_worker(self, pod: dict[str, Any]) -> None:
        args, env = self._args(pod)
        assert args[:2] == ["dask", "worker"], args
        cluster = pod["metadata"]["labels"]["dask.org/cluster-name"]
        address, _ = self._address(cluster)
        rest, i = [], 2
        while i < len(args):
            if args[i] == "--dashboard-address":
                i += 2
                continue
            if args[i] == "--preload" and importlib.util.find_spec(args[i + 1]) is None:
                i += 2  # the module is not written yet in this tree
                continue
            if args[i] == "--nthreads":
                rest += ["--nthreads", "1"]
                i += 2
                continue
            rest.append(args[i])
            i += 1
        env = {**env, "DASK_SCHEDULER_ADDRESS": address}
        argv = [sys.executable, "-m", "distributed.cli.dask_worker", "--no-dashboard",
                "--host", "127.0.0.1", "--no-nanny", *rest]
        self._spawn(pod["metadata"]["name"], argv, env)
        self._running(pod, ready=True)

    # ------------------------------------------------------------------ worker groups
    async def _scale_group(self, wg: dict[str, Any]) -> None:
        s, name, ns = self.server, wg["metadata"]["name"], wg["metadata"]["namespace"]
        cluster = wg["spec"]["cluster"]
        want = int(wg["spec"]["worker"].get("replicas") or 0)
        deps = s.list("apps/v1", "deployments", ns, f"dask.org/workergroup-name={name}")
        if want > len(deps):
            for _ in range(want - len(deps)):
                self._add_worker(wg, cluster)
        elif want < len(deps) and cluster in self.scheduler_addr:
            address, args = self._address(cluster)
            async with rpc(address, connection_args=args) as scheduler:
                names = await scheduler.workers_to_close(n=len(deps) - want, attribute="name")
                if names:
                    await scheduler.retire_workers(names=list(names))
            for dep_name in names:
                s.delete("apps/v1", "deployments", str(dep_name), ns)

    def _add_worker(self, wg: dict[str, Any], cluster: str) -> None:
        s, ns = self.server, wg["metadata"]["namespace"]
        spec = wg["spec"]["worker"]
        labels = {**(spec.get("metadata", {}).get("labels") or {}), "dask.org/cluster-name": cluster,
                  "dask.org/workergroup-name": wg["metadata"]["name"], "dask.org/component": "worker"}
        dep_name = f"{wg['metadata']['name']}-worker-{uuid.uuid4().hex[:10]}"
        dep = s.put("apps/v1", "deployments", {
            "metadata": {"name": dep_name, "namespace": ns, "labels": labels, "ownerReferences": _owner(wg)},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec["spec"]}}})
        pod_name = f"{dep_name}-{uuid.uuid4().hex[:5]}"
        if self.gpu_quota is not None:
            used = sum(int(p["spec"]["containers"][0].get("resources", {}).get("limits", {}).get(GPU, 0))
                       for p in s.list("v1", "pods", ns))
            want = int(spec["spec"]["containers"][0].get("resources", {}).get("limits", {}).get(GPU, 0))
            if used + want > self.gpu_quota:
                rs = {**dep, "kind": "ReplicaSet", "metadata": {**dep["metadata"], "name": f"{dep_name}-7d4b9c"}}
                s.event(rs, "FailedCreate",
                        f'Error creating: pods "{pod_name}" is forbidden: exceeded quota: gpu-quota, '
                        f"requested: requests.{GPU}={want}, used: requests.{GPU}={used}, "
                        f"limited: requests.{GPU}={self.gpu_quota}", "Warning")
                return
        self._new_pod(dep, pod_name, labels, spec["spec"], env={"DASK_WORKER_NAME": dep_name})

    async def _autoscale(self, auto: dict[str, Any]) -> None:
        s, ns, spec = self.server, auto["metadata"]["namespace"], auto["spec"]
        cluster = spec["cluster"]
        if cluster not in self.scheduler_addr or time.monotonic() < self._cooldown_until.get(cluster, 0):
            return
        wg = s.get(DASK, "daskworkergroups", f"{cluster}-default", ns)
        if wg is None:
            return
        current = int(wg["spec"]["worker"].get("replicas") or 0)
        address, args = self._address(cluster)
        try:
            async with rpc(address, connection_args=args) as scheduler:
                desired = int(await asyncio.wait_for(scheduler.adaptive_target(), 5))
        except Exception:
            return
        desired = min(spec["maximum"], max(spec["minimum"], desired))
        if current > 0:
            desired = max(current - max(1, int(current * 0.25)), desired)
        if desired != current:
            wg["spec"]["worker"]["replicas"] = desired
            s.put(DASK, "daskworkergroups", wg)
            self.scale_log.append((cluster, current, desired))
            self._cooldown_until[cluster] = time.monotonic() + self.cooldown
