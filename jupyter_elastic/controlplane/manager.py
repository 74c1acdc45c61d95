"""The control plane's registry: one user's clusters, their leases, start, scale and stop.

``ElasticClusterManager`` knows nothing about tornado or IPython. It runs on one asyncio
loop: the Jupyter server's when the server extension is loaded (clusters then outlive
kernels and every kernel shares them), or a private thread's loop inside the kernel
otherwise (``embedded.py``). Backends start and scale clusters; the control plane decides
*when*: scale to zero is the backend's autoscaler under ``backends/scheduling.py``'s
policy; the timed passes (fixed size back to adaptive after ``idle-timeout``, an empty
cluster stopped after ``shutdown-after``, a dead kernel's cluster after ``lease-ttl``) are
``reaper.py``'s; every cluster and every cell is priced by ``metering.py``.

Why one module this long: start, scale, adapt, stop, leases and cell accounting all
change the same records under one lock; split apart, each would need the others' invariants.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..backends import ElasticBackend, backend_class
from ..config import (
    Settings,
    check_backend,
    load_settings,
    parse_duration,
    parse_gpu_types,
    parse_gpus,
    whole,
)
from ..errors import ClusterNotFound, ClusterStartError, ConfigError, ElasticError
from ..models import ClusterSpec, HistoryRow, Usage, new_id, utcnow_iso
from ..protocol import Progress
from .metering import ClusterMeter, price_row
from .reaper import Reaper
from .records import ClusterRecord, GpuBudget, Lease
from .timeline import Timeline

log = logging.getLogger("jupyter_elastic.manager")

HISTORY_LIMIT = 2000


class ElasticClusterManager:
    """Owns the clusters of one user: start, lease, scale, adapt, close; records cells.

    The timed passes are :class:`~jupyter_elastic.controlplane.reaper.Reaper`'s; prices
    are :mod:`~jupyter_elastic.controlplane.metering`'s.

    Examples
    --------
    ::

        manager = ElasticClusterManager(load_settings())
        await manager.start()
        lease = await manager.acquire("kernel-1")
        ...
        await manager.close_all("done")
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        owner: str | None = None,
        max_gpus: float | None = None,
        idle_timeout_bounds: tuple[float, float] | None = None,
        tick: float | None = None,
        max_clusters: int | None = None,
        clock: Callable[[], float] | None = None,
        leases_expire: bool = True,
        in_process_clients: bool = False,
    ) -> None:
        self.settings = settings or load_settings()
        #: the admin's cap on clusters this user runs at once (None: no cap)
        self.max_clusters = max_clusters
        #: The control plane's clock (``time.monotonic``; a simulation injects its own).
        self.clock = clock or time.monotonic
        #: False in a kernel's embedded control plane: its leases are the kernel's own, and a
        #: kernel stopped (SIGSTOP) past lease-ttl must not find its cluster gone on SIGCONT;
        #: the kernel's exit ends the cluster there.
        self.leases_expire = leases_expire
        #: True in a kernel's embedded control plane: the kernel's own Dask client runs in
        #: this process too, and a local cluster's scheduler also takes it in-process.
        self.in_process_clients = in_process_clients
        self.owner = owner or _current_user()
        self.budget = GpuBudget(max_gpus)
        self.idle_timeout_bounds = idle_timeout_bounds
        self._clusters: dict[str, ClusterRecord] = {}
        self._leases: dict[str, Lease] = {}
        self._history: deque[HistoryRow] = deque(maxlen=HISTORY_LIMIT)
        self._closed_usage = Usage()  # what stopped clusters cost
        self.timeline = Timeline()  # the last hour, sampled by the reaper
        self._backends: dict[str, ElasticBackend] = {}
        self._reaper = Reaper(self, tick=tick)
        self._closed = False
        self._lock = asyncio.Lock()
        self._starting: dict[tuple[str, ...], asyncio.Future[dict[str, Any]]] = {}

    # ----------------------------------------------------------------- lifecycle
    @property
    def max_gpus(self) -> float | None:
        """The admin's cap on GPUs this user holds at once (None: no cap)."""
        return self.budget.limit

    @max_gpus.setter
    def max_gpus(self, limit: float | None) -> None:
        self.budget.limit = limit

    @property
    def tick(self) -> float:
        """Seconds between reaper passes."""
        return self._reaper.tick

    async def start(self) -> None:
        """Start the reaper (idempotent)."""
        self._reaper.start()

    async def close_all(self, reason: str = "shutdown") -> None:
        """Stop every cluster and the reaper; never raises."""
        self._closed = True
        await self._reaper.stop()
        for cluster_id in list(self._clusters):
            try:
                await self.close_cluster(cluster_id, reason=reason)
            except Exception:
                log.exception("jupyter-elastic: failed to close cluster %s", cluster_id)

    async def reap_once(self) -> None:
        """One reaper pass now (tests, and the reaper's own loop)."""
        await self._reaper.pass_once()

    def update_settings(self, settings: Settings) -> None:
        """Use ``settings`` for clusters started from now on (running ones keep theirs)."""
        self.settings = settings
        for backend in self._backends.values():
            backend.configure(settings)

    def backend(self, name: str) -> ElasticBackend:
        """The (one) backend instance of this kind."""
        if name not in self._backends:
            backend = backend_class(name)(self.settings)
            backend.in_process_clients = self.in_process_clients
            self._backends[name] = backend
        return self._backends[name]


    # ----------------------------------------------------------------- clusters
    def records(self) -> list[ClusterRecord]:
        """Every cluster record, in start order."""
        return list(self._clusters.values())

    def _get(self, cluster_id: str) -> ClusterRecord:
        record = self._clusters.get(cluster_id)
        if record is None:
            raise ClusterNotFound(f"no cluster with id {cluster_id!r}")
        return record

    def find(self, name_or_id: str) -> ClusterRecord:
        """The cluster with this id or name."""
        if name_or_id in self._clusters:
            return self._clusters[name_or_id]
        for record in self._clusters.values():
            if record.name == name_or_id:
                return record
        raise ClusterNotFound(f"no cluster with id or name {name_or_id!r}")

    def _check_idle_timeout(self, seconds: float) -> float:
        if self.idle_timeout_bounds is not None:
            low, high = self.idle_timeout_bounds
            if not low <= seconds <= high:
                raise ConfigError(
                    f"idle-timeout {seconds:g}s is outside the range this server allows "
                    f"({low:g}s to {high:g}s)"
                )
        return seconds

    def _check_workers(self, n: Any, what: str) -> int:
        n = whole(n, what, unit="workers" if what == "n" else "", text=False)
        if n > self.settings.max_workers:
            raise ConfigError(
                f"{what}={n} is above max-workers={self.settings.max_workers}; "
                "raise jupyter-elastic.max-workers or ask for fewer"
            )
        return n

    def _new_record(
        self,
        *,
        backend: str | None,
        name: str | None,
        workers: int | None,
        gpus: float | None,
        gpu_type: str | None,
        session: str,
        idle_timeout: float | None,
    ) -> ClusterRecord:
        """Check a start request and turn it into a (not yet started) record."""
        if self._closed:
            raise ElasticError("the control plane is shutting down; no new clusters")
        self._check_cluster_count()
        backend = check_backend(backend or self.settings.backend)
        if workers is not None:
            self._check_workers(workers, "workers")
        gpus_per_worker = None if gpus is None else parse_gpus(gpus, what="gpus")
        if gpus_per_worker is not None and 0 < gpus_per_worker < 1:
            gpus_per_worker = 1.0  # a fraction is a per-cell request; workers hold whole GPUs
        if name is not None:
            for existing in self._clusters.values():
                if existing.name == name:
                    raise ConfigError(f"a cluster named {name!r} already exists (id {existing.id})")
        spec = ClusterSpec.from_settings(
            self.settings, name=name, backend=backend, owner=self.owner, session=session,
            gpus_per_worker=gpus_per_worker, gpu_type=gpu_type, idle_timeout=idle_timeout,
        )
        now = self.clock()
        return ClusterRecord(
            id=new_id(),
            spec=spec,
            backend=backend,
            owner=self.owner,
            created=utcnow_iso(),
            created_at=now,
            idle_timeout=self._check_idle_timeout(spec.idle_timeout),
            shutdown_after=self.settings.shutdown_after,
            meter=ClusterMeter(self.settings.pricing, spec.gpus_per_worker, spec.cpus_per_worker),
            minimum=spec.min_workers,
            maximum=spec.max_workers,
            last_activity=now,
            phase_since=now,
        )

    def _check_cluster_count(self) -> None:
        """ConfigError naming the cap and the clusters holding it when one more would pass
        ``max_clusters``."""
        if self.max_clusters is None or len(self._clusters) < self.max_clusters:
            return
        held = [f"{r.name} ({r.id})" for r in self._clusters.values()]
        shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
        raise ConfigError(
            f"this server allows at most {self.max_clusters} clusters per user "
            f"(max_clusters_per_user) and these hold them: {shown}; stop one first "
            "(%gpu stop --cluster ID, or DELETE /clusters/ID)"
        )

    @staticmethod
    def _progress(record: ClusterRecord, progress: Progress | None) -> Progress:
        """Record each start-up phase on the cluster and pass it on to ``progress``."""

        def on_progress(phase: str, detail: str) -> None:
            if phase != record.phase:
                record.phase_since = time.monotonic()
            record.phase, record.phase_detail = phase, detail
            if progress is not None:
                try:
                    progress(phase, detail)
                except Exception:  # a display problem must not break the start
                    log.debug("progress callback failed", exc_info=True)

        return on_progress

    async def _size(self, record: ClusterRecord, workers: int | None) -> None:
        """Give a just-started cluster its size: fixed ``workers``, or adaptive within what
        the GPU cap leaves."""
        impl, handle = self.backend(record.backend), record.handle
        assert handle is not None
        if handle.cpus_per_worker is not None:  # bill the cores a worker really has
            record.meter.cpus_per_worker = handle.cpus_per_worker
        if not handle.has_gpu:
            record.meter.gpus_per_worker = 0.0  # CPU workers bill CPU-seconds only
        elif workers is None:
            room = self.budget.room(self.records(), exclude=record.id)
            if room is not None:
                record.maximum = min(record.maximum, int(room // max(record.spec.gpus_per_worker, 1e-9)))
                if record.maximum < 1:
                    raise ConfigError(
                        f"no GPU left for a new cluster: this server allows {self.budget.limit:g} "
                        "GPUs per user and other clusters hold them; stop or scale one down first"
                    )
        if workers is not None:
            if handle.has_gpu:
                self.budget.check(self.records(), workers * record.spec.gpus_per_worker,
                                  exclude=record.id)
            record.mode, record.requested = "fixed", workers
            await impl.scale(handle, workers)
        else:
            await impl.adapt(handle, record.minimum, record.maximum, record.idle_timeout)

    async def _discard(self, record: ClusterRecord, exc: BaseException) -> ElasticError | None:
        """A start failed: forget the record, close what was started; the error to raise
        (None: re-raise ``exc`` as it is)."""
        self._clusters.pop(record.id, None)
        if record.handle is not None:
            try:
                await self.backend(record.backend).close(record.handle)
            except Exception:
                log.exception("cleanup of a failed start of %s failed", record.name)
        if isinstance(exc, ElasticError) or not isinstance(exc, Exception):
            return None
        return ClusterStartError(f"the {record.backend} cluster {record.name!r} did not start: {exc}")

    async def create_cluster(
        self,
        *,
        backend: str | None = None,
        name: str | None = None,
        workers: int | None = None,
        gpus: float | None = None,
        gpu_type: str | None = None,
        session: str = "",
        idle_timeout: float | None = None,
        progress: Progress | None = None,
        prewarmed: bool = False,
    ) -> dict[str, Any]:
        """Start a cluster and return its JSON (status ``running``) once the scheduler answers.

        ``workers`` given: a fixed-size cluster; otherwise adaptive in
        [min-workers, max-workers] starting from zero. ``prewarmed``: started ahead of any
        kernel (:meth:`prewarm`); stopped after ``idle-timeout`` if no kernel leases it.
        """
        types = self._gpu_types(backend, gpu_type)
        record = self._new_record(backend=backend, name=name, workers=workers, gpus=gpus,
                                  gpu_type=types[0] if types else None, session=session,
                                  idle_timeout=idle_timeout)
        record.prewarmed = prewarmed
        self._clusters[record.id] = record
        on_progress = self._progress(record, progress)
        on_progress("queued", "")
        impl = self.backend(record.backend)
        record.start_task = asyncio.current_task()
        try:
            record.handle = await self._start_trying_types(impl, record, types, on_progress)
            record.meter.gpu_type = record.spec.gpu_type
            await self._size(record, workers)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and record.status == "stopped":
                # close_cluster stopped it while it started (the stop button while queued)
                await self._discard(record, exc)
                raise ClusterStartError(
                    f"the cluster {record.name!r} was stopped while it started") from None
            error = await self._discard(record, exc)
            if error is None:
                raise
            raise error from exc
        if self._clusters.get(record.id) is not record:  # stopped while it started
            await impl.close(record.handle)
            raise ClusterStartError(f"the cluster {record.name!r} was stopped while it started")
        record.status = "running"
        on_progress("ready", f"got GPU type {record.spec.gpu_type}" if len(types) > 1 else "")
        record.last_activity = self.clock()
        log.info("jupyter-elastic: started %s cluster %s (%s)", record.backend, record.name, record.id)
        return record.to_json(self.clock())

    def _gpu_types(self, backend: str | None, gpu_type: str | None) -> tuple[str, ...]:
        """The GPU types to try in order: ``--gpu-type A,B``, else (Kubernetes) the
        configured ``kubernetes.gpu-type`` list."""
        if gpu_type is not None:
            return parse_gpu_types(gpu_type)
        if (backend or self.settings.backend) == "kubernetes":
            return self.settings.kubernetes.gpu_types
        return ()

    @staticmethod
    async def _start_trying_types(impl: ElasticBackend, record: ClusterRecord, types: tuple[str, ...],
                                  progress: Progress) -> Any:
        """Start the cluster on the first GPU type of ``types`` whose worker a node takes:
        a type whose worker stays unschedulable for ``kubernetes.pending-timeout`` gives way
        to the next (each try a fresh cluster of the same name); the start-up line says
        which type it waits for. Any other fault ends the start as it is."""
        if len(types) <= 1:
            return await impl.start(record.spec, progress)
        for i, gpu_type in enumerate(types):
            record.spec = replace(record.spec, gpu_type=gpu_type)

            def typed(phase: str, detail: str, gpu_type: str = gpu_type, i: int = i) -> None:
                note = f"waiting for GPU type {gpu_type}, {i + 1} of {len(types)}"
                progress(phase, f"{detail}; {note}" if detail else note)

            typed("queued", "")
            try:
                return await impl.start(record.spec, typed)
            except ClusterStartError as exc:
                if not exc.unschedulable:
                    raise
                if i == len(types) - 1:
                    raise ClusterStartError(
                        f"{exc.args[0]}; tried GPU types {', '.join(types)} in order, each for "
                        "kubernetes.pending-timeout", hint=exc.hint) from exc
                log.info("jupyter-elastic: %s: no node for GPU type %s; trying %s",
                         record.name, gpu_type, types[i + 1])
                progress("queued", f"no node took a worker with GPU type {gpu_type} within "
                                   f"kubernetes.pending-timeout; trying {types[i + 1]}")
        raise AssertionError("unreachable: the last type returns or raises")

    async def scale(self, cluster_id: str, n: Any) -> dict[str, Any]:
        """Fixed size ``n`` (0 frees every worker); adaptive scaling stops until idle."""
        record = self._running(cluster_id)
        n = self._check_workers(n, "n")
        assert record.handle is not None
        if record.handle.has_gpu:
            self.budget.check(self.records(), n * record.spec.gpus_per_worker, exclude=record.id)
        await self.backend(record.backend).scale(record.handle, n)
        record.mode, record.requested = "fixed", n
        record.last_activity = self.clock()
        return record.to_json(self.clock())

    async def adapt(self, cluster_id: str, minimum: Any, maximum: Any) -> dict[str, Any]:
        """Adaptive size between ``minimum`` and ``maximum`` workers."""
        record = self._running(cluster_id)
        minimum = whole(minimum, "minimum", text=False)
        maximum = whole(maximum, "maximum", text=False)
        if minimum > maximum:
            raise ConfigError(f"minimum ({minimum}) must not be above maximum ({maximum})")
        self._check_workers(maximum, "maximum")
        assert record.handle is not None
        await self.backend(record.backend).adapt(record.handle, minimum, maximum, record.idle_timeout)
        record.mode, record.minimum, record.maximum = "adaptive", minimum, maximum
        return record.to_json(self.clock())

    async def set_idle_timeout(self, cluster_id: str, seconds: float) -> dict[str, Any]:
        """Change a running cluster's idle timeout (re-arms adaptive scaling)."""
        record = self._running(cluster_id)
        record.idle_timeout = self._check_idle_timeout(seconds)
        if record.mode == "adaptive":
            assert record.handle is not None
            await self.backend(record.backend).adapt(
                record.handle, record.minimum, record.maximum, record.idle_timeout
            )
        return record.to_json(self.clock())

    async def back_to_adaptive(self, record: ClusterRecord) -> None:
        """A fixed-size cluster returns to its adaptive bounds (the reaper, after idle)."""
        assert record.handle is not None
        await self.backend(record.backend).adapt(
            record.handle, record.minimum, record.maximum, record.idle_timeout
        )
        record.mode = "adaptive"

    def _running(self, cluster_id: str) -> ClusterRecord:
        record = self._get(cluster_id)
        if record.status != "running" or record.handle is None:
            raise ConfigError(f"cluster {cluster_id!r} is {record.status}, not running")
        return record

    async def close_cluster(self, cluster_id: str, reason: str = "requested") -> None:
        """Stop a cluster and forget it (its history rows stay)."""
        record = self._get(cluster_id)
        if record.status in ("stopping", "stopped"):
            return
        record.status = "stopping"
        record.meter.tick(self.clock(), len(record.workers), busy=record.running_cells > 0)
        task = record.start_task
        if record.handle is None and record.phase == "queued" and record.phase_detail \
                and task is not None and not task.done() and task is not asyncio.current_task():
            # waiting in a queue (a hub's gateway, Kueue): cancelling the start withdraws the
            # request (those backends clean up on cancellation); other starts run to their
            # end and are closed then
            task.cancel()
        try:
            if record.handle is not None:
                record.handle.extra["closing_reason"] = reason  # told to the kernels first
                await self.backend(record.backend).close(record.handle)
        finally:
            record.status = "stopped"
            self._closed_usage.add(record.meter.usage)
            self._clusters.pop(cluster_id, None)
            for lease_id in [k for k, v in self._leases.items() if v.cluster_id == cluster_id]:
                del self._leases[lease_id]
            log.info("jupyter-elastic: closed cluster %s (%s): %s", record.name, record.id, reason)

    async def prewarm(self, name: str, *, session: str = "") -> bool:
        """Start the cluster ``name`` (a notebook's, ``protocol.notebook_cluster_name``)
        before its kernel asks for it, so the first ``%%gpu`` cell finds its scheduler up.

        Adaptive from ``min-workers`` (0 by default: no worker without a cell). The start
        runs in the background; a kernel that acquires ``name`` meanwhile waits for this
        same start. A pre-warmed cluster no kernel leases is stopped after ``idle-timeout``
        (the reaper). False when nothing was started: the name already has a cluster, or a
        start is under way, or the control plane is closing. A failed start is logged, and
        the kernel's own acquire starts the cluster again (showing that error if it recurs).
        """
        key = ("name", name)
        async with self._lock:
            if (self._closed or key in self._starting
                    or any(r.name == name for r in self._clusters.values())):
                return False
            starting = asyncio.ensure_future(self.create_cluster(
                name=name, session=session, prewarmed=True,
            ))
            self._starting[key] = starting
            starting.add_done_callback(lambda _done: self._starting.pop(key, None))
            starting.add_done_callback(_log_prewarm_failure)
        log.info("jupyter-elastic: pre-warming cluster %s", name)
        return True

    # ----------------------------------------------------------------- leases
    async def acquire(
        self,
        session: str,
        *,
        backend: str | None = None,
        name: str | None = None,
        gpu_type: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The session's cluster, started if needed, with a fresh lease on it.

        A session holds one lease: each acquire issues a new lease (new id and secret) and
        revokes the session's previous one. Without ``name`` the session's current cluster
        on ``backend`` is reused; ``name`` reconnects to (or creates) a named cluster, which
        is how a restarted kernel finds its cluster again.
        """
        backend = check_backend(backend or self.settings.backend)
        key = ("name", name) if name is not None else ("session", session, backend)
        async with self._lock:
            record = self._leasable(session, backend, name)
            if record is not None:
                return self._lease(session, record)
            starting = self._starting.get(key)
            if starting is None:  # start it; others asking meanwhile wait for the same start
                starting = asyncio.ensure_future(self.create_cluster(
                    backend=backend, name=name, session=session, gpu_type=gpu_type,
                    progress=progress,
                ))
                self._starting[key] = starting
                starting.add_done_callback(lambda _done: self._starting.pop(key, None))
        # Not under the lock: one slow start must not hold up every other kernel's lease.
        created = await asyncio.shield(starting)
        async with self._lock:
            started = self._clusters.get(created["id"])
            if started is None or started.status != "running":
                raise ClusterStartError(f"the cluster {created['name']!r} was stopped while it started")
            return self._lease(session, started)

    def _leasable(self, session: str, backend: str, name: str | None) -> ClusterRecord | None:
        """The running cluster this session (or this name) already has, if any."""
        if name is not None:
            record = next((r for r in self._clusters.values() if r.name == name), None)
            if record is not None and record.backend != backend:
                raise ConfigError(
                    f"the cluster named {name!r} runs on the {record.backend} backend, not "
                    f"{backend}; pick another name or stop it first"
                )
        else:
            record = next(
                (self._clusters[lease.cluster_id] for lease in self._leases.values()
                 if lease.session == session and lease.cluster_id in self._clusters
                 and self._clusters[lease.cluster_id].backend == backend),
                None,
            )
        return record if record is not None and record.status == "running" else None

    def _lease(self, session: str, record: ClusterRecord) -> dict[str, Any]:
        """A new lease of ``session`` on ``record`` (replacing the session's previous
        lease), as lease JSON with its secret."""
        now = self.clock()
        previous = [lease for lease in self._leases.values() if lease.session == session]
        lease = Lease(new_id("lease-"), session, record.id, now)
        self._leases[lease.id] = lease  # first: revoking the old one must not orphan record
        for old in previous:  # one lease per session; its running cells carry over
            if old.cluster_id == record.id:
                lease.cells = old.cells
            self._revoke(old)
        record.leased, record.orphaned_since = True, None
        return lease.info(record, self.settings.lease_ttl).to_json()

    def _revoke(self, lease: Lease) -> None:
        """Forget ``lease``; a cluster no lease holds any more goes after ``lease-ttl``."""
        self._leases.pop(lease.id, None)
        record = self._clusters.get(lease.cluster_id)
        if record is not None and not self.leases_of(record.id):
            self.orphan(record, self.clock())

    def lease_of(self, lease_id: str, secret: str | None) -> Lease | None:
        """The live lease ``lease_id`` when ``secret`` is its secret; None otherwise (an
        unknown id and a wrong secret look the same)."""
        lease = self._leases.get(lease_id)
        return lease if lease is not None and lease.holds(secret) else None

    def heartbeat(self, lease_id: str, secret: str | None) -> bool:
        """Renew a lease; False when it is unknown (lapsed, or its cluster is gone) or
        ``secret`` is not its secret."""
        lease = self.lease_of(lease_id, secret)
        if lease is None:
            return False
        lease.last_heartbeat = self.clock()
        return True

    async def release(self, lease_id: str, secret: str | None, *, keep: bool = False) -> bool:
        """Give a lease up (a kernel shutting down). Its cluster stops now when no other
        lease holds it; ``keep`` (a kernel restarting) leaves it for ``lease-ttl`` instead,
        for the restarted kernel to lease again by name. False (and nothing changes) when
        the lease is unknown or the secret wrong."""
        lease = self.lease_of(lease_id, secret)
        if lease is None:
            return False
        self._revoke(lease)
        record = self._clusters.get(lease.cluster_id)
        if record is not None and not keep and not self.leases_of(record.id):
            await self.close_cluster(record.id, reason="its kernel shut down")
        return True

    def drop_lease(self, lease_id: str) -> None:
        """Forget a lapsed lease (the reaper)."""
        self._leases.pop(lease_id, None)

    @staticmethod
    def orphan(record: ClusterRecord, since: float) -> None:
        """No kernel holds the cluster any more: no cell of theirs can still be running."""
        record.orphaned_since = since
        if record.running_cells:
            record.running_cells = 0
            record.last_activity = time.monotonic()

    def leases_of(self, cluster_id: str) -> list[Lease]:
        """The leases held on a cluster."""
        return [lease for lease in self._leases.values() if lease.cluster_id == cluster_id]

    # ----------------------------------------------------------------- cells
    def _leased(self, lease_id: str, secret: str | None) -> Lease:
        lease = self.lease_of(lease_id, secret)
        if lease is None:
            raise ClusterNotFound(
                f"no live lease with id {lease_id!r} and that secret",
                hint="acquire a new lease (run the cell again)",
            )
        return lease

    def cell_started(self, lease_id: str, secret: str | None, timeout: float | None = None) -> None:
        """A cell of the lease's kernel began on its cluster (cheap; called without
        waiting). ``timeout`` (seconds; None: none) bounds how long the lease outlives its
        kernel's heartbeats while the cell may still run (``Lease.held_until``).
        ClusterNotFound when the lease is unknown or the secret wrong."""
        lease = self._leased(lease_id, secret)
        if timeout is not None:
            timeout = parse_duration(timeout, what="timeout")
        record = self._clusters.get(lease.cluster_id)
        if record is None:
            return
        lease.cells.append((self.clock(), timeout))
        record.running_cells += 1
        record.last_activity = self.clock()
        if record.handle is not None and record.status == "running":
            impl = self.backend(record.backend)
            asyncio.ensure_future(_quietly(impl.wake(record.handle)))

    def cell_finished(self, lease_id: str | None, secret: str | None,
                      row: dict[str, Any]) -> dict[str, Any]:
        """A cell ended: price its history row with this control plane's prices, record
        it, and (with a lease: the cell ran on its cluster) restart the idle clock.
        Returns the row as recorded. ClusterNotFound when ``lease_id`` is given but unknown
        or the secret wrong; without a lease (``--local``) only the row is recorded."""
        lease = self._leased(lease_id, secret) if lease_id is not None else None
        record = self._clusters.get(lease.cluster_id) if lease is not None else None
        checked = dict(row)
        checked.setdefault("owner", self.owner)
        if record is not None and record.spec.gpu_type and checked.get("device") == "gpu":
            checked["gpu_type"] = record.spec.gpu_type  # what it ran on, priced per type
        parsed = price_row(self.settings.pricing, HistoryRow.from_json(checked))
        if lease is not None and lease.cells:
            lease.cells.pop(0)
        if record is not None:
            record.running_cells = max(0, record.running_cells - 1)
            record.last_activity = self.clock()
            record.cells += 1
        self._history.append(parsed)
        return parsed.to_json()

    # ----------------------------------------------------------------- reports
    def list_clusters(self, *, details: bool = False) -> list[dict[str, Any]]:
        """Every cluster as JSON (live worker and GPU counts, usage so far; ``details``:
        each one's ``worker_details`` as of the reaper's last look)."""
        now = self.clock()
        return [r.to_json(now, details=details) for r in self._clusters.values()]

    async def get_cluster(self, cluster_id: str) -> dict[str, Any]:
        """One cluster as JSON, with ``worker_details`` read fresh from its scheduler."""
        record = self._get(cluster_id)
        await self.refresh_workers(record)
        return record.to_json(self.clock(), details=True)

    def history(self, notebook: str | None = None) -> list[dict[str, Any]]:
        """One row per ``%%gpu`` cell, oldest first (only ``notebook``'s when given)."""
        return [row.to_json() for row in self._history
                if notebook is None or row.notebook == notebook]

    def usage(self) -> dict[str, Any]:
        """Totals over live clusters and recorded cells."""
        total = Usage()
        total.add(self._closed_usage)
        for record in self._clusters.values():
            total.add(record.meter.usage)
        cells = list(self._history)
        return {
            "clusters": total.to_json(),
            "cells": {
                "count": len(cells),
                "seconds": round(sum(c.seconds for c in cells), 6),
                "gpu_seconds": round(sum(c.gpu_seconds for c in cells), 6),
                "cpu_seconds": round(sum(c.cpu_seconds for c in cells), 6),
                "cost": round(sum(c.cost for c in cells), 6),
            },
            "currency": self.settings.pricing.currency,
            "pricing": {
                "gpu_hour": self.settings.pricing.gpu_hour,
                "cpu_hour": self.settings.pricing.cpu_hour,
            },
        }

    async def quota(self) -> dict[str, Any]:
        """This user's quota where the default backend enforces one (a shared hub's gateway):
        ``{"backend", "available", "quota"}``; ``quota`` is null where there is none."""
        name = self.settings.backend
        report = await self.backend(name).quota()
        return {"backend": name, "available": report is not None, "quota": report}

    async def refresh_workers(self, record: ClusterRecord) -> None:
        """Read the cluster's live workers from its backend (keeps the last list on failure)."""
        if record.handle is None or record.status != "running":
            return
        try:
            record.workers = await self.backend(record.backend).workers(record.handle)
        except Exception:
            log.debug("could not list workers of %s", record.id, exc_info=True)


def _log_prewarm_failure(done: asyncio.Future[dict[str, Any]]) -> None:
    if done.cancelled():
        return
    exc = done.exception()
    if exc is not None:
        log.warning("jupyter-elastic: pre-warming a cluster failed: %s", exc)


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        log.debug("background call failed", exc_info=True)


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "user"
