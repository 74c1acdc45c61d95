"""The backend contract: start, scale, adapt, close, describe one Dask cluster.

The control plane (``manager.py``) holds one :class:`ClusterHandle` per cluster and calls
these coroutines on its own event loop. Backends do no metering, leasing or idle
bookkeeping: that is the manager's job. Capability flags replace ``isinstance`` checks.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import Settings
from ..models import ClusterSpec, WorkerDetail
from ..protocol import GPU_RESOURCE, Progress


@dataclass
class ClusterHandle:
    """A started cluster: how to reach it, and the backend's own object for it."""

    name: str
    scheduler_address: str
    dashboard_link: str | None = None
    has_gpu: bool = False
    cluster: Any = None  # backend-specific (LocalCluster, KubeCluster, GatewayCluster)
    #: What each worker really holds where it differs from the spec (local workers get the
    #: machine's cores and a share of its memory); None: what the spec asked for.
    cpus_per_worker: int | None = None
    memory_per_worker: int | None = None
    # may hold credentials (a gateway's TLS key): never in a repr or a log line
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


class ElasticBackend(abc.ABC):
    """Start and stop Dask clusters of one kind. One instance serves many clusters."""

    name: ClassVar[str]
    #: True when ``adapt`` is supported (the manager records min/max itself either way).
    supports_adapt: ClassVar[bool] = True
    #: True when clusters can be found again by name after the control plane restarts.
    supports_reconnect: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        #: Set by a control plane embedded in a kernel: the clients its clusters serve run
        #: in this very process (a backend whose scheduler runs here may take them
        #: in-process; see ``backends.local``).
        self.in_process_clients = False
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """Use ``settings`` from now on (``%gpu config``); backends that derive options
        from them extend this so those follow too."""
        self.settings = settings

    @abc.abstractmethod
    async def start(self, spec: ClusterSpec, progress: Progress) -> ClusterHandle:
        """Start a cluster described by ``spec``; return once its scheduler answers.

        Must leave nothing behind if it raises (delete what it created, then raise an
        ElasticError subclass naming the cause).
        """

    @abc.abstractmethod
    async def scale(self, handle: ClusterHandle, n: int) -> None:
        """Fixed size: ``n`` workers (adaptive scaling, if on, is switched off first)."""

    @abc.abstractmethod
    async def adapt(
        self, handle: ClusterHandle, minimum: int, maximum: int, idle_timeout: float
    ) -> None:
        """Adaptive size in [minimum, maximum]; idle workers go after ``idle_timeout`` s."""

    @abc.abstractmethod
    async def close(self, handle: ClusterHandle) -> None:
        """Stop the scheduler and every worker; never raises for an already-gone cluster."""

    @abc.abstractmethod
    async def workers(self, handle: ClusterHandle) -> list[WorkerDetail]:
        """The live workers (name, GPUs, memory, GPU use where the workers report it)."""

    async def quota(self) -> dict[str, Any] | None:
        """The user's quota and holdings where the backend enforces one (a shared hub's
        gateway, ``GET protocol.QUOTA_ROUTE``); None where it has none."""
        return None

    async def wake(self, handle: ClusterHandle) -> None:  # noqa: B027 - optional hook
        """Start one worker now when a cell waits on an empty cluster (cold start).

        Adaptive scaling would notice within its interval; backends that can start a
        worker sooner do so here. The default leaves it to adaptive scaling.
        """

    async def connect(self, name: str) -> ClusterHandle | None:
        """Find a running cluster by name (after a restart); ``None`` when there is none."""
        return None


async def remote_workers(cluster: Any, timeout: float, *, gpus: bool = True) -> list[WorkerDetail]:
    """The workers of a cluster whose scheduler runs elsewhere, as the scheduler sees them now.

    Asks the scheduler (``identity``) rather than reading ``cluster.scheduler_info``: that
    copy is fed by add/remove messages, so a worker's status stays what it was when it
    joined ("init") and a removed worker lingers until the message arrives. Falls back to the
    copy when the scheduler does not answer within ``timeout`` seconds (2 s at most). ``gpus=False``: the
    cluster's slots are another resource (a MIG or shared-GPU resource), so no whole GPUs.
    """
    try:  # at most a couple of seconds: the reaper refreshes clusters one after another
        info = await asyncio.wait_for(cluster.scheduler_comm.identity(), min(timeout, 2.0))
    except Exception:
        info = cluster.scheduler_info or {}
    details = []
    for address, w in sorted((info.get("workers") or {}).items()):
        gpu_utilization, gpu_memory = gpu_metrics(w.get("metrics"))
        details.append(
            WorkerDetail(
                name=str(w.get("name", address)),
                gpus=float((w.get("resources") or {}).get(GPU_RESOURCE, 0.0)) if gpus else 0.0,
                memory=int(w.get("memory_limit") or 0),
                gpu_utilization=gpu_utilization,
                gpu_memory=gpu_memory,
                address=address,
                status=str(w.get("status", "running")),
            )
        )
    return details


def gpu_metrics(metrics: dict[str, Any] | None) -> tuple[Any, Any]:
    """(GPU utilisation %, GPU memory used in bytes) from a Dask worker's metrics, or Nones.

    ``distributed``'s system monitor publishes ``gpu_utilization`` and ``gpu_memory_used``
    as top-level worker metrics (what its dashboard reads); the nested ``{"gpu":
    {"utilization", "memory-used"}}`` entry exists only where ``add_gpu_metrics`` ran, so
    it is the fallback.

    Examples
    --------
    >>> gpu_metrics({"gpu_utilization": 87, "gpu_memory_used": 2**30})
    (87, 1073741824)
    >>> gpu_metrics({"gpu": {"utilization": 5, "memory-used": 10}})
    (5, 10)
    >>> gpu_metrics(None)
    (None, None)
    """
    metrics = metrics or {}
    gpu = metrics.get("gpu")
    nested: dict[str, Any] = gpu if isinstance(gpu, dict) else {}
    utilization = metrics.get("gpu_utilization", nested.get("utilization"))
    memory = metrics.get("gpu_memory_used", nested.get("memory-used"))
    return utilization, memory
