"""The embedded control plane: the manager on a private event-loop thread in this process.

Used when no Jupyter server with the extension started this kernel (plain IPython, VS Code,
headless runs). The scheduler of a local cluster then lives in the kernel process, and its
workers exit as soon as it goes: a kernel killed with ``kill -9`` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..config import Settings, load_settings
from ..errors import ClusterNotFound, ElasticError
from ..protocol import Progress
from .base import ControlPlane, LeaseBook
from .manager import ElasticClusterManager

T = TypeVar("T")
log = logging.getLogger("jupyter_elastic.controlplane.embedded")

#: Seconds between the control-plane loop's passes over the cell reports kernels queue.
REPORT_INTERVAL = 0.1


class EmbeddedControlPlane(ControlPlane):
    """An ``ElasticClusterManager`` on a private event-loop thread inside this process."""

    kind = "embedded"

    def __init__(self, settings: Settings | None = None, **manager_kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jupyter-elastic-control-plane", daemon=True
        )
        self._thread.start()
        self._closed = False
        self._leases = LeaseBook()
        self._stopped = False
        self._follow_config = settings is None  # explicit settings stay as given
        #: Cell reports (start, finish) waiting for the loop: appending wakes no thread, so
        #: a cell's dispatch pays no hand-off to this loop; the loop takes them every
        #: REPORT_INTERVAL, and before any other call (history then includes every cell).
        self._reports: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._drainer: asyncio.Future[None] | None = None

        async def build() -> ElasticClusterManager:
            manager_kwargs.setdefault("leases_expire", False)  # the kernel's exit ends its clusters
            # a kernel's own client runs in this process: its local scheduler takes it in-process
            manager_kwargs.setdefault("in_process_clients", True)
            manager = ElasticClusterManager(settings or load_settings(), **manager_kwargs)
            await manager.start()
            self._drainer = asyncio.ensure_future(self._drain_forever())
            return manager

        self.manager = self._call(build())
        atexit.register(self.close)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._stopped:  # its loop is stopping or gone (closed, e.g. atexit): never wait forever
            coro.close()
            raise ElasticError("the embedded control plane is closed")
        async def after_reports() -> T:
            self._drain()
            return await coro

        return asyncio.run_coroutine_threadsafe(after_reports(), self._loop).result(timeout)

    def _soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self._closed:
            self._reports.append((fn, args))

    def _drain(self) -> None:
        """Run the queued cell reports, oldest first (on the loop)."""
        while self._reports:
            fn, args = self._reports.popleft()
            _quiet(fn, *args)

    async def _drain_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            self._drain()

    def _sync(self, fn: Callable[..., T], *args: Any) -> T:
        async def run() -> T:
            return fn(*args)

        return self._call(run())

    def acquire(self, session: str, *, backend: str | None = None, name: str | None = None,
                gpu_type: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
        if self._follow_config:  # this kernel's settings, as %gpu config left them
            self._sync(self.manager.update_settings, load_settings())
        return self._leases.add(self._call(
            self.manager.acquire(session, backend=backend, name=name, gpu_type=gpu_type,
                                 progress=progress)
        ))

    def heartbeat(self, lease_id: str) -> bool:
        return self._sync(self.manager.heartbeat, lease_id, self._leases.secret(lease_id))

    def release(self, lease_id: str, *, keep: bool = False) -> None:
        self._call(self.manager.release(lease_id, self._leases.secret(lease_id), keep=keep))
        self._leases.forget(lease_id)

    def cell_started(self, cluster_id: str, timeout: float | None = None) -> None:
        held = self._leases.on(cluster_id)
        if held is not None:  # no lease on it: nothing of ours to count
            self._soon(self.manager.cell_started, *held, timeout)

    def cell_finished(self, cluster_id: str | None, row: dict[str, Any]) -> None:
        lease_id, secret = self._leases.on(cluster_id) or (None, None)
        self._soon(self._finished, lease_id, secret, row)

    def _finished(self, lease_id: str | None, secret: str | None, row: dict[str, Any]) -> None:
        try:
            self.manager.cell_finished(lease_id, secret, row)
        except ClusterNotFound:  # the lease lapsed meanwhile: keep the row in history
            self.manager.cell_finished(None, None, row)

    def clusters(self, *, details: bool = False) -> list[dict[str, Any]]:
        if details:  # workers read fresh from each scheduler
            async def fresh() -> list[dict[str, Any]]:
                for record in self.manager.records():
                    await self.manager.refresh_workers(record)
                return self.manager.list_clusters(details=True)

            return self._call(fresh())
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

    def history(self, notebook: str | None = None) -> list[dict[str, Any]]:
        return self._sync(self.manager.history, notebook)

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
        self._stopped = True
        if self._drainer is not None:
            self._loop.call_soon_threadsafe(self._drainer.cancel)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def stop_helper_processes(self) -> None:
        """Stop the local workers' fork server and let multiprocessing's resource tracker
        go (``backends.local.stop_fork_server``), so the exit does not wait on them."""
        from ..backends.local import stop_fork_server

        stop_fork_server()


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    """Run a cell report on the loop; a lapsed lease is not the cell's problem."""
    try:
        fn(*args)
    except Exception:
        log.debug("cell report failed", exc_info=True)
