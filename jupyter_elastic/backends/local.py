"""The embedded default: a Dask scheduler and worker processes on this machine.

One worker per GPU where GPUs exist (``dask_cuda.LocalCUDACluster`` is not needed: each
worker process gets its own ``CUDA_VISIBLE_DEVICES`` and a ``GPU`` resource of 1); where
none exist, CPU workers that run the NumPy path and offer a ``CELL`` slot instead. Scaling
is Dask's own ``Adaptive``, taught to count the GPU demand of waiting cells so that two
concurrent cells get two workers, and told to retire idle workers after ``idle-timeout``.

Every cluster speaks TLS with mutual authentication: credentials made for it at start
(``Security.temporary()``: a key and a self-signed certificate, in memory only) go to its
workers and, through the lease's ``client`` field, to the kernel that holds the lease; a
process without them cannot connect to the scheduler, the nannies or the workers. The
scheduler's HTTP server serves only ``/health`` unless ``jupyter-elastic.dashboard`` is on
(docs/security.md explains why).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import threading
import time
from typing import Any

import dask.config
import psutil
from dask.utils import parse_timedelta
from distributed import LocalCluster, Nanny
from distributed.deploy.adaptive import Adaptive
from distributed.deploy.cluster import Cluster
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.security import Security

from ..errors import ConfigError
from ..models import ClusterSpec, WorkerDetail, client_credentials
from ..protocol import (
    CELL_PREFIX,
    CLOSING_TOPIC,
    CPU_RESOURCE,
    GPU_RESOURCE,
    IN_PROCESS_ADDRESS,
    INTERACTIVE_INTERVAL,
    QUIET_STDIO_ENV,
    WORKER_ENV,
    WORKER_PRELOAD,
    Progress,
)
from .base import ClusterHandle, ElasticBackend, gpu_metrics
from .devices import detect_gpus
from .scheduling import CellActivity, IdleGuard, cell_workers_needed

log = logging.getLogger("jupyter_elastic.backends.local")

#: The scheduler's HTTP routes when the dashboard is off: Dask's JSON, info and proxy
#: routes answer anyone who can reach the port (worker logs, call stacks, task names).
_HEALTH_ONLY = ["distributed.http.health"]



#: Dask's setting for how a nanny starts its worker process (``spawn`` by default).
_MP_METHOD = "distributed.worker.multiprocessing-method"
_fork_lock = threading.Lock()
_fork_starts = 0
_fork_restore: str | None = None


def _forking(starting: bool) -> None:
    """Count worker starts under way; while any is, nannies fork from the fork server.

    Dask reads ``distributed.worker.multiprocessing-method`` when a nanny starts its process;
    the setting is process-wide, so it is switched to ``forkserver`` only while one of our
    nannies starts (a user's own Dask cluster in the same kernel keeps ``spawn`` otherwise),
    and only when it is still Dask's default: a method set by an admin is left alone.
    """
    global _fork_starts, _fork_restore
    with _fork_lock:
        if starting:
            if _fork_starts == 0:
                method = dask.config.get(_MP_METHOD, "spawn")
                _fork_restore = method if method == "spawn" else None
                if _fork_restore is not None:
                    dask.config.set({_MP_METHOD: "forkserver"})
            _fork_starts += 1
        else:
            _fork_starts -= 1
            if _fork_starts == 0 and _fork_restore is not None:
                dask.config.set({_MP_METHOD: _fork_restore})
                _fork_restore = None


class _ForkedNanny(Nanny):
    """A nanny whose worker process is forked from multiprocessing's fork server, which
    imported Dask, NumPy and the worker preload once, instead of spawned as a fresh Python
    that imports them again (2-4 s of every worker start on a loaded 2-core machine)."""

    async def instantiate(self) -> Any:
        _forking(True)
        try:
            return await super().instantiate()
        finally:
            _forking(False)


def start_fork_server() -> bool:
    """Start the fork server now (it imports Dask, NumPy and the worker preload in the
    background), so the cluster's first worker only forks. Called when a scheduler starts:
    no worker starts, but the imports a worker would wait for are done ahead. False when
    the admin chose another start method (then workers start as Dask starts them)."""
    import multiprocessing
    import multiprocessing.forkserver

    import distributed.utils

    if dask.config.get(_MP_METHOD, "spawn") not in ("spawn", "forkserver") or _exiting.is_set():
        return False
    # Dask's own first use of the fork server imports pandas and others into *this* process
    # only to list them for the fork server to preload; ours lists what a worker needs.
    distributed.utils._forkserver_preload_set = True
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["jupyter_elastic.execution._no_sigint", "distributed", "numpy", WORKER_PRELOAD])
    # What a nanny puts into the environment before it starts a process (thread caps for
    # the maths libraries, a fixed hash seed): the fork server's children inherit the fork
    # server's environment, so it must hold them from its start.
    pre_spawn = {k: os.environ.get(k, str(v)) for k, v in
                 (dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}).items()
                 if v is not None}  # as Dask reads it: the environment wins, None unsets
    if os.environ.get("PYTHONHASHSEED") in (None, "0"):
        pre_spawn.setdefault("PYTHONHASHSEED", "6640")
    os.environ.update(pre_spawn)
    multiprocessing.forkserver.ensure_running()
    return True


#: Set when this process is exiting (``stop_fork_server``): no fork server starts after it.
_exiting = threading.Event()


def stop_fork_server(wait: float = 1.0) -> None:
    """The kernel is exiting and its clusters are closed: stop the fork server and ask
    multiprocessing's resource tracker to go, both children of this process. Never blocks
    for more than about ``2 * wait`` seconds.

    Left running, they made a kernel's exit wait: ipykernel, handling the shutdown request,
    signals every child of the kernel until none is left, the tracker ignores SIGTERM, and a
    fork server killed by it stayed an unreaped zombie, so the kernel took 29 s to exit and
    Jupyter sent its process group SIGTERM first. The fork server is told to stop (its
    "alive" pipe closed) and reaped, or killed and reaped after ``wait``. The tracker only
    has its pipe from this process closed: it exits (cleaning up what is registered with
    it) once no process holds that pipe any more, and is otherwise left alone."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker
    import signal

    _exiting.set()  # a cluster start still finishing must not start it again

    def reap(pid: int, kill: bool) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.02)
        if kill:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)

    for owner, fd_name, pid_name, kill in (
        (multiprocessing.forkserver._forkserver, "_forkserver_alive_fd", "_forkserver_pid", True),
        (multiprocessing.resource_tracker._resource_tracker, "_fd", "_pid", False),
    ):
        lock = getattr(owner, "_lock", None)  # multiprocessing's private state (3.8 and later)
        if lock is None or not lock.acquire(timeout=wait):
            continue
        try:
            fd, pid = getattr(owner, fd_name, None), getattr(owner, pid_name, None)
            if fd is None or pid is None:
                continue
            with contextlib.suppress(OSError):
                os.close(fd)
            setattr(owner, fd_name, None)
            setattr(owner, pid_name, None)
        finally:
            lock.release()
        reap(pid, kill)


