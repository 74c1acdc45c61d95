"""The control plane as a kernel sees it: one interface, two places it can live.

``jupyter_elastic.controlplane.connect_control_plane()`` returns the server's control plane (``remote.py``) when this
kernel was started by a Jupyter server with the extension loaded (it sets
``JUPYTER_ELASTIC_SERVER_URL`` and ``JUPYTER_ELASTIC_TOKEN`` before kernels launch), and
otherwise an embedded one (``embedded.py``): the same ``ElasticClusterManager`` on a private
event-loop thread inside the kernel, so plain IPython, VS Code and headless runs work
without a server. Only lifecycle calls go through here (lease, heartbeat, status, history);
cell tasks go straight to the Dask scheduler.
"""

from __future__ import annotations

import abc
from typing import Any

from ..protocol import Progress


class ControlPlane(abc.ABC):
    """The lifecycle calls a kernel makes; every method is synchronous and thread-safe."""

    #: "embedded" (in this process) or "server" (the Jupyter server's).
    kind: str = "embedded"

    @abc.abstractmethod
    def acquire(
        self,
        session: str,
        *,
        backend: str | None = None,
        name: str | None = None,
        gpu_type: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The session's cluster (started if needed) and a lease on it, as lease JSON:
        ``{lease_id, session, cluster_id, name, backend, scheduler_address, dashboard_link,
        has_gpu, gpus_per_worker, cpus_per_worker, idle_timeout, lease_ttl, client}``
        (``client``: what a Dask client needs besides the address, e.g. a gateway's TLS
        credentials; ``None`` for most backends)
        ``progress(phase, detail)`` is called from another thread while it starts."""

    @abc.abstractmethod
    def heartbeat(self, lease_id: str) -> bool:
        """Renew the lease; False when it lapsed or its cluster is gone."""

    @abc.abstractmethod
    def release(self, lease_id: str, *, keep: bool = False) -> None:
        """Give the lease up (kernel shutting down): its cluster stops unless another lease
        holds it; ``keep`` (kernel restarting) leaves it for ``lease-ttl``."""

    @abc.abstractmethod
    def cell_started(self, cluster_id: str) -> None:
        """A cell began (must return at once: it is on the dispatch path)."""

    @abc.abstractmethod
    def cell_finished(self, cluster_id: str | None, row: dict[str, Any]) -> None:
        """A cell ended with this history row (must return at once)."""

    @abc.abstractmethod
    def clusters(self, *, details: bool = False) -> list[dict[str, Any]]:
        """Every cluster, as the REST API's cluster JSON (``details``: with each one's
        ``worker_details``)."""

    @abc.abstractmethod
    def cluster(self, cluster_id: str) -> dict[str, Any]:
        """One cluster with ``worker_details``."""

    @abc.abstractmethod
    def scale(self, cluster_id: str, n: int) -> dict[str, Any]:
        """Fixed size ``n``."""

    @abc.abstractmethod
    def adapt(self, cluster_id: str, minimum: int, maximum: int) -> dict[str, Any]:
        """Adaptive size in [minimum, maximum]."""

    @abc.abstractmethod
    def set_idle_timeout(self, cluster_id: str, seconds: float) -> dict[str, Any]:
        """Change a running cluster's idle timeout."""

    @abc.abstractmethod
    def stop(self, cluster_id: str) -> None:
        """Stop one cluster."""

    @abc.abstractmethod
    def history(self, notebook: str | None = None) -> list[dict[str, Any]]:
        """History rows, oldest first (only ``notebook``'s when given)."""

    @abc.abstractmethod
    def usage(self) -> dict[str, Any]:
        """Usage totals."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close this handle (embedded: stops every cluster it owns)."""
