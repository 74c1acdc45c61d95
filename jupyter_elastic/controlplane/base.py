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
import threading
from typing import Any

from ..protocol import Progress


class LeaseBook:
    """The leases this kernel acquired, with their secrets: heartbeat, release and cell
    reports name a lease (or its cluster) and the book supplies the secret to present."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._by_cluster: dict[str, str] = {}

    def add(self, lease: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._secrets[lease["lease_id"]] = lease.get("lease_secret", "")
            self._by_cluster[lease["cluster_id"]] = lease["lease_id"]
        return lease

    def secret(self, lease_id: str) -> str | None:
        with self._lock:
            return self._secrets.get(lease_id)

    def on(self, cluster_id: str | None) -> tuple[str, str] | None:
        """(lease id, secret) of this kernel's lease on ``cluster_id``, if it holds one."""
        with self._lock:
            lease_id = self._by_cluster.get(cluster_id) if cluster_id else None
            return None if lease_id is None else (lease_id, self._secrets.get(lease_id, ""))

    def forget(self, lease_id: str) -> None:
        with self._lock:
            self._secrets.pop(lease_id, None)
            for cluster_id in [c for c, i in self._by_cluster.items() if i == lease_id]:
                del self._by_cluster[cluster_id]


class ControlPlane(abc.ABC):
    """The lifecycle calls a kernel makes; every method is synchronous and thread-safe.

    Each lease carries a secret that only the kernel that acquired it gets (the lease
    JSON's ``lease_secret``); implementations keep it in a :class:`LeaseBook` and present it
    with every heartbeat, release and cell report, so the kernel side names only ids.
    """

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
        has_gpu, gpus_per_worker, cpus_per_worker, idle_timeout, lease_ttl, client,
        lease_secret}`` (``client``: what a Dask client needs besides the address, the
        cluster's TLS credentials; ``lease_secret``: this lease's secret). The session's
        previous lease, if any, is revoked.
        ``progress(phase, detail)`` is called from another thread while it starts."""

    @abc.abstractmethod
    def heartbeat(self, lease_id: str) -> bool:
        """Renew the lease; False when it lapsed or its cluster is gone."""

    @abc.abstractmethod
    def release(self, lease_id: str, *, keep: bool = False) -> None:
        """Give the lease up (kernel shutting down): its cluster stops unless another lease
        holds it; ``keep`` (kernel restarting) leaves it for ``lease-ttl``."""

    @abc.abstractmethod
    def cell_started(self, cluster_id: str, timeout: float | None = None) -> None:
        """A cell began on this kernel's leased cluster (must return at once: it is on the
        dispatch path). ``timeout``: the longest the cell may run (seconds; None: no
        bound), which the lease's expiry honours."""

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

    def stop_helper_processes(self) -> None:  # noqa: B027 - optional hook
        """After :meth:`close`, when this process exits next (a kernel's shutdown): stop
        the helper processes this control plane started in it (embedded: the local
        workers' fork server). Nothing by default."""