class ElasticLocalCluster(LocalCluster):
    """A LocalCluster whose next worker takes the next free group of GPUs (when there are
    GPUs): one device per worker by default, ``worker.gpus`` devices each when that is more."""

    def __init__(self, *args: Any, gpu_groups: list[str] | None = None, **kwargs: Any) -> None:
        self._gpu_groups = list(gpu_groups or [])  # CUDA_VISIBLE_DEVICES values, e.g. "0,1"
        self._joins: dict[Any, int] = {}  # worker name -> how many times one of it joined
        super().__init__(*args, **kwargs)

    def _update_worker_status(self, op: str, msg: Any) -> None:
        # SpecCluster's own handling of a lost worker: after lost-worker-timeout, close its
        # nanny unless a worker of that name is registered *at that moment*. A stopped cell
        # kills its worker and the nanny restarts it under the same name; with stops a few
        # seconds apart, the timer of an earlier loss (long since healed) fired while a later
        # restart was under way, closed that nanny mid-restart (killing the worker the next
        # cell had just been given) and started another, which the scheduler refused
        # ("name taken"). Here a loss closes the nanny only if no worker of that name joined
        # since; a later loss has its own timer.
        if op == "add":
            for info in (msg.get("workers") or {}).values():
                name = info.get("name")
                self._joins[name] = self._joins.get(name, 0) + 1
            Cluster._update_worker_status(self, op, msg)
            return
        name = self.scheduler_info["workers"][msg]["name"]
        joins = self._joins.get(name, 0)

        def lost() -> None:
            if name not in self.worker_spec:  # retired or scaled away: its name is not reused
                self._joins.pop(name, None)
            if self._joins.get(name, 0) != joins or name not in self.workers:
                return
            if any(d.get("name") == name for d in self.scheduler_info["workers"].values()):
                return
            self._futures.add(asyncio.ensure_future(self.workers[name].close()))
            del self.workers[name]

        delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
        asyncio.get_running_loop().call_later(delay, lost)
        Cluster._update_worker_status(self, op, msg)

    def new_worker_spec(self) -> dict[Any, Any]:
        spec = super().new_worker_spec()
        if not self._gpu_groups:
            return spec
        name, worker = next(iter(spec.items()))
        worker = copy.deepcopy(worker)
        taken = {
            w["options"].get("env", {}).get("CUDA_VISIBLE_DEVICES")
            for w in self.worker_spec.values()
        }
        free = [g for g in self._gpu_groups if g not in taken]
        group = free[0] if free else self._gpu_groups[len(self.worker_spec) % len(self._gpu_groups)]
        worker["options"].setdefault("env", {})["CUDA_VISIBLE_DEVICES"] = group
        return {name: worker}


