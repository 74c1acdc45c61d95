"""This kernel's session: its lease on a cluster, its Dask client, and the heartbeat.

One :class:`ElasticSession` per kernel. It asks the control plane for a cluster (showing
start-up phases while one starts), connects a Dask client to it (events from workers
arrive on :attr:`events`), and keeps the lease alive from a heartbeat thread. Running
cells is ``dispatch.py``'s job; this class only holds what they run on.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import queue
import threading
import uuid
from typing import Any

from ..config import Settings, load_settings
from ..controlplane import ControlPlane, connect_control_plane
from ..controlplane.cells import lease_client, no_silent_reruns
from ..errors import CellCancelled
from ..protocol import CLOSING_TOPIC, INTERACTIVE_INTERVAL, notebook_cluster_name
from .display import PhaseDisplay

log = logging.getLogger("jupyter_elastic.kernel.session")


class ElasticSession:
    """A kernel's lease on a cluster, its Dask client and the heartbeat that keeps it."""

    def __init__(self, control_plane: ControlPlane | None = None, session_id: str | None = None):
        self.id = session_id or _kernel_id()
        self._control_plane = control_plane
        self.lease: dict[str, Any] | None = None
        self.client: Any = None
        #: Events the workers send for this session's cells (``Worker.log_event``).
        self.events: queue.Queue[Any] = queue.Queue()
        #: Content tokens of the large inputs the current cluster's workers already hold.
        self.sent_tokens: set[str] = set()
        self.topic = ""
        #: Why the control plane stopped the session's cluster, when it said so (its
        #: ``CLOSING_TOPIC`` event): a cell that fails as its workers go tells the user.
        self.closing_reason: str | None = None
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()  # the heartbeat thread's
        self._closed = False  # close() ran: the kernel is shutting down or unloaded us

    @property
    def control_plane(self) -> ControlPlane:
        if self._control_plane is None:
            if self._closed:  # the kernel shutting down: never a new one
                raise RuntimeError("this kernel's jupyter-elastic session is closed")
            self._control_plane = connect_control_plane()
        return self._control_plane

    @property
    def settings(self) -> Settings:
        return load_settings()

    def ensure_cluster(self, backend: str | None = None, gpu_type: str | None = None,
                       phases: PhaseDisplay | None = None, name: str | None = None) -> dict[str, Any]:
        """The lease of this session's cluster, starting one (with phases shown) if needed."""
        backend = backend or self.settings.backend
        name = name or session_cluster_name(backend)
        if (self.lease is not None and self.lease["backend"] == backend
                and (name is None or self.lease["name"] == name) and self._still_connected()):
            return self.lease
        keep_library_logs_out_of_cells()
        progress: queue.Queue[tuple[str, str]] = queue.Queue()
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jupyter-elastic-start")
        future = pool.submit(
            self.control_plane.acquire, self.id, backend=backend, name=name, gpu_type=gpu_type,
            progress=lambda phase, detail: progress.put((phase, detail)),
        )
        last = ("", "")
        try:
            while True:
                try:
                    phase, detail = progress.get(timeout=0.1)
                    last = (phase, detail)
                    if phases is not None and phase != "ready":
                        phases.show(phase, detail)
                except queue.Empty:
                    if future.done():
                        break
                    if phases is not None and phases.shown:
                        phases.show(phases.phase)
        except KeyboardInterrupt:
            if last[0] == "queued" and last[1] and self._leave_queue(backend, name):
                raise CellCancelled(
                    "stopped while waiting in the queue: the request left it (run the cell "
                    "again to queue again)") from None
            # The start goes on in the background; the next cell picks the cluster up.
            raise CellCancelled(
                "interrupted while the cluster was starting; it keeps starting, and the next "
                "%%gpu cell uses it (%gpu stop to stop it)"
            ) from None
        finally:
            pool.shutdown(wait=False)
        lease = future.result()
        self._connect(lease)
        return lease

    def _leave_queue(self, backend: str, name: str | None) -> bool:
        """Stop this notebook's cluster that waits in a queue (the stop button): the
        backend withdraws its request. False when it could not be found or stopped."""
        try:
            for cluster in self.control_plane.clusters():
                if cluster["status"] == "starting" and cluster["phase"] == "queued" and \
                        cluster["backend"] == backend and (name is None or cluster["name"] == name):
                    self.control_plane.stop(cluster["id"])
                    return True
        except Exception:
            log.debug("could not leave the queue", exc_info=True)
        return False

    def _connect(self, lease: dict[str, Any]) -> None:
        self._disconnect()
        # the cluster's TLS credentials are handed to this kernel only (its lease)
        client = lease_client(lease)
        try:
            reruns_off = lease.get("backend") == "local" or no_silent_reruns(client)
        except BaseException:  # the stop button meanwhile: no client left behind
            client.close()
            raise
        if not reruns_off:
            log.warning("the %s scheduler at %s did not take allowed-failures 0: Dask may re-run "
                        "a cell whose worker dies", lease.get("backend"), lease["scheduler_address"])
        try:
            client.scheduler_comm.interval = INTERACTIVE_INTERVAL  # cells are rare: send at once
        except AttributeError:
            pass
        self.topic = f"jupyter-elastic-{self.id}-{uuid.uuid4().hex[:6]}"
        client.subscribe_topic(self.topic, lambda event: self.events.put(event[1]))
        self.closing_reason = None
        client.subscribe_topic(CLOSING_TOPIC, self._closing)
        self.client, self.lease = client, lease
        self.sent_tokens.clear()
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="jupyter-elastic-heartbeat", daemon=True)
            self._heartbeat.start()

    def _closing(self, event: Any) -> None:
        reason = event[1].get("reason") if isinstance(event[1], dict) else None
        self.closing_reason = str(reason or "stopped by the control plane")[:200]

    def _still_connected(self) -> bool:
        """Whether the session's client can still reach its cluster. When Dask lost the
        scheduler (its process died with the server that hosted it, or the network to it
        was cut), the lease says whether the cluster is still there: if it is, Dask's own
        reconnection goes on, or a new client connects when Dask gave up; if it is not
        (or the control plane does not answer), the session lets the cluster go and the
        cell gets a new one."""
        client, lease = self.client, self.lease
        status = getattr(client, "status", "closed")
        if status in ("running", "newly-created") or lease is None:
            return True
        try:
            alive = self.control_plane.heartbeat(lease["lease_id"])
        except Exception:
            alive = False
        if alive and status == "connecting":
            return True
        if alive:
            self._connect(lease)
            return True
        self._disconnect()
        return False

    def _disconnect(self) -> None:
        client, self.client, self.lease = self.client, None, None
        if client is not None:
            try:
                client.close(timeout=5)
            except Exception:
                pass

    def _beat(self) -> None:
        while not self._stop.is_set():
            lease = self.lease
            ttl = float(lease["lease_ttl"]) if lease else 30.0
            if self._stop.wait(max(0.2, min(ttl / 4, 10.0))):
                return
            lease = self.lease
            if lease is None:
                continue
            try:
                alive = self.control_plane.heartbeat(lease["lease_id"])
            except Exception:
                continue
            if not alive and self.lease is lease:
                self._disconnect()  # the cluster is gone; the next cell starts a new one

    def forget_cluster(self, cluster_id: str | None = None) -> None:
        """Drop the client after the session's cluster was stopped."""
        if self.lease is not None and (cluster_id is None or self.lease["cluster_id"] == cluster_id):
            self._disconnect()

    def close(self, *, keep: bool = False, exiting: bool = False) -> None:
        """Release the lease and close the client (kernel shutdown or %unload_ext): the
        cluster stops unless another kernel holds it; ``keep`` (a kernel restarting) leaves
        it for lease-ttl, for the restarted kernel to lease again by notebook name.
        ``exiting``: the process exits next (an embedded control plane's helper processes
        are stopped too)."""
        self._closed = True
        self._stop.set()
        lease = self.lease
        self._disconnect()
        if lease is not None:
            try:
                self.control_plane.release(lease["lease_id"], keep=keep)
            except Exception:
                pass
        if self._control_plane is not None:
            control_plane, self._control_plane = self._control_plane, None
            control_plane.close()
            if exiting:
                control_plane.stop_helper_processes()



