"""A process kubelet for the API server double: Pods become local processes.

It plays three parts of a cluster, reading and writing only through the double's store
(on the double's event loop, woken by every change):

* the Deployment controller: a Deployment gets ``replicas`` Pods from its template, owned by
  it (no ReplicaSet in between), extra Pods are deleted, ``status.readyReplicas`` and
  ``observedGeneration`` are kept up to date;
* the kubelet: each Pod's first container runs as a local process (``command`` + ``args``, or
  ``args`` alone, as the dask image's entrypoint runs them) with the container's env,
  ``$(VAR)`` expanded as Kubernetes does, in its own process group, killed when the Pod is
  deleted. Secret volumes are written to a private per-Pod directory and the mount paths
  in the container's args and env are rewritten to it (a Pod whose Secret does not exist
  yet waits, as in ContainerCreating). Each Pod gets its own loopback address (127.0.x.y) as its Pod IP; the network
  shim in ``netshim/`` makes the process bind and connect from it, so two clusters can both
  listen on 8786. The Pod is Running once started and Ready when its readiness probe
  (``tcpSocket`` or ``httpGet``, against the Pod IP) passes. A process that exits leaves the
  container terminated and the Pod not ready (no restarts);
* Services and cluster DNS: a Service's address is the first ready Pod its selector picks
  (``spec.clusterIP``, and the LoadBalancer ingress for that type); the names
  ``svc.ns``, ``svc.ns.svc`` and ``svc.ns.svc.cluster.local`` go into a hosts file that the
  shim resolves from, in Pod processes, in the operator and (``install_resolver``) in the
  test process. Service ports are taken to equal their target ports (no proxy).

"Images" are not pulled: every container runs from this Python environment, with
``dask``, ``dask-scheduler`` and ``dask-worker`` commands provided (the dask image has them;
recent ``distributed`` no longer installs the last two). A container whose env sets
``K8S_DOUBLE_PYTHON`` runs them with that interpreter instead: another image, say one
whose environment lacks what the notebook installed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp

from .apiserver import APIServer, match_labels, now_iso

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netshim")
PROBE_PERIOD_CAP = 0.5  # seconds; probes run at most this far apart, to keep tests quick
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, unknown ones kept,
    ``$$`` escapes a dollar."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def mount_secrets(server: APIServer, pod: dict[str, Any], container: dict[str, Any],
                  root: str) -> dict[str, str] | None:
    """Secret volumes of ``container``, written under ``root`` (one directory per volume,
    one file per key, private to this user): ``{mountPath: directory}``. ``None`` while a
    Secret does not exist yet (a kubelet keeps such a Pod in ContainerCreating)."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        source = (volumes.get(mount["name"]) or {}).get("secret")
        if not source:
            continue
        secret = server.get("v1", "secrets", source["secretName"], pod["metadata"]["namespace"])
        if secret is None:
            return None
        folder = os.path.join(root, mount["name"])
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for key, value in (secret.get("data") or {}).items():
            path = os.path.join(folder, key)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(value))
        mounts[mount["mountPath"]] = folder
    return mounts


def at_mounts(text: str, mounts: dict[str, str]) -> str:
    """``text`` (an argument, an env value) with mount paths turned into where the
    volumes really are in this process kubelet."""
    for path, folder in mounts.items():
        if text == path:
            return folder
        text = text.replace(path.rstrip("/") + "/", folder + "/")
    return text


def _ports_free(ip: str, ports: tuple[int, ...]) -> bool:
    """Whether nothing listens on ``ip`` at any of ``ports`` (another process kubelet's Pod)."""
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind((ip, port))
            except OSError:
                return False
    return True


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])