def gpu_groups(indices: list[int] | list[str], per_worker: int) -> list[str]:
    """Devices for each worker: ``per_worker`` of them each, whole groups only.

    Examples
    --------
    >>> gpu_groups([0, 1, 2], 2)
    ['0,1']
    """
    per_worker = max(1, per_worker)
    return [",".join(map(str, indices[i:i + per_worker]))
            for i in range(0, len(indices) - per_worker + 1, per_worker)]


class _SpreadCells(SchedulerPlugin):
    """When a worker joins, move cells queued behind busy slots elsewhere onto it.

    Dask assigns a resource-restricted task to a worker that *has* the resource, even when
    it is in use, so cells that arrived before a new worker stay queued on the old one. This
    asks Dask's own work stealing to move the excess; a cell that already runs is refused by
    the stealing protocol and stays where it is.
    """

    name = "jupyter-elastic-spread"

    def __init__(self, resource: str) -> None:
        self.resource = resource

    def add_worker(self, scheduler: Any, worker: str) -> None:
        stealing = scheduler.extensions.get("stealing")
        thief = scheduler.workers.get(worker)
        if stealing is None or thief is None:
            return
        free = thief.resources.get(self.resource, 0.0)
        for victim in list(scheduler.workers.values()):
            if victim is thief or free <= 0:
                continue
            cells = sorted(
                (ts for ts in victim.processing
                 if isinstance(ts.key, str) and ts.key.startswith(CELL_PREFIX)),
                key=lambda ts: ts.priority or (),
            )
            supply = victim.resources.get(self.resource, 0.0)
            demand = 0.0
            for ts in cells:
                need = (ts.resource_restrictions or {}).get(self.resource, 0.0)
                demand += need
                if demand > supply + 1e-9 and 0 < need <= free:
                    stealing.move_task_request(ts, victim, thief)
                    free -= need


class CellAdaptive(Adaptive):
    """Dask's Adaptive under the project's scaling policy (``scheduling.py``): enough
    workers for the slots waiting cells ask for, none retired before ``idle_timeout``."""

    resource: str = CPU_RESOURCE
    slots_per_worker: float = 1.0
    guard: IdleGuard | None = None

    async def workers_to_close(self, target: int) -> list[str]:
        if self.guard is not None and not self.guard.may_retire():
            return []
        return await super().workers_to_close(target)

    async def recommendations(self, target: int) -> dict[str, Any]:
        # Dask closes a worker that is "not yet arrived" without asking workers_to_close:
        # a worker whose process was killed (a stopped cell) and is being restarted by its
        # nanny is one, and closing it mid-restart fails the next cell. The idle guard
        # applies to it too.
        if (target < len(self.plan) and self.guard is not None
                and not self.guard.may_retire()):
            self.close_counts.clear()
            return {"status": "same"}
        return dict(await super().recommendations(target))

    async def scale_down(self, workers: Any) -> None:
        # SpecCluster retires workers itself (moving any data they hold) before closing
        # them; Adaptive's extra retire_workers call first only doubles the wait.
        if workers:
            await self.cluster.scale_down(workers)  # type: ignore[attr-defined]

    async def target(self) -> int:
        base = int(await super().target())
        scheduler = getattr(self.cluster, "scheduler", None)
        return max(base, cell_workers_needed(scheduler, self.resource, self.slots_per_worker))


class _InteractiveLatency(SchedulerPlugin):
    """Shorten the scheduler's batching windows: cells are few and latency is what counts."""

    name = "jupyter-elastic-latency"

    def _tune(self, scheduler: Any) -> None:
        for comm in list(scheduler.stream_comms.values()) + list(scheduler.client_comms.values()):
            comm.interval = INTERACTIVE_INTERVAL

    async def start(self, scheduler: Any) -> None:
        self._tune(scheduler)

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self._tune(scheduler)

    def add_client(self, scheduler: Any, client: str) -> None:
        self._tune(scheduler)