_LIBRARY_LOGGERS = ("distributed", "tornado", "bokeh", "asyncio")


def keep_library_logs_out_of_cells() -> None:
    """Dask's own log lines in this kernel (its client; with the embedded control plane
    also the scheduler and nannies) go to the kernel's log, never into a user's cell.

    Dask's logging handlers write to the ``sys.stderr`` of the moment distributed was
    imported: in a kernel that is ipykernel's stream, which shows them in whatever cell
    runs (a heartbeat ``CommClosedError`` after ``%gpu stop``, "Task ... marked as failed").
    They are pointed at the kernel process's own stderr, as it was before ipykernel
    captured it (the Jupyter server's log). Idempotent.
    """
    import logging
    import sys

    import distributed  # noqa: F401  (its handlers exist once it is imported)

    stream = sys.stderr
    if not type(stream).__module__.startswith("ipykernel"):
        return
    target = _kernel_log_stream(stream)
    names = [n for n in list(logging.root.manager.loggerDict)
             if n.split(".")[0] in _LIBRARY_LOGGERS]
    for name in [*_LIBRARY_LOGGERS, *names]:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                handler.setStream(target)
    # asyncio has no handler of its own: its "exception was never retrieved" lines would
    # reach logging's last resort, which writes to the current sys.stderr (the cell).
    asyncio_log = logging.getLogger("asyncio")
    if not asyncio_log.handlers:
        asyncio_log.addHandler(logging.StreamHandler(target))
        asyncio_log.propagate = False


