"""REST API of the server extension, under ``{base_url}jupyter-elastic/api``.

Thin handlers: parse the request, call the :class:`~jupyter_elastic.controlplane.manager.ElasticClusterManager`,
write JSON (snake_case). Every handler is ``@web.authenticated`` and XSRF-protected like any
Jupyter endpoint; bad input is a 400 whose ``{"message": ...}`` names the field, an unknown
id a 404, and :func:`http_errors` is the one place that turns an ``ElasticError`` into its
HTTP status. Full reference with examples: ``docs/rest-api.md``.

Public endpoints (the sidebar, scripts)::

    GET    /clusters[?details=1]             -> 200 {"clusters": [cluster, ...]}
    POST   /clusters {backend?, workers?, gpus?, name?}  -> 201 cluster
    GET    /clusters/{id}                    -> 200 cluster + worker_details
    DELETE /clusters/{id}                    -> 204
    POST   /clusters/{id}/scale {n}          -> 200 cluster
    POST   /clusters/{id}/adapt {minimum, maximum}       -> 200 cluster
    PUT    /clusters/{id}/idle-timeout {seconds}         -> 200 cluster
    GET    /history[?notebook=PATH]          -> 200 [history row, ...]   (oldest first)
    GET    /usage                            -> 200 usage totals
    GET    /openapi.json                     -> 200 this API as an OpenAPI 3 document
    GET    /timeline                         -> 200 {now, interval, window, samples}  (last hour)
    POST   /prewarm {path}                   -> 200 {cluster, started}  (the lab extension,
           when a %%gpu cell is typed: start that notebook's scheduler ahead of the cell)

Kernel-internal endpoints (``RemoteControlPlane``; also open to the server's own auth)::

    POST   /leases {session, backend?, name?, gpu_type?}
           -> 200, application/x-ndjson, one JSON object per line, flushed as it happens:
              {"event": "progress", "phase", "detail", "elapsed"}   (queued, scheduler,
              workers, ready), then exactly one of
              {"event": "lease", "lease": {...}}   or
              {"event": "error", "status_code", "message"}
    POST   /leases/{lease_id}/heartbeat      -> 200 {"lease_id", "alive": true} | 404
    DELETE /leases/{lease_id}                -> 204 | 404
    POST   /cells/start {lease_id, timeout?} -> 204 | 404
    POST   /cells/finish {lease_id?, row}    -> 204 | 404 (row: a history row)

Requests on a lease carry its secret (``lease_secret`` in the lease JSON, returned only to
the caller that acquired it) in the ``X-Elastic-Lease-Secret`` header; an unknown lease and
a missing or wrong secret get the same 404.

Kernels started by this server authenticate with ``Authorization: token
$JUPYTER_ELASTIC_TOKEN`` (a secret the extension makes per server start); any request
without it goes through the server's normal authentication.

Why one module this long: one small handler class per endpoint, each a few lines; the
route table at the end is the whole API at a glance.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from jupyter_server.auth.identity import User
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from ..config import check_backend, parse_duration, parse_gpus, quote, short_text, whole
from ..controlplane.manager import ElasticClusterManager
from ..errors import ConfigError, ElasticError
from ..models import HistoryRow, check_cluster_name
from ..protocol import API_PATH, LEASE_SECRET_HEADER
from .prewarm import kernel_notebook, prewarm_notebook

API_PREFIX = "/" + API_PATH
KERNEL_USER = "jupyter-elastic-kernel"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@contextlib.contextmanager
def http_errors() -> Iterator[None]:
    """Turn an ``ElasticError`` into an ``HTTPError`` with its ``status_code`` and message."""
    try:
        yield
    except ElasticError as exc:
        raise web.HTTPError(exc.status_code, exc.message) from exc


def _bad(message: str) -> web.HTTPError:
    return web.HTTPError(400, message)


#: Largest worker count a request may name (max-workers is far lower; this bounds messages).
MAX_COUNT = 1_000_000
#: Longest cluster or lease id in a path (ours are 12 hex characters, leases 18).
MAX_ID_CHARS = 64


def _whole(body: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    """``body[key]`` as an int in [0, MAX_COUNT] (``None`` if absent and not required)."""
    if key not in body or body[key] is None:
        if required:
            raise _bad(f"missing field {key!r}: a whole number >= 0")
        return None
    try:
        return whole(body[key], f"field {key!r}", text=False, maximum=MAX_COUNT)
    except ConfigError as exc:
        raise _bad(exc.message) from None


def _text(body: dict[str, Any], key: str, *, required: bool = False, limit: int = 200) -> str | None:
    """``body[key]`` as a non-empty string of at most ``limit`` characters."""
    if key not in body or body[key] is None:
        if required:
            raise _bad(f"missing field {key!r}: a string")
        return None
    try:
        return short_text(body[key], f"field {key!r}", limit=limit)
    except ConfigError as exc:
        raise _bad(exc.message) from None


def _known_id(value: str, what: str) -> str:
    """A cluster or lease id from the path; longer than any id we make: 404 at once."""
    if len(value) > MAX_ID_CHARS:
        raise web.HTTPError(404, f"no {what} with id {quote(value)}")
    return value


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _bad(f"unknown field {quote(unknown[0])}; accepted fields: {', '.join(allowed)}")


class ElasticHandler(APIHandler):
    """Base: JSON in and out, the manager, kernel-token authentication, dashboard links."""

    @property
    def manager(self) -> ElasticClusterManager:
        return self.settings["jupyter_elastic_manager"]

    def _kernel_token_ok(self) -> bool:
        expected = self.settings.get("jupyter_elastic_kernel_token") or ""
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        return bool(
            expected
            and scheme.lower() == "token"
            and hmac.compare_digest(token.strip().encode(), expected.encode())
        )

    async def prepare(self) -> None:  # type: ignore[override]
        if self._kernel_token_ok():
            # A kernel of this server, holding the per-start secret: a bearer token like
            # Jupyter's own, so no XSRF cookie is involved.
            if not self.check_host():
                raise web.HTTPError(403)
            self.current_user = self._jupyter_current_user = User(username=KERNEL_USER)
        else:
            await super().prepare()
        for key, what in (("cluster_id", "cluster"), ("lease_id", "lease")):
            if key in self.path_kwargs and self.current_user:
                _known_id(self.path_kwargs[key], what)
        await self.manager.start()  # idempotent: the reaper runs once the loop does

    def read_json(self) -> dict[str, Any]:
        """The request body as a JSON object (``{}`` when empty); 400 otherwise."""
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _bad(f"request body is not valid JSON: {quote(str(exc), 200)}") from None
        except RecursionError:  # [[[[...]]]] nested deeper than the decoder's stack
            raise _bad("request body is nested too deeply to be a request") from None
        if not isinstance(data, dict):
            raise _bad("request body must be a JSON object")
        return data

    def write_json(self, data: Any, status: int = 200) -> None:
        """Finish with ``data`` as JSON: strict JSON, so a NaN or an infinity anywhere is
        an error here rather than ``Infinity`` in a reply no JSON parser reads."""
        try:
            text = json.dumps(data, allow_nan=False)
        except ValueError:  # the bounds in models/metering make this a bug, never user input
            self.log.error("jupyter-elastic: a reply held NaN or an infinity: %.300r", data)
            raise web.HTTPError(500, "the reply held a number that is not finite; this is a "
                                     "bug in jupyter-elastic, please report it") from None
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(text)

    @property
    def lease_secret(self) -> str | None:
        """The lease secret this request presents (bounded; None when absent)."""
        value = self.request.headers.get(LEASE_SECRET_HEADER)
        return value[:200] if value else None

    @staticmethod
    def no_lease(lease_id: str) -> web.HTTPError:
        """The one answer for an unknown lease and a missing or wrong secret alike."""
        return web.HTTPError(
            404,
            f"no live lease with id {quote(lease_id)} and the secret in the "
            f"{LEASE_SECRET_HEADER} header; acquire a new lease (POST /leases)",
        )

    def public(self, cluster: dict[str, Any]) -> dict[str, Any]:
        """A cluster (or lease) with its dashboard link reachable through this server."""
        link = cluster.get("dashboard_link")
        if link and self.settings.get("jupyter_elastic_proxy", False):
            url = urllib.parse.urlsplit(link)
            if url.hostname in _LOCAL_HOSTS and url.port:
                path = url_path_join(self.base_url, "proxy", str(url.port), url.path or "/status")
                cluster = {**cluster, "dashboard_link": path}
        return cluster


class ClusterListHandler(ElasticHandler):
    """``GET /clusters`` lists every cluster; ``POST /clusters`` starts one."""

    @web.authenticated
    async def get(self) -> None:
        # details=1: each cluster's workers as the reaper last read them (every pass, at most a
        # second ago), so a sidebar polling every 2 s costs no call to any scheduler;
        # GET /clusters/{id} reads one cluster's workers fresh.
        details = self.get_query_argument("details", "0")[:8] not in ("0", "", "false")
        clusters = self.manager.list_clusters(details=details)
        self.write_json({"clusters": [self.public(c) for c in clusters]})

    @web.authenticated
    async def post(self) -> None:
        body = self.read_json()
        _only(body, ("backend", "workers", "gpus", "name"))
        backend = _text(body, "backend")
        name = _text(body, "name")
        workers = _whole(body, "workers")
        gpus = body.get("gpus")
        with http_errors():
            if backend is not None:
                check_backend(backend)
            if name is not None:
                check_cluster_name(name)
            if gpus is not None:
                gpus = parse_gpus(gpus, what="gpus")
            cluster = await self.manager.create_cluster(
                backend=backend, name=name, workers=workers, gpus=gpus
            )
        self.write_json(self.public(cluster), status=201)


class ClusterHandler(ElasticHandler):
    """``GET /clusters/{id}`` (with ``worker_details``); ``DELETE`` stops it."""

    @web.authenticated
    async def get(self, cluster_id: str) -> None:
        with http_errors():
            cluster = await self.manager.get_cluster(cluster_id)
        self.write_json(self.public(cluster))

    @web.authenticated
    async def delete(self, cluster_id: str) -> None:
        with http_errors():
            await self.manager.close_cluster(cluster_id, reason="stopped through the REST API")
        self.set_status(204)
        self.finish()


class ScaleHandler(ElasticHandler):
    """``POST /clusters/{id}/scale {"n": N}``: fixed size N."""

    @web.authenticated
    async def post(self, cluster_id: str) -> None:
        body = self.read_json()
        _only(body, ("n",))
        n = _whole(body, "n", required=True)
        with http_errors():
            cluster = await self.manager.scale(cluster_id, n)
        self.write_json(self.public(cluster))


class AdaptHandler(ElasticHandler):
    """``POST /clusters/{id}/adapt {"minimum": a, "maximum": b}``: adaptive in [a, b]."""

    @web.authenticated
    async def post(self, cluster_id: str) -> None:
        body = self.read_json()
        _only(body, ("minimum", "maximum"))
        minimum = _whole(body, "minimum", required=True)
        maximum = _whole(body, "maximum", required=True)
        assert minimum is not None and maximum is not None
        if minimum > maximum:
            raise _bad(f"field 'minimum' ({minimum}) must not be above 'maximum' ({maximum})")
        with http_errors():
            cluster = await self.manager.adapt(cluster_id, minimum, maximum)
        self.write_json(self.public(cluster))


class IdleTimeoutHandler(ElasticHandler):
    """``PUT /clusters/{id}/idle-timeout {"seconds": s}`` (a number, or a string like "90s")."""

    @web.authenticated
    async def put(self, cluster_id: str) -> None:
        body = self.read_json()
        _only(body, ("seconds",))
        if body.get("seconds") is None or isinstance(body["seconds"], bool):
            raise _bad("missing field 'seconds': a number of seconds or a duration like '90s'")
        with http_errors():
            seconds = parse_duration(body["seconds"], what="seconds")
            cluster = await self.manager.set_idle_timeout(cluster_id, seconds)
        self.write_json(self.public(cluster))


class HistoryHandler(ElasticHandler):
    """``GET /history``: one row per ``%%gpu`` cell, oldest first."""

    @web.authenticated
    async def get(self) -> None:
        notebook = self.get_query_argument("notebook", None)
        if notebook is not None and len(notebook) > 1024:
            raise _bad("query argument 'notebook' must be at most 1024 characters")
        self.write_json(self.manager.history(notebook))


class UsageHandler(ElasticHandler):
    """``GET /usage``: GPU/CPU-seconds and cost over live clusters and recorded cells."""

    @web.authenticated
    async def get(self) -> None:
        self.write_json(self.manager.usage())


class QuotaHandler(ElasticHandler):
    """``GET /quota``: this user's quota and what holds it, where the backend enforces one
    (a shared hub's gateway with ``jupyter_elastic.hub.gateway``)."""

    @web.authenticated
    async def get(self) -> None:
        with http_errors():
            report = await self.manager.quota()
        self.write_json(report)


class TimelineHandler(ElasticHandler):
    """``GET /timeline``: workers, GPUs, cost and busy over the last hour, one sample per 10 s."""

    @web.authenticated
    async def get(self) -> None:
        self.write_json(self.manager.timeline.to_json(time.time()))


class PrewarmHandler(ElasticHandler):
    """``POST /prewarm {"path"}``: the notebook open at ``path`` (its API path, as in
    ``/api/sessions``) is about to run a ``%%gpu`` cell: start its cluster's scheduler now
    (``server/prewarm.py``). ``{"cluster": name, "started": bool}``; ``cluster`` is null
    when ``prewarm`` is off; 404 when no kernel is open for that notebook."""

    @web.authenticated
    async def post(self) -> None:
        body = self.read_json()
        _only(body, ("path",))
        path = _text(body, "path", required=True, limit=1024)
        assert path is not None
        try:
            session = await self.session_manager.get_session(path=path)
        except web.HTTPError:
            session = None
        kernel = (session or {}).get("kernel") or {}
        notebook = kernel_notebook(self.kernel_manager, kernel["id"]) if kernel.get("id") else None
        if notebook is None:
            raise web.HTTPError(404, f"no kernel is open for the notebook {quote(path)}; open "
                                     "it (POST /api/sessions) before pre-warming its cluster")
        with http_errors():
            name, started = await prewarm_notebook(self.manager, notebook)
        self.write_json({"cluster": name, "started": started})


class LeaseListHandler(ElasticHandler):
    """``POST /leases``: a kernel's cluster and lease, streaming start-up phases (NDJSON)."""

    @web.authenticated
    async def post(self) -> None:
        body = self.read_json()
        _only(body, ("session", "backend", "name", "gpu_type"))
        session = _text(body, "session", required=True)
        backend = _text(body, "backend")
        name = _text(body, "name")
        gpu_type = _text(body, "gpu_type")
        with http_errors():
            if backend is not None:
                check_backend(backend)
            if name is not None:
                check_cluster_name(name)
        assert session is not None

        began = time.monotonic()
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def progress(phase: str, detail: str) -> None:
            events.put_nowait(
                {
                    "event": "progress",
                    "phase": phase,
                    "detail": detail,
                    "elapsed": round(time.monotonic() - began, 3),
                }
            )

        task = asyncio.ensure_future(
            self.manager.acquire(
                session, backend=backend, name=name, gpu_type=gpu_type, progress=progress
            )
        )
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        while not (task.done() and events.empty()):
            getter = asyncio.ensure_future(events.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            if not await self._send(getter.result()):
                return  # the kernel went away; an unheartbeated lease lapses on its own
        exc = task.exception()
        if exc is None:
            await self._send({"event": "lease", "lease": self.public(task.result())})
        elif isinstance(exc, ElasticError):
            await self._send(
                {"event": "error", "status_code": exc.status_code, "message": exc.message}
            )
        else:
            self.log.error("jupyter-elastic: acquire failed", exc_info=exc)
            await self._send(
                {"event": "error", "status_code": 500, "message": f"{type(exc).__name__}: {exc}"}
            )
        self.finish()

    async def _send(self, event: dict[str, Any]) -> bool:
        try:
            self.write(json.dumps(event) + "\n")
            await self.flush()
        except StreamClosedError:
            return False
        return True


class LeaseHeartbeatHandler(ElasticHandler):
    """``POST /leases/{id}/heartbeat``: renew; 404 when the lease lapsed or its cluster is gone."""

    @web.authenticated
    async def post(self, lease_id: str) -> None:
        if not self.manager.heartbeat(lease_id, self.lease_secret):
            raise self.no_lease(lease_id)
        self.write_json({"lease_id": lease_id, "alive": True})


class LeaseHandler(ElasticHandler):
    """``DELETE /leases/{id}``: give the lease up; its cluster stops unless another lease
    holds it (``?keep=1``, a restarting kernel: it stays for lease-ttl)."""

    @web.authenticated
    async def delete(self, lease_id: str) -> None:
        keep = self.get_query_argument("keep", "0")[:8] not in ("0", "", "false")
        if not await self.manager.release(lease_id, self.lease_secret, keep=keep):
            raise self.no_lease(lease_id)
        self.set_status(204)
        self.finish()


#: The API as an OpenAPI 3 document: the one machine-readable description (docs link to it).
OPENAPI_PATH = os.path.join(os.path.dirname(__file__), "openapi.json")


class OpenApiHandler(ElasticHandler):
    """``GET /openapi.json``: this API, with ``servers`` pointing at this server's base URL."""

    @web.authenticated
    async def get(self) -> None:
        with open(OPENAPI_PATH, encoding="utf-8") as f:
            document = json.load(f)
        document["servers"] = [{"url": url_path_join(self.base_url, API_PATH)}]
        self.write_json(document)


_ROW_REQUIRED = tuple(
    name
    for name, f in HistoryRow.__dataclass_fields__.items()
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


class CellStartHandler(ElasticHandler):
    """``POST /cells/start {"lease_id", "timeout"?}``: a cell of the lease's kernel began
    (restarts the idle clock; ``timeout``, seconds or a duration, bounds how long the lease
    outlives missed heartbeats while the cell may run)."""

    @web.authenticated
    async def post(self) -> None:
        body = self.read_json()
        _only(body, ("lease_id", "timeout"))
        lease_id = _text(body, "lease_id", required=True)
        assert lease_id is not None
        timeout = body.get("timeout")
        if isinstance(timeout, bool):
            raise _bad("field 'timeout' must be a number of seconds, a duration like '10m', or null")
        with http_errors():
            if timeout is not None:
                timeout = parse_duration(timeout, what="field 'timeout'")
            if self.manager.lease_of(lease_id, self.lease_secret) is None:
                raise self.no_lease(lease_id)
            self.manager.cell_started(lease_id, self.lease_secret, timeout)
        self.set_status(204)
        self.finish()


class CellFinishHandler(ElasticHandler):
    """``POST /cells/finish {"lease_id"?, "row"}``: a cell ended; ``row`` goes into history
    (with ``lease_id``: the cell ran on that lease's cluster, which counts it)."""

    @web.authenticated
    async def post(self) -> None:
        body = self.read_json()
        _only(body, ("lease_id", "row"))
        lease_id = _text(body, "lease_id")
        row = body.get("row")
        if not isinstance(row, dict):
            raise _bad("missing field 'row': a history row object")
        missing = [k for k in _ROW_REQUIRED if k not in row]
        if missing:
            raise _bad(f"field 'row' lacks {missing[0]!r} (required: {', '.join(_ROW_REQUIRED)})")
        if lease_id is not None and self.manager.lease_of(lease_id, self.lease_secret) is None:
            raise self.no_lease(lease_id)
        with http_errors():  # the manager checks each field's type and range
            self.manager.cell_finished(lease_id, self.lease_secret, row)
        self.set_status(204)
        self.finish()


_ID = r"(?P<{}>[^/]+)"
_CLUSTER = API_PREFIX + "/clusters/" + _ID.format("cluster_id")
_LEASE = API_PREFIX + "/leases/" + _ID.format("lease_id")

#: Routes (relative to ``base_url``) registered by ``ElasticExtension.initialize_handlers``.
default_handlers: list[tuple[str, type[ElasticHandler]]] = [
    (API_PREFIX + "/clusters", ClusterListHandler),
    (_CLUSTER, ClusterHandler),
    (_CLUSTER + "/scale", ScaleHandler),
    (_CLUSTER + "/adapt", AdaptHandler),
    (_CLUSTER + "/idle-timeout", IdleTimeoutHandler),
    (API_PREFIX + "/history", HistoryHandler),
    (API_PREFIX + "/usage", UsageHandler),
    (API_PREFIX + "/timeline", TimelineHandler),
    (API_PREFIX + "/quota", QuotaHandler),
    (API_PREFIX + "/prewarm", PrewarmHandler),
    (API_PREFIX + "/leases", LeaseListHandler),
    (_LEASE + "/heartbeat", LeaseHeartbeatHandler),
    (_LEASE, LeaseHandler),
    (API_PREFIX + "/cells/start", CellStartHandler),
    (API_PREFIX + "/cells/finish", CellFinishHandler),
    (API_PREFIX + "/openapi.json", OpenApiHandler),
]