def _quiet_stdio() -> dict[str, str]:
    """Workers started inside a kernel inherit its stdout/stderr, which the kernel forwards
    into the running cell (ipykernel captures its file descriptors): tell them to write
    elsewhere. In a Jupyter server they keep the server's terminal."""
    import sys

    return {QUIET_STDIO_ENV: "1"} if type(sys.stderr).__module__.startswith("ipykernel") else {}


def _with_in_process_address(credentials: dict[str, Any], scheduler: Any) -> dict[str, Any]:
    """The lease's client credentials, with the scheduler's in-process address when it has
    one (``models.client_address`` uses it only in this process)."""
    for listener in scheduler.listeners:
        address = str(listener.contact_address)
        if address.startswith("inproc://"):
            return {**credentials, IN_PROCESS_ADDRESS: address}
    return credentials


class LocalBackend(ElasticBackend):
    """Scheduler in this process, workers as local processes (one per GPU, or CPU)."""

    name = "local"
    supports_adapt = True

    async def start(self, spec: ClusterSpec, progress: Progress) -> ClusterHandle:
        # NVML or nvidia-smi may take seconds: not on the control plane's event loop
        gpus = await asyncio.to_thread(detect_gpus) if spec.gpus_per_worker > 0 else []
        slots_wanted = max(1, int(spec.gpus_per_worker))
        groups = gpu_groups([g.visible_id for g in gpus], slots_wanted)  # UUIDs for MIG
        if gpus and not groups:
            raise ConfigError(
                f"worker.gpus={slots_wanted} but this machine has {len(gpus)} GPU(s); "
                "set jupyter-elastic.worker.gpus to at most that"
            )
        has_gpu = bool(groups)
        progress("scheduler", "starting a scheduler on this machine")
        cpu_count = os.cpu_count() or 1
        max_workers = min(spec.max_workers, len(groups)) if has_gpu else spec.max_workers
        memory = min(spec.memory_per_worker, psutil.virtual_memory().total // max(1, max_workers))
        slots = float(max(1, int(spec.gpus_per_worker))) if has_gpu else 1.0
        resource = GPU_RESOURCE if has_gpu else CPU_RESOURCE
        threads = max(1, min(spec.cpus_per_worker, cpu_count))
        # An RSA key takes tens of milliseconds: not on the control plane's event loop.
        security = await asyncio.to_thread(Security.temporary)
        forked = dask.config.get(_MP_METHOD, "spawn") in ("spawn", "forkserver")
        dashboard = self.settings.dashboard
        routes = dask.config.get("distributed.scheduler.http.routes") if dashboard else _HEALTH_ONLY
        scheduler_kwargs: dict[str, Any] = {} if dashboard else {"dashboard_address": "127.0.0.1:0"}
        if self.in_process_clients:
            # The kernel's own client runs in this process: it reaches the scheduler through
            # Dask's in-process comm (a queue, no socket: nothing outside this process can
            # connect), not TLS over loopback, which cost about 1 ms a cell in encryption and
            # framing. Workers and every other client still connect over TLS (the first
            # listener is the scheduler's address).
            scheduler_kwargs.update(protocol=["tls", "inproc"], host=["127.0.0.1", None],
                                    port=[0, None])
        with dask.config.set({"distributed.scheduler.http.routes": routes}):
            cluster = await ElasticLocalCluster(
                name=spec.name,
                n_workers=0,
                threads_per_worker=max(2, threads),  # a cell and Dask's own work side by side
                processes=True,
                host="127.0.0.1",
                protocol="tls://",
                security=security,
                dashboard_address="127.0.0.1:0" if dashboard else None,
                # no dashboard: the HTTP server (/health only) still binds; not on 8787
                scheduler_kwargs=scheduler_kwargs,
                asynchronous=True,
                silence_logs=logging.ERROR,
                memory_limit=memory,
                resources={resource: slots},
                env={"MPLBACKEND": "agg", WORKER_ENV: "1", **_quiet_stdio(), **spec.env},
                preload=[WORKER_PRELOAD],
                gpu_groups=groups,
                **({"worker_class": _ForkedNanny} if forked else {}),
            )
        # A cell whose worker dies is not re-run behind the user's back: it fails with one
        # line, and only --retries runs it again (Dask's default re-runs it up to 3 times).
        cluster.scheduler.allowed_failures = 0
        cluster.scheduler.add_plugin(_InteractiveLatency())
        activity = CellActivity()
        cluster.scheduler.add_plugin(activity)
        cluster.scheduler.add_plugin(_SpreadCells(resource))
        if forked:  # what every worker process imports, done once from now on (not before:
            # on a busy machine it would slow the scheduler's own start)
            await asyncio.to_thread(start_fork_server)
        progress("workers", "scheduler ready; workers start on demand")
        return ClusterHandle(
            name=spec.name,
            scheduler_address=cluster.scheduler_address,
            dashboard_link=cluster.dashboard_link if dashboard else None,
            has_gpu=has_gpu,
            cluster=cluster,
            cpus_per_worker=threads,  # the cores a worker can really use, as billed
            memory_per_worker=int(memory),
            extra={
                "client": _with_in_process_address(client_credentials(security), cluster.scheduler),
                "resource": resource,
                "slots": slots,
                "max_workers": max_workers,
                "memory": memory,
                "gpus": [g.name for g in gpus],
                "activity": activity,
            },
        )

    @staticmethod
    async def _stop_adaptive(cluster: Any, reason: str) -> None:
        """Stop adaptive scaling and wait out a pass already under way (it could still
        start a worker after a fixed size was set)."""
        adaptive = cluster._adaptive
        if adaptive is None:
            return
        adaptive.stop(reason=reason)
        cluster._adaptive = None
        for _ in range(200):
            if not getattr(adaptive, "_adapting", False):
                break
            await asyncio.sleep(0.01)

    async def scale(self, handle: ClusterHandle, n: int) -> None:
        cluster = handle.cluster
        await self._stop_adaptive(cluster, "fixed size requested")
        cluster.scale(min(n, handle.extra["max_workers"]))
        await cluster

    async def adapt(
        self, handle: ClusterHandle, minimum: int, maximum: int, idle_timeout: float
    ) -> None:
        await self._stop_adaptive(handle.cluster, "new adaptive bounds")
        adaptive = handle.cluster.adapt(
            Adaptive=CellAdaptive,
            minimum=minimum,
            maximum=min(maximum, handle.extra["max_workers"]),
            interval=max(0.1, min(0.5, idle_timeout / 8)),
            wait_count=1,  # the idle clock is CellAdaptive's, not a count of checks
        )
        adaptive.resource = handle.extra["resource"]
        adaptive.slots_per_worker = handle.extra["slots"]
        adaptive.guard = IdleGuard(handle.extra["activity"], idle_timeout)

    async def wake(self, handle: ClusterHandle) -> None:
        cluster = handle.cluster
        if not cluster.scheduler.workers and handle.extra["max_workers"] > 0:
            cluster.scale(max(1, len(cluster.worker_spec)))  # adaptive keeps it while the cell runs

    async def close(self, handle: ClusterHandle) -> None:
        cluster = handle.cluster
        await self._stop_adaptive(cluster, "closing")
        try:  # a kernel whose cell runs here says why it stopped (kernel/dispatch.py)
            scheduler = cluster.scheduler
            # a client that closed just now (the kernel shutting down closes its own first)
            # is still listed until the scheduler reads its goodbye: the event to it would
            # be logged as CRITICAL "Closed comm" in the kernel's or the server's log
            for client, stream in list(scheduler.client_comms.items()):
                if stream.closed():
                    scheduler.unsubscribe_topic(CLOSING_TOPIC, client)
            scheduler.log_event(CLOSING_TOPIC, {"reason": str(handle.extra.get("closing_reason") or "")})
            await asyncio.sleep(0.05)  # the event leaves before the workers do
        except Exception:
            log.debug("telling the kernels that %s closes failed", handle.name, exc_info=True)
        # Workers first, while the scheduler still answers: closed together, a worker's
        # heartbeat can find the scheduler gone and log CommClosedError errors, which
        # reach the notebook through the kernel's stderr.
        try:
            cluster.scale(0)

            async def settled() -> None:
                await cluster  # SpecCluster: until its workers match the spec (none)

            await asyncio.wait_for(settled(), timeout=30)
        except Exception:
            log.debug("retiring the workers of %s before closing failed", handle.name, exc_info=True)
        await cluster.close()

    async def workers(self, handle: ClusterHandle) -> list[WorkerDetail]:
        scheduler = handle.cluster.scheduler
        details = []
        for ws in list(scheduler.workers.values()):
            gpu_utilization, gpu_memory = gpu_metrics(ws.metrics)
            details.append(
                WorkerDetail(
                    name=str(ws.name),
                    gpus=float(ws.resources.get(GPU_RESOURCE, 0.0)),
                    memory=int(ws.memory_limit or 0),
                    gpu_utilization=gpu_utilization,
                    gpu_memory=gpu_memory,
                    address=ws.address,
                    status=str(ws.status.name if hasattr(ws.status, "name") else ws.status),
                )
            )
        return details