class ProcessKubelet:
    def __init__(self, server: APIServer, *, interval: float = 0.2) -> None:
        self.server = server
        self.interval = interval
        self.workdir = tempfile.mkdtemp(prefix="process-kubelet-")
        self.hosts_file = os.path.join(self.workdir, "hosts.json")
        self.bin = os.path.join(self.workdir, "image-bin")
        self.hosts: dict[str, str] = {}
        self.processes: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.ips: dict[tuple[str, str], str] = {}
        self.ready: dict[tuple[str, str], bool] = {}
        self._probes: dict[tuple[str, str], asyncio.Task[None]] = {}
        # a random 127.0.N.0/24 per kubelet, and addresses whose Dask ports are taken are
        # skipped: test sessions running side by side on one machine must not share Pod IPs
        # (a worker would join, or a client reach, the other session's scheduler on 8786)
        self._next_ip = int(ipaddress.IPv4Address(f"127.0.{random.randint(1, 250)}.1"))
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._write_hosts()
        self._write_image_bin()

    # ------------------------------------------------------------------ lifecycle
    def env(self) -> dict[str, str]:
        """Environment that gives a process cluster DNS (for the operator, say)."""
        path = os.pathsep.join(filter(None, [SHIM, os.environ.get("PYTHONPATH", "")]))
        return {"PYTHONPATH": path, "K8S_DOUBLE_HOSTS": self.hosts_file}

    def start(self) -> ProcessKubelet:
        async def go() -> None:
            self._wake = asyncio.Event()
            self.server.on_change.append(self._wake.set)
            self._task = asyncio.ensure_future(self._run())

        self.server.pod_logs = self.logs
        self.server.call(go())
        return self

    def stop(self) -> None:
        async def halt() -> None:
            if self._wake is not None and self._wake.set in self.server.on_change:
                self.server.on_change.remove(self._wake.set)
            for task in [self._task, *self._probes.values()]:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

        self.server.call(halt())
        for key in list(self.processes):
            self._kill(key)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def live(self) -> list[str]:
        """Names of Pods whose process is running."""
        return [name for (_, name), p in self.processes.items() if p.poll() is None]

    def logs(self, namespace: str, name: str) -> str | None:
        try:
            with open(self._log_path((namespace, name)), errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def _volumes(self, key: tuple[str, str]) -> str:
        return os.path.join(self.workdir, "volumes", f"{key[0]}_{key[1]}")

    def _log_path(self, key: tuple[str, str]) -> str:
        return os.path.join(self.workdir, f"{key[0]}_{key[1]}.log")

    def _write_image_bin(self) -> None:
        os.makedirs(self.bin, exist_ok=True)
        for name, module in {"dask": "dask", "dask-scheduler": "distributed.cli.dask_scheduler",
                             "dask-worker": "distributed.cli.dask_worker"}.items():
            path = os.path.join(self.bin, name)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\nexec "${{K8S_DOUBLE_PYTHON:-{sys.executable}}}" -m {module} "$@"\n')
            os.chmod(path, 0o755)

    def _write_hosts(self) -> None:
        tmp = self.hosts_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.hosts, f)
        os.replace(tmp, self.hosts_file)

    # ------------------------------------------------------------------ reconcile loop
    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self.reconcile()
            except Exception as exc:  # keep going, as a kubelet does
                print(f"process kubelet: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def reconcile(self) -> None:
        s = self.server
        for dep in s.list("apps/v1", "deployments"):
            self._deployment(dep)
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in s.list("v1", "pods")}
        for key in list(self.processes):
            if key not in pods:
                await asyncio.get_running_loop().run_in_executor(None, self._kill, key)
        for key, pod in pods.items():
            started = pod.get("status", {}).get("phase") in ("Running", "Failed", "Succeeded")
            if key not in self.processes and not started:
                self._start_pod(key, pod)
            elif key in self.processes:
                self._check_exit(key, pod)
        for dep in s.list("apps/v1", "deployments"):
            self._deployment_status(dep)
        self._services()

    # ------------------------------------------------------------------ Deployment controller
    def _deployment(self, dep: dict[str, Any]) -> None:
        s, meta = self.server, dep["metadata"]
        if meta.get("deletionTimestamp"):
            return
        ns, uid = meta["namespace"], meta["uid"]
        pods = [p for p in s.list("v1", "pods", ns) if _owned_by(p, uid)]
        want = int(dep["spec"].get("replicas", 1))
        template = dep["spec"]["template"]
        for _ in range(want - len(pods)):
            tmeta = template.get("metadata") or {}
            s.put("v1", "pods", {
                "metadata": {"name": f"{meta['name']}-{uuid.uuid4().hex[:9]}-{uuid.uuid4().hex[:5]}",
                             "namespace": ns, "labels": dict(tmeta.get("labels") or {}),
                             "annotations": dict(tmeta.get("annotations") or {}),
                             "ownerReferences": [_owner(dep)]},
                "spec": json.loads(json.dumps(template["spec"])),
                "status": {"phase": "Pending", "conditions": []},
            }, ns)
        for extra in pods[want:] if len(pods) > want else []:
            s.delete("v1", "pods", extra["metadata"]["name"], ns)

    def _deployment_status(self, dep: dict[str, Any]) -> None:
        meta = dep["metadata"]
        pods = [p for p in self.server.list("v1", "pods", meta["namespace"]) if _owned_by(p, meta["uid"])]
        ready = sum(1 for p in pods if self.ready.get((meta["namespace"], p["metadata"]["name"])))
        status = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods),
                  "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": len(pods)}
        if dep.get("status") != status:
            self.server.put("apps/v1", "deployments", {**dep, "status": status})

    # ------------------------------------------------------------------ kubelet
    def _ip(self, key: tuple[str, str]) -> str:
        while key not in self.ips:
            ip = str(ipaddress.IPv4Address(self._next_ip))
            self._next_ip += 1
            if self._next_ip % 256 in (0, 255):
                self._next_ip += 2
            if _ports_free(ip, (8786, 8787, 8788)):
                self.ips[key] = ip
        return self.ips[key]

    def _container_env(self, pod: dict[str, Any], container: dict[str, Any], ip: str) -> dict[str, str]:
        fields = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": pod["metadata"]["namespace"],
                  "status.podIP": ip, "spec.nodeName": "process-node", "status.hostIP": "127.0.0.1"}
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = expand(str(item["value"]), env)
            elif "fieldRef" in (item.get("valueFrom") or {}):
                env[item["name"]] = fields.get(item["valueFrom"]["fieldRef"]["fieldPath"], "")
        return env

    def _start_pod(self, key: tuple[str, str], pod: dict[str, Any]) -> None:
        ns, name = key
        container = pod["spec"]["containers"][0]
        mounts = mount_secrets(self.server, pod, container, self._volumes(key))
        if mounts is None:
            return  # its Secret is not there yet; the next change (its creation) retries
        ip = self._ip(key)
        env = {k: at_mounts(v, mounts) for k, v in self._container_env(pod, container, ip).items()}
        argv = [at_mounts(expand(a, env), mounts)
                for a in (container.get("command") or []) + (container.get("args") or [])]
        base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        path = os.pathsep.join([self.bin, os.path.dirname(sys.executable), base.get("PATH", "")])
        proc_env = {**base, **env, **self.env(), "PATH": path, "HOSTNAME": name,
                    "K8S_DOUBLE_POD_IP": ip, "K8S_DOUBLE_POD_NAME": name}
        if argv and not os.path.isabs(argv[0]):
            argv[0] = shutil.which(argv[0], path=path) or argv[0]
        with open(self._log_path(key), "ab") as log:
            try:
                proc = subprocess.Popen(argv, env=proc_env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir)
            except OSError as exc:
                self._status(pod, ip, ready=False, state={"waiting": {
                    "reason": "RunContainerError", "message": str(exc)}})
                return
        self.processes[key] = proc
        self.ready[key] = False
        self._status(pod, ip, ready=False)
        self._probes[key] = asyncio.ensure_future(self._probe(key, container, ip))

    def _status(self, pod: dict[str, Any], ip: str, *, ready: bool, state: dict[str, Any] | None = None,
                phase: str = "Running") -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        current = self.server.get("v1", "pods", key[1], key[0])
        if current is None:
            return
        c = pod["spec"]["containers"][0]
        flag = "True" if ready else "False"
        status = {
            "phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
            "startTime": current.get("status", {}).get("startTime") or now_iso(),
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                           {"type": "ContainersReady", "status": flag}, {"type": "Ready", "status": flag}],
            "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "ready": ready,
                                   "restartCount": 0, "started": "running" in (state or {"running": 1}),
                                   "state": state or {"running": {"startedAt": now_iso()}}}],
        }
        spec = {**current["spec"], "nodeName": "process-node"}
        self.server.put("v1", "pods", {**current, "spec": spec, "status": status})

    async def _probe(self, key: tuple[str, str], container: dict[str, Any], ip: str) -> None:
        probe = container.get("readinessProbe")
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        period = min(float((probe or {}).get("periodSeconds", 10)), PROBE_PERIOD_CAP)
        # as a kubelet does: a ready pod turns unready only after failureThreshold (3)
        # failures in a row; one slow answer on a loaded machine must not pull the pod out
        # of its Service (the operator's autoscaler then backs off for 60 s)
        threshold, failures = max(1, int((probe or {}).get("failureThreshold", 3))), 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                proc = self.processes.get(key)
                if proc is None or proc.poll() is not None:
                    return
                ok = await self._check(session, probe, ports, ip)
                failures = 0 if ok else failures + 1
                if not ok and self.ready.get(key) and failures < threshold:
                    ok = True
                if ok != self.ready.get(key):
                    self.ready[key] = ok
                    pod = self.server.get("v1", "pods", key[1], key[0])
                    if pod is not None:
                        self._status(pod, ip, ready=ok)
                await asyncio.sleep(period)

    @staticmethod
    async def _check(session: aiohttp.ClientSession, probe: dict[str, Any] | None, ports: dict[str, int],
                     ip: str) -> bool:
        if not probe:
            return True
        try:
            if "tcpSocket" in probe:
                port = probe["tcpSocket"]["port"]
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, ports.get(port, port)), 2)
                writer.close()
                return True
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = ports.get(get["port"], get["port"])
                async with session.get(f"http://{ip}:{port}{get.get('path', '/')}") as resp:
                    return 200 <= resp.status < 400
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError):
            return False
        return True  # exec probes are not run: taken as passing

    def _check_exit(self, key: tuple[str, str], pod: dict[str, Any]) -> None:
        proc = self.processes[key]
        code = proc.poll()
        if code is None or pod.get("status", {}).get("containerStatuses", [{}])[0].get("state", {}).get(
                "terminated"):
            return
        self.ready[key] = False
        self._status(pod, self.ips[key], ready=False, phase="Failed" if code else "Succeeded",
                     state={"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}})

    def _kill(self, key: tuple[str, str]) -> None:
        proc = self.processes.pop(key, None)
        self.ready.pop(key, None)
        shutil.rmtree(self._volumes(key), ignore_errors=True)
        task = self._probes.pop(key, None)
        if task is not None:
            self.server.loop.call_soon_threadsafe(task.cancel)
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 5  # the group's other members (a nanny's worker)
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ Services + DNS
    def _services(self) -> None:
        s = self.server
        hosts: dict[str, str] = {}
        for svc in s.list("v1", "services"):
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            selector = (svc.get("spec") or {}).get("selector") or {}
            ip = None
            if selector:
                term = ",".join(f"{k}={v}" for k, v in selector.items())
                for pod in s.list("v1", "pods", ns):
                    key = (ns, pod["metadata"]["name"])
                    if match_labels(pod, term) and self.ready.get(key):
                        ip = self.ips[key]
                        break
            if ip is None:
                continue
            for host in (f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
                hosts[host] = ip
            spec, status = dict(svc.get("spec") or {}), dict(svc.get("status") or {})
            changed = spec.get("clusterIP") != ip
            spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
            if spec.get("type") == "LoadBalancer":
                ingress = [{"ip": ip}]
                changed |= (status.get("loadBalancer") or {}).get("ingress") != ingress
                status["loadBalancer"] = {"ingress": ingress}
            if changed:
                s.put("v1", "services", {**svc, "spec": spec, "status": status})
        if hosts != self.hosts:
            self.hosts = hosts
            self._write_hosts()


@contextlib.contextmanager
def install_resolver(kubelet: ProcessKubelet) -> Iterator[None]:
    """Cluster DNS in the test process too (KubeCluster resolves ``svc.ns`` before it
    falls back to a port-forward)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,  # noqa: A002
                    flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str):
            name = name.lower().rstrip(".")
            ip = kubelet.hosts.get(name)
            if ip is not None:
                return real(ip, port, socket.AF_INET, type, proto, flags)
            if name.endswith(".svc") or name.endswith(".cluster.local"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, family, type, proto, flags)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real  # type: ignore[assignment]
