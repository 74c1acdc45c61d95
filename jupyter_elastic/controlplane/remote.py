"""The REST API's one HTTP client, and the kernel's handle on the server's control plane.

:class:`ApiClient` is the only Python code that speaks the extension's REST API: plain
``urllib`` (no proxies: the server is local), token authentication, JSON in and out, and
errors turned back into the ``ElasticError`` subclass the server reported. The CLI uses it
as it is; :class:`RemoteControlPlane` (what ``connect_control_plane()`` returns when a
server running the extension started the kernel) builds the control-plane interface on it.
``cell_started`` and ``cell_finished`` are on a cell's dispatch path, so they only enqueue;
one background thread sends them in order. ``acquire`` reads the server's NDJSON stream and
calls ``progress(phase, detail)`` as each start-up phase arrives.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..errors import (
    BackendUnavailable,
    ClusterNotFound,
    ClusterStartError,
    ConfigError,
    ElasticError,
    QuotaExceeded,
)
from ..protocol import API_PATH, LEASE_SECRET_HEADER, SERVER_URL_ENV, Progress
from .base import ControlPlane, LeaseBook

log = logging.getLogger("jupyter_elastic.controlplane.remote")

#: Seconds to wait for a plain request (a cluster start streams, and has no such limit).
REQUEST_TIMEOUT = 60.0

_ERRORS: dict[int, type[ElasticError]] = {
    400: ConfigError,
    404: ClusterNotFound,
    503: BackendUnavailable,
}


#: In a lease's event stream the status is always an ``ElasticError``'s own (the reply
#: itself was a 200), and 403 there is only ``QuotaExceeded``: a hub's gateway refused.
_STREAM_ERRORS: dict[int, type[ElasticError]] = {**_ERRORS, 403: QuotaExceeded}


def error_for(status: int, message: str, *, streamed: bool = False) -> ElasticError:
    """The ``ElasticError`` for an HTTP status and the server's message (``streamed``: an
    error event of a lease's stream)."""
    cls = (_STREAM_ERRORS if streamed else _ERRORS).get(status, ElasticError)
    exc = cls(message, hint="") if cls is ClusterNotFound else cls(message)
    exc.status_code = status
    exc.http_status = status  # type: ignore[attr-defined]  # the server answered (not a network fault)
    return exc


