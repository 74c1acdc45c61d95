"""What the control plane knows about each cluster and lease, and the GPU cap over them.

Plain records the manager, the reaper and the metering share: a :class:`ClusterRecord` per
cluster (its spec, backend handle, status and start-up phase, sizing, idle clock, meter and
live workers), a :class:`Lease` per kernel holding one, and :class:`GpuBudget`, the admin's
cap on GPUs one user holds across every cluster. Each record renders its wire JSON through
``models.py``.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..backends import ClusterHandle
from ..errors import ConfigError
from ..models import ClusterInfo, ClusterSpec, LeaseInfo, WorkerDetail
from .metering import ClusterMeter


@dataclass
class Lease:
    """A kernel's claim on a cluster; it lapses when heartbeats stop for ``lease-ttl``
    (later while a cell of its kernel may still run: :meth:`held_until`).

    ``secret`` is returned once, in the lease JSON, to the kernel that acquired the lease;
    heartbeat, release and cell reports on the lease must present it.
    """

    id: str
    session: str
    cluster_id: str
    last_heartbeat: float
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    #: the kernel's running cells: (monotonic start, its timeout in seconds or None)
    cells: list[tuple[float, float | None]] = field(default_factory=list)

    def holds(self, secret: str | None) -> bool:
        """Whether ``secret`` is this lease's (constant time)."""
        return bool(secret) and hmac.compare_digest(str(secret).encode(), self.secret.encode())

    def held_until(self, ttl: float, untimed: float) -> float:
        """When the lease lapses: ``ttl`` after the last heartbeat, or for a running cell
        ``ttl`` plus its timeout (``untimed`` for a cell without one) after it started or
        after the last heartbeat, whichever is later: a stalled but live kernel's cell is
        never cut off before it could have timed out."""
        end = self.last_heartbeat + ttl
        for started, timeout in self.cells:
            grace = untimed if timeout is None else timeout
            end = max(end, max(started, self.last_heartbeat) + ttl + grace)
        return end

    def info(self, record: ClusterRecord, ttl: float) -> LeaseInfo:
        handle = record.handle
        return LeaseInfo(
            lease_id=self.id,
            session=self.session,
            cluster_id=record.id,
            name=record.name,
            backend=record.backend,
            scheduler_address=handle.scheduler_address if handle else None,
            dashboard_link=handle.dashboard_link if handle else None,
            has_gpu=bool(handle and handle.has_gpu),
            gpus_per_worker=record.spec.gpus_per_worker,
            cpus_per_worker=record.meter.cpus_per_worker,
            idle_timeout=record.idle_timeout,
            lease_ttl=ttl,
            client=handle.extra.get("client") if handle else None,
            lease_secret=self.secret,
            memory_per_worker=(handle.memory_per_worker if handle and handle.memory_per_worker
                               else record.spec.memory_per_worker),
        )


@dataclass
class ClusterRecord:
    """Everything the control plane knows about one cluster."""

    id: str
    spec: ClusterSpec
    backend: str
    owner: str
    created: str
    created_at: float
    idle_timeout: float
    shutdown_after: float
    meter: ClusterMeter
    handle: ClusterHandle | None = None
    status: str = "starting"  # starting | running | stopping | stopped | error
    phase: str = "queued"
    phase_detail: str = ""
    phase_since: float = 0.0
    mode: str = "adaptive"  # adaptive | fixed
    minimum: int = 0
    maximum: int = 4
    requested: int = 0
    running_cells: int = 0
    last_activity: float = 0.0
    empty_since: float | None = None
    leased: bool = False
    #: started ahead of its notebook's first ``%%gpu`` cell (``ElasticClusterManager.prewarm``)
    prewarmed: bool = False
    orphaned_since: float | None = None
    workers: list[WorkerDetail] = field(default_factory=list)
    #: The task starting it (cancelled when it is stopped before it runs: leaves a queue).
    start_task: Any = field(default=None, repr=False, compare=False)
    cells: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def idle_seconds(self, now: float) -> float:
        """Seconds since the last cell finished (0 while a cell runs)."""
        return 0.0 if self.running_cells else max(0.0, now - self.last_activity)

    def info(self, now: float, *, details: bool = False) -> ClusterInfo:
        """The cluster as the wire format describes it."""
        handle = self.handle
        return ClusterInfo(
            id=self.id,
            name=self.name,
            backend=self.backend,
            status=self.status,
            phase=self.phase,
            phase_detail=self.phase_detail,
            phase_seconds=max(0.0, now - self.phase_since),
            workers=len(self.workers),
            gpus=sum(w.gpus for w in self.workers),
            has_gpu=bool(handle and handle.has_gpu),
            idle_seconds=self.idle_seconds(now),
            idle_timeout=self.idle_timeout,
            shutdown_after=self.shutdown_after,
            running_cells=self.running_cells,
            cells=self.cells,
            adapt={"minimum": self.minimum, "maximum": self.maximum}
            if self.mode == "adaptive" else None,
            requested_workers=self.requested if self.mode == "fixed" else None,
            dashboard_link=handle.dashboard_link if handle else None,
            scheduler_address=handle.scheduler_address if handle else None,
            owner=self.owner,
            created=self.created,
            usage=self.meter.usage,
            currency=self.meter.pricing.currency,
            worker_details=list(self.workers) if details else None,
        )

    def to_json(self, now: float, *, details: bool = False) -> dict[str, Any]:
        return self.info(now, details=details).to_json()


class GpuBudget:
    """The admin's cap on GPUs one user holds at once, across every cluster.

    A fixed-size cluster holds what it asked for; an adaptive one may grow to its maximum,
    so that much counts against the cap too.
    """

    def __init__(self, limit: float | None) -> None:
        self.limit = limit

    @staticmethod
    def held(records: list[ClusterRecord], exclude: str | None = None) -> float:
        """GPUs the clusters hold, or may grow to (an adaptive cluster's maximum)."""
        return sum(
            r.spec.gpus_per_worker
            * (max(len(r.workers), r.requested) if r.mode == "fixed" else max(len(r.workers), r.maximum))
            for r in records
            if r.id != exclude and r.handle is not None and r.handle.has_gpu
        )

    def check(self, records: list[ClusterRecord], extra: float, exclude: str | None = None) -> None:
        """ConfigError when ``extra`` more GPUs would pass the cap."""
        if self.limit is None:
            return
        held = self.held(records, exclude)
        if held + extra > self.limit:
            raise ConfigError(
                f"that would hold {held + extra:g} GPUs; this server allows at most "
                f"{self.limit:g} per user. Scale another cluster down or stop it first"
            )

    def room(self, records: list[ClusterRecord], exclude: str) -> float | None:
        """GPUs still free under the cap (None: no cap)."""
        return None if self.limit is None else self.limit - self.held(records, exclude)
