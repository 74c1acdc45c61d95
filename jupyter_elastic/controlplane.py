"""How a kernel reaches the control plane: in-process, or the Jupyter server's over REST.

``connect_control_plane()`` returns the server's control plane when this kernel was started
by a Jupyter server with the extension loaded (it sets ``JUPYTER_ELASTIC_SERVER_URL`` and
``JUPYTER_ELASTIC_TOKEN`` before kernels launch), and otherwise an embedded one: the same
``ElasticClusterManager`` on a private event-loop thread inside the kernel, so plain
IPython, VS Code and headless runs work without a server. Only lifecycle calls go through
here (lease, heartbeat, status, history); cell tasks go straight to the Dask scheduler.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .config import Settings, load_settings

T = TypeVar("T")
Progress = Callable[[str, str], None]

SERVER_URL_ENV = "JUPYTER_ELASTIC_SERVER_URL"
SERVER_TOKEN_ENV = "JUPYTER_ELASTIC_TOKEN"


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
    def release(self, lease_id: str) -> None:
        """Give the lease up (kernel shutting down)."""

    @abc.abstractmethod
    def cell_started(self, cluster_id: str) -> None:
        """A cell began (must return at once: it is on the dispatch path)."""

    @abc.abstractmethod
    def cell_finished(self, cluster_id: str | None, row: dict[str, Any]) -> None:
        """A cell ended with this history row (must return at once)."""

    @abc.abstractmethod
    def clusters(self) -> list[dict[str, Any]]:
        """Every cluster, as the REST API's cluster JSON."""

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
    def history(self) -> list[dict[str, Any]]:
        """History rows, oldest first."""

    @abc.abstractmethod
    def usage(self) -> dict[str, Any]:
        """Usage totals."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close this handle (embedded: stops every cluster it owns)."""


class EmbeddedControlPlane(ControlPlane):
    """An ``ElasticClusterManager`` on a private event-loop thread inside this process."""

    kind = "embedded"

    def __init__(self, settings: Settings | None = None, **manager_kwargs: Any) -> None:
        from .manager import ElasticClusterManager

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jupyter-elastic-control-plane", daemon=True
        )
        self._thread.start()
        self._closed = False
        self._follow_config = settings is None  # explicit settings stay as given

        async def build() -> ElasticClusterManager:
            manager = ElasticClusterManager(settings or load_settings(), **manager_kwargs)
            await manager.start()
            return manager

        self.manager = self._call(build())
        atexit.register(self.close)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self._closed:
            self._loop.call_soon_threadsafe(fn, *args)

    def _sync(self, fn: Callable[..., T], *args: Any) -> T:
        async def run() -> T:
            return fn(*args)

        return self._call(run())

    def acquire(self, session: str, *, backend: str | None = None, name: str | None = None,
                gpu_type: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
        if self._follow_config:  # this kernel's settings, as %gpu config left them
            self._sync(self.manager.update_settings, load_settings())
        return self._call(
            self.manager.acquire(session, backend=backend, name=name, gpu_type=gpu_type,
                                 progress=progress)
        )

    def heartbeat(self, lease_id: str) -> bool:
        return self._sync(self.manager.heartbeat, lease_id)

    def release(self, lease_id: str) -> None:
        self._sync(self.manager.release, lease_id)

    def cell_started(self, cluster_id: str) -> None:
        self._soon(self.manager.cell_started, cluster_id)

    def cell_finished(self, cluster_id: str | None, row: dict[str, Any]) -> None:
        self._soon(self.manager.cell_finished, cluster_id, row)

    def clusters(self) -> list[dict[str, Any]]:
        return self._sync(self.manager.list_clusters)

    def cluster(self, cluster_id: str) -> dict[str, Any]:
        return self._call(self.manager.get_cluster(cluster_id))

    def scale(self, cluster_id: str, n: int) -> dict[str, Any]:
        return self._call(self.manager.scale(cluster_id, n))

    def adapt(self, cluster_id: str, minimum: int, maximum: int) -> dict[str, Any]:
        return self._call(self.manager.adapt(cluster_id, minimum, maximum))

    def set_idle_timeout(self, cluster_id: str, seconds: float) -> dict[str, Any]:
        return self._call(self.manager.set_idle_timeout(cluster_id, seconds))

    def stop(self, cluster_id: str) -> None:
        self._call(self.manager.close_cluster(cluster_id, reason="stopped by the user"))

    def history(self) -> list[dict[str, Any]]:
        return self._sync(self.manager.history)

    def usage(self) -> dict[str, Any]:
        return self._sync(self.manager.usage)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self.manager.close_all("kernel shutdown"), timeout=30)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def connect_control_plane(settings: Settings | None = None) -> ControlPlane:
    """The server's control plane when this kernel was started by one, else an embedded one."""
    url = os.environ.get(SERVER_URL_ENV)
    if url:
        try:
            from .controlplane_remote import RemoteControlPlane
        except ImportError:
            pass
        else:
            return RemoteControlPlane(url, os.environ.get(SERVER_TOKEN_ENV, ""))
    return EmbeddedControlPlane(settings)