class ApiClient:
    """JSON requests to ``{url}jupyter-elastic/api/`` with ``Authorization: token ...``.

    Examples
    --------
    ::

        api = ApiClient("http://127.0.0.1:8888/", token)
        clusters = api.request("GET", "clusters")["clusters"]
    """

    def __init__(self, url: str, token: str, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.base = (url if url.endswith("/") else url + "/") + API_PATH + "/"
        self.token = token
        self.timeout = timeout
        # The server is this machine's Jupyter server: never route through an HTTP proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON reply (None for 204), or an ElasticError."""
        response = self.open(method, path, body, timeout=timeout or self.timeout, headers=headers)
        with response:
            data = response.read()
        return json.loads(data) if data else None

    def open(self, method: str, path: str, body: Any, *, timeout: float | None,
             headers: dict[str, str] | None = None) -> Any:
        """Send one request and return the open response (for streamed replies)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"token {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            try:
                message = json.loads(raw).get("message") or exc.reason
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace").strip() or str(exc.reason)
            raise error_for(exc.code, str(message)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(
                f"cannot reach the Jupyter server's control plane at {self.base}: {reason}",
                hint=f"Restart the kernel, or unset {SERVER_URL_ENV} to run clusters "
                "inside this kernel",
            ) from None

    @staticmethod
    def quote(value: str) -> str:
        """``value`` as one URL path segment."""
        return urllib.parse.quote(value, safe="")


class RemoteControlPlane(ControlPlane):
    """Control plane calls sent to the Jupyter server that started this kernel.

    Examples
    --------
    ::

        plane = RemoteControlPlane("http://127.0.0.1:8888/", token)
        lease = plane.acquire("kernel-1", progress=lambda phase, detail: print(phase))
        plane.cell_started(lease["cluster_id"])
    """

    kind = "server"

    def __init__(self, url: str, token: str, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.api = ApiClient(url, token, timeout=timeout)
        self._outbox: queue.Queue[tuple[str, dict[str, Any], str | None] | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()
        self._closed = False
        self._leases = LeaseBook()

    @property
    def base(self) -> str:
        return self.api.base

    @property
    def token(self) -> str:
        return self.api.token

    def _request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
        secret: str | None = None,
    ) -> Any:
        headers = {LEASE_SECRET_HEADER: secret} if secret else None
        return self.api.request(method, path, body, timeout=timeout, headers=headers)

    _quote = staticmethod(ApiClient.quote)

    # ------------------------------------------------------------------ leases
    def acquire(
        self,
        session: str,
        *,
        backend: str | None = None,
        name: str | None = None,
        gpu_type: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        body = {"session": session, "backend": backend, "name": name, "gpu_type": gpu_type}
        body = {k: v for k, v in body.items() if v is not None}
        # No read timeout: a cold start can take minutes, and the server streams phases.
        response = self.api.open("POST", "leases", body, timeout=None)
        with response:
            try:
                return self._leases.add(self._read_lease(response, progress))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise BackendUnavailable(
                    f"the connection to the Jupyter server broke while the cluster started "
                    f"({type(exc).__name__}: {exc})",
                    hint="run the cell again: a cluster that finished starting is reused",
                ) from None

    @staticmethod
    def _read_lease(response: Any, progress: Progress | None) -> dict[str, Any]:
        """Follow the server's start-up stream to its lease (or its error)."""
        for raw in response:
            if not raw.strip():
                continue
            event = json.loads(raw)
            kind = event.get("event")
            if kind == "progress":
                if progress is not None:
                    try:
                        progress(event.get("phase", ""), event.get("detail", ""))
                    except Exception:
                        log.debug("progress callback failed", exc_info=True)
            elif kind == "lease":
                return event["lease"]
            elif kind == "error":
                raise error_for(int(event.get("status_code", 500)), event.get("message", ""),
                                streamed=True)
        raise ClusterStartError("the Jupyter server closed the connection before the cluster was ready")

    def heartbeat(self, lease_id: str) -> bool:
        try:
            self._request("POST", f"leases/{self._quote(lease_id)}/heartbeat", {},
                          secret=self._leases.secret(lease_id))
        except ClusterNotFound:
            return False
        return True

    def release(self, lease_id: str, *, keep: bool = False) -> None:
        try:
            self._request("DELETE", f"leases/{self._quote(lease_id)}" + ("?keep=1" if keep else ""),
                          secret=self._leases.secret(lease_id))
        except ClusterNotFound:
            pass  # already lapsed
        finally:
            self._leases.forget(lease_id)

    # ------------------------------------------------------------------ cells (async)
    def cell_started(self, cluster_id: str, timeout: float | None = None) -> None:
        held = self._leases.on(cluster_id)
        if held is not None:  # no lease on it: nothing of ours to count
            self._post_later("cells/start", {"lease_id": held[0], "timeout": timeout}, held[1])

    def cell_finished(self, cluster_id: str | None, row: dict[str, Any]) -> None:
        held = self._leases.on(cluster_id)
        body: dict[str, Any] = {"row": row}
        if held is not None:
            body["lease_id"] = held[0]
        self._post_later("cells/finish", body, held[1] if held else None)

    def _post_later(self, path: str, body: dict[str, Any], secret: str | None = None) -> None:
        if self._closed:
            return
        self._outbox.put((path, body, secret))
        if self._sender is None:
            with self._sender_lock:
                if self._sender is None:
                    self._sender = threading.Thread(
                        target=self._send_forever, name="jupyter-elastic-cell-events", daemon=True
                    )
                    self._sender.start()

    def _send_forever(self) -> None:
        while True:
            item = self._outbox.get()
            try:
                if item is None:
                    return
                path, body, secret = item
                try:
                    try:
                        self._request("POST", path, body, secret=secret)
                    except ClusterNotFound:
                        if path != "cells/finish" or "lease_id" not in body:
                            raise
                        # the lease lapsed meanwhile: keep the row in history all the same
                        self._request("POST", path, {"row": body["row"]})
                except Exception as exc:  # never let a report break the kernel
                    log.warning("jupyter-elastic: could not report %s: %s", path, exc)
            finally:
                self._outbox.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until queued cell events are sent; False if ``timeout`` passed first."""
        done = threading.Event()

        def wait() -> None:
            self._outbox.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    # ------------------------------------------------------------------ clusters
    def clusters(self, *, details: bool = False) -> list[dict[str, Any]]:
        return self._request("GET", "clusters?details=1" if details else "clusters")["clusters"]

    def cluster(self, cluster_id: str) -> dict[str, Any]:
        return self._request("GET", f"clusters/{self._quote(cluster_id)}")

    def scale(self, cluster_id: str, n: int) -> dict[str, Any]:
        return self._request("POST", f"clusters/{self._quote(cluster_id)}/scale", {"n": n})

    def adapt(self, cluster_id: str, minimum: int, maximum: int) -> dict[str, Any]:
        return self._request(
            "POST",
            f"clusters/{self._quote(cluster_id)}/adapt",
            {"minimum": minimum, "maximum": maximum},
        )

    def set_idle_timeout(self, cluster_id: str, seconds: float) -> dict[str, Any]:
        return self._request(
            "PUT", f"clusters/{self._quote(cluster_id)}/idle-timeout", {"seconds": seconds}
        )

    def stop(self, cluster_id: str) -> None:
        self._request("DELETE", f"clusters/{self._quote(cluster_id)}")

    def history(self, notebook: str | None = None) -> list[dict[str, Any]]:
        query = "" if notebook is None else "?notebook=" + self._quote(notebook)
        return self._request("GET", "history" + query)

    def usage(self) -> dict[str, Any]:
        return self._request("GET", "usage")

    def close(self) -> None:
        """Send what is queued (briefly), then stop the sender; the clusters stay on the server."""
        if self._closed:
            return
        self._closed = True
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join(timeout=5)