@functools.lru_cache(maxsize=1)
def _kernel_log_stream(stream: Any) -> Any:
    """A text stream on the kernel's stderr before ipykernel redirected it."""
    import sys

    fd = getattr(stream, "_original_stdstream_copy", None)
    if fd is None:
        return sys.__stderr__
    try:
        return open(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    except OSError:
        return sys.__stderr__



def session_cluster_name(backend: str = "local") -> str | None:
    """A stable cluster name for this notebook and backend (see ``_cluster_name``)."""
    return _cluster_name(os.environ.get("JPY_SESSION_NAME"), backend)


@functools.lru_cache(maxsize=16)
def _cluster_name(path: str | None, backend: str) -> str | None:
    """A stable cluster name for this notebook and backend, so a restarted kernel finds its
    cluster (one per backend: ``%%gpu --backend`` may use several).

    Jupyter servers set ``JPY_SESSION_NAME`` (the notebook's path) for the kernels they
    start; elsewhere there is no notebook identity and each kernel gets a fresh cluster.
    """
    return notebook_cluster_name(path, backend)


def kernel_restarting() -> bool:
    """Whether this kernel is shutting down to be restarted: the ``restart`` flag of the
    ``shutdown_request`` ipykernel answered (False outside a kernel, or for a plain close)."""
    try:
        from ipykernel.kernelapp import IPKernelApp

        if IPKernelApp.initialized():
            message = getattr(IPKernelApp.instance().kernel, "_shutdown_message", None)
            return bool(message and message["content"].get("restart"))
    except Exception:
        pass
    return False


def _kernel_id() -> str:
    """This kernel's id (from its connection file) or a random one outside a kernel."""
    try:
        from ipykernel.kernelapp import IPKernelApp

        if IPKernelApp.initialized():
            path = IPKernelApp.instance().connection_file
            name = os.path.basename(path)
            if name.startswith("kernel-") and name.endswith(".json"):
                return name[len("kernel-"):-len(".json")]
    except Exception:
        pass
    return uuid.uuid4().hex
