"""A small Kubernetes API server double for tests: real HTTP on 127.0.0.1, in a thread.

It answers what kr8s and dask-kubernetes ask (discovery, CRUD on namespaced resources,
label and field selectors, merge patches, SelfSubjectAccessReview) with the status codes
and ``Status`` bodies a real kube-apiserver sends: 404 NotFound, 409 AlreadyExists,
403 Forbidden with the RBAC sentence, 422 Invalid with causes (custom resources are checked
against the Dask operator's CRD schemas on create, as the API server does). Deleting an
object deletes its dependents (ownerReferences), as the garbage collector would.

Enough of the rest is there for the real operator (kopf) to run against it: watch streams
(``?watch=true&resourceVersion=R&timeoutSeconds=N``, newline-delimited ADDED/MODIFIED/DELETED
events after R, 410 Gone when R is older than the kept history), finalizers (DELETE sets
``deletionTimestamp`` while ``metadata.finalizers`` remain; removing the last one deletes the
object), RFC 6902 JSON patch with list indices and the ``test`` op (422 on a mismatch, as
kopf's optimistic finalizer patches expect), ``generateName``, Namespace objects,
``pods/NAME/log`` as text, and nulls pruned from custom resources and merge patches.

We wrote our own instead of using kmock 0.8 because kmock ignores label selectors (which
KubeCluster relies on to find the scheduler pod), assigns no uid/resourceVersion, and has
no RBAC or Status-body faults.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import itertools
import json
import random
import socket
import string
import threading
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from jupyter_elastic.backends.kubernetes.manifests import validate_manifest
from jupyter_elastic.errors import ConfigError

DASK = "kubernetes.dask.org/v1"
# (groupVersion, plural) -> (kind, namespaced)
CORE = {
    ("v1", "pods"): ("Pod", True),
    ("v1", "services"): ("Service", True),
    ("v1", "events"): ("Event", True),
    ("v1", "secrets"): ("Secret", True),
    ("v1", "nodes"): ("Node", False),
    ("v1", "namespaces"): ("Namespace", False),
    ("apps/v1", "deployments"): ("Deployment", True),
}
DASK_KINDS = {
    (DASK, "daskclusters"): ("DaskCluster", True),
    (DASK, "daskworkergroups"): ("DaskWorkerGroup", True),
    (DASK, "daskautoscalers"): ("DaskAutoscaler", True),
    (DASK, "daskjobs"): ("DaskJob", True),
}
USER = "system:serviceaccount:jhub:jupyter-alice"


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details or {}, "code": code}


def _resource_label(gv: str, plural: str) -> str:
    group = gv.rpartition("/")[0]
    return f"{plural}.{group}" if group else plural


def match_labels(obj: dict[str, Any], selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def match_fields(obj: dict[str, Any], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if str(_path(obj, k) or "") == v:
                return False
        else:
            k, v = term.replace("==", "=").split("=", 1)
            if str(_path(obj, k) or "") != v:
                return False
    return True


def prune_nulls(obj: Any) -> Any:
    """Drop null-valued keys, as the API server does for non-nullable fields of a CRD's
    structural schema (KubeCluster sends ``"env": null`` and ``"resources": null``)."""
    if isinstance(obj, dict):
        return {k: prune_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [prune_nulls(v) for v in obj]
    return obj


class PatchTestFailed(Exception):
    pass


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 (add, remove, replace, test, move, copy) with list indices and ``-``."""
    doc = copy.deepcopy(doc)

    def split(path: str) -> list[str]:
        return [k.replace("~1", "/").replace("~0", "~") for k in path.split("/")[1:]]

    def walk(keys: list[str]) -> Any:
        node = doc
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[k]
        return node

    def get(path: str) -> Any:
        return walk(split(path))

    def remove(path: str) -> Any:
        keys = split(path)
        parent = walk(keys[:-1])
        return parent.pop(int(keys[-1]) if isinstance(parent, list) else keys[-1])

    def add(path: str, value: Any) -> None:
        keys = split(path)
        if not keys:
            raise PatchTestFailed("cannot replace the root")
        parent = walk(keys[:-1])
        if isinstance(parent, list):
            if keys[-1] == "-":
                parent.append(value)
            else:
                parent.insert(int(keys[-1]), value)
        else:
            parent[keys[-1]] = value

    for op in ops:
        kind, path = op["op"], op["path"]
        try:
            if kind == "test":
                if get(path) != op.get("value"):
                    raise PatchTestFailed(f"the test operation on {path} failed")
            elif kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(path, remove(op["from"]))
            elif kind == "copy":
                add(path, copy.deepcopy(get(op["from"])))
            else:
                raise PatchTestFailed(f"unknown op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise PatchTestFailed(f"the {kind} operation on {path} failed: {exc!r}") from None
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class APIServer:
    """The double. ``forbid`` holds (verb, plural) pairs RBAC denies; ``dask_crds`` whether
    the operator's CRDs are installed. ``on_change`` callbacks run on the server's loop."""

    HISTORY = 20000  # watch events kept; an older resourceVersion gets 410 Gone

    def __init__(self, *, namespace: str = "jhub", dask_crds: bool = True) -> None:
        self.namespace = namespace
        self.dask_crds = dask_crds
        self.forbid: set[tuple[str, str]] = set()
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.watching: list[tuple[str, str, str]] = []  # (gv, plural, namespace) of every watch opened
        self.posted: list[dict[str, Any]] = []
        self.on_change: list[Callable[[], None]] = []
        # watch history: (resourceVersion, type, (gv, plural, ns, name), object)
        self.history: list[tuple[int, str, tuple[str, str, str, str], dict[str, Any]]] = []
        self.pod_logs: Callable[[str, str], str | None] = lambda namespace, name: None
        self._waiters: set[asyncio.Future[None]] = set()
        self._history_floor = 0
        self._closing = False
        self._rv = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="k8s-double", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> APIServer:
        self._thread.start()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.call(self._start())
        for ns in dict.fromkeys(["default", "kube-system", self.namespace]):
            self.sync(self.put, "v1", "namespaces", {"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]},
                                                     "status": {"phase": "Active"}})
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop_serving(self) -> None:
        """Close the socket: the API server becomes unreachable (objects are kept)."""
        if self._runner is not None:
            self._closing = True  # open watch streams end
            self._wake_watchers()
            self.call(self._runner.cleanup())
            self._runner = None

    def close(self) -> None:
        self.stop_serving()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return self.call(run())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "alice", "user": {"token": "test-token"}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "alice",
                                                         "namespace": self.namespace}}],
        })

    # ------------------------------------------------------------------ store (loop thread)
    def kinds(self) -> dict[tuple[str, str], tuple[str, bool]]:
        return {**CORE, **(DASK_KINDS if self.dask_crds else {})}

    def put(self, gv: str, plural: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create or replace an object directly (the operator's and kubelet's writes)."""
        kind, namespaced = self.kinds()[(gv, plural)]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        ns = (namespace or meta.get("namespace") or self.namespace) if namespaced else ""
        if namespaced:
            meta["namespace"] = ns
        key = (gv, plural, ns, meta["name"])
        old = self.objects.get(key)
        meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else now_iso())
        if old is not None and old["metadata"].get("deletionTimestamp"):
            meta.setdefault("deletionTimestamp", old["metadata"]["deletionTimestamp"])
        rv = next(self._rv)
        meta["resourceVersion"] = str(rv)
        obj["apiVersion"], obj["kind"] = gv, kind
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key] = obj  # the last finalizer went: now it is really deleted
            self._remove(key)
            return obj
        self.objects[key] = obj
        self._record(rv, "MODIFIED" if old is not None else "ADDED", key, obj)
        self._changed()
        return obj

    def get(self, gv: str, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = namespace or self.namespace if self.kinds().get((gv, plural), ("", True))[1] else ""
        return self.objects.get((gv, plural, ns, name))

    def list(self, gv: str, plural: str, namespace: str | None = None, labels: str | None = None,
             fields: str | None = None) -> list[dict[str, Any]]:
        return [o for (g, p, ns, _), o in list(self.objects.items())
                if g == gv and p == plural and (namespace is None or ns == namespace)
                and match_labels(o, labels) and match_fields(o, fields)]

    def delete(self, gv: str, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """Delete an object; one with finalizers only gets a ``deletionTimestamp`` until
        the last finalizer is removed (then it goes, and its dependents with it)."""
        ns = namespace or self.namespace if self.kinds().get((gv, plural), ("", True))[1] else ""
        key = (gv, plural, ns, name)
        obj = self.objects.get(key)
        if obj is None:
            return None
        if obj["metadata"].get("finalizers"):
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = now_iso()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return self.put(gv, plural, marked, ns)
        return self._remove(key)

    def _remove(self, key: tuple[str, str, str, str]) -> dict[str, Any] | None:
        obj = self.objects.pop(key, None)
        if obj is None:
            return None
        obj = copy.deepcopy(obj)
        rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(rv)
        self._record(rv, "DELETED", key, obj)
        uid = obj["metadata"]["uid"]
        for child_key, child in list(self.objects.items()):  # garbage collection
            owners = child["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners) and child_key in self.objects:
                self.delete(child_key[0], child_key[1], child_key[3], child_key[2])
        self._changed()
        return obj

    def _record(self, rv: int, type_: str, key: tuple[str, str, str, str], obj: dict[str, Any]) -> None:
        self.history.append((rv, type_, key, copy.deepcopy(obj)))
        if len(self.history) > self.HISTORY:
            self._history_floor = self.history[len(self.history) - self.HISTORY - 1][0]
            del self.history[: len(self.history) - self.HISTORY]
        self._wake_watchers()

    def _wake_watchers(self) -> None:
        def wake(waiter: asyncio.Future[None]) -> None:
            if not waiter.done():
                waiter.set_result(None)

        for waiter in list(self._waiters):
            self.loop.call_soon_threadsafe(wake, waiter)

    def event(self, involved: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        meta = involved["metadata"]
        self.put("v1", "events", {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta.get("namespace")},
            "involvedObject": {"kind": involved.get("kind"), "name": meta["name"],
                               "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "reason": reason, "message": message, "type": type_,
            "firstTimestamp": now_iso(), "lastTimestamp": now_iso(), "count": 1,
        })

    def _changed(self) -> None:
        for callback in list(self.on_change):
            callback()

    # ------------------------------------------------------------------ HTTP
    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status)

    def _forbidden(self, verb: str, gv: str, plural: str, ns: str, name: str | None) -> web.Response:
        group = gv.rpartition("/")[0]
        res = _resource_label(gv, plural)
        subject = f'{res} "{name}"' if name else res
        scope = f' in the namespace "{ns}"' if ns else " at the cluster scope"
        msg = (f'{subject} is forbidden: User "{USER}" cannot {verb} resource "{plural}" '
               f'in API group "{group}"{scope}')
        return self._json(status_body(403, "Forbidden", msg, {"name": name, "group": group, "kind": plural}) if name
                          else status_body(403, "Forbidden", msg, {"group": group, "kind": plural}), 403)

    def _not_found(self, gv: str, plural: str, name: str | None) -> web.Response:
        if name is None:
            return self._json(status_body(404, "NotFound", "the server could not find the requested resource"), 404)
        return self._json(status_body(404, "NotFound", f'{_resource_label(gv, plural)} "{name}" not found',
                                      {"name": name, "group": gv.rpartition("/")[0], "kind": plural}), 404)

    def _discovery(self, parts: list[str]) -> web.Response | None:
        if parts in (["version"], []):
            return self._json({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
        if parts == ["api"]:
            return self._json({"kind": "APIVersions", "versions": ["v1"]})
        groups: dict[str, list[str]] = {}
        for gv, _ in self.kinds():
            if "/" in gv:
                groups.setdefault(gv.rpartition("/")[0], []).append(gv)
        groups.setdefault("authorization.k8s.io", ["authorization.k8s.io/v1"])
        if parts == ["apis"]:
            return self._json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": gv, "version": gv.rpartition("/")[2]}
                                         for gv in sorted(set(v))],
                 "preferredVersion": {"groupVersion": v[0], "version": v[0].rpartition("/")[2]}}
                for g, v in groups.items()]})
        gv = None
        if parts == ["api", "v1"]:
            gv = "v1"
        elif len(parts) == 3 and parts[0] == "apis":
            gv = f"{parts[1]}/{parts[2]}"
        if gv is None:
            return None
        resources = [{"name": p, "singularName": k.lower(), "namespaced": ns, "kind": k,
                      "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                     for (g, p), (k, ns) in self.kinds().items() if g == gv]
        if gv == "authorization.k8s.io/v1":
            resources = [{"name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview",
                          "namespaced": False, "kind": "SelfSubjectAccessReview", "verbs": ["create"]}]
        if not resources:
            return self._not_found(gv, "", None)
        return self._json({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                           "resources": resources})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        self.requests.append((request.method, request.path))
        if request.method == "GET":
            found = self._discovery(parts)
            if found is not None:
                return found
        if parts[:1] == ["api"]:
            gv, rest = "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return self._not_found("", "", None)
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw.strip() else None
        if gv == "authorization.k8s.io/v1" and rest == ["selfsubjectaccessreviews"]:
            attrs = body["spec"]["resourceAttributes"]
            resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
            allowed = (attrs["verb"], resource) not in self.forbid
            return self._json({**body, "status": {"allowed": allowed, **({} if allowed else {"reason": ""})}}, 201)
        ns = ""
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        if not rest or (gv, rest[0]) not in self.kinds():
            return self._not_found(gv, rest[0] if rest else "", None)
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        sub = rest[2] if len(rest) > 2 else None
        method = request.method
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch",
                "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
        if request.query.get("watch") in ("true", "1"):
            verb = "watch"
        if (verb, plural + (f"/{sub}" if sub else "")) in self.forbid:
            return self._forbidden(verb, gv, plural, ns, name)
        kind, namespaced = self.kinds()[(gv, plural)]
        if verb == "watch":
            return await self._watch(request, gv, plural, ns, name)
        if namespaced and not ns and method != "GET":
            return self._not_found(gv, plural, name)
        if method == "GET" and name is None:
            items = self.list(gv, plural, ns or None, request.query.get("labelSelector"),
                              request.query.get("fieldSelector"))
            return self._json({"kind": f"{kind}List", "apiVersion": gv,
                               "metadata": {"resourceVersion": str(next(self._rv))}, "items": items})
        if method == "POST" and name is None:
            body = prune_nulls(body)
            meta = body.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(
                    random.choices(string.ascii_lowercase + string.digits, k=5))
            if not meta.get("name"):
                return self._json(status_body(422, "Invalid", f"{kind} is invalid: metadata.name: Required value"), 422)
            if self.get(gv, plural, meta["name"], ns) is not None:
                return self._json(status_body(409, "AlreadyExists",
                                              f'{_resource_label(gv, plural)} "{meta["name"]}" already exists',
                                              {"name": meta["name"], "group": gv.rpartition("/")[0], "kind": plural}), 409)
            if gv == DASK:
                try:
                    validate_manifest({**body, "apiVersion": gv, "kind": kind})
                except ConfigError as exc:
                    field, _, message = str(exc).partition(": ")[2].partition(": ")
                    return self._json(status_body(
                        422, "Invalid", f'{kind}.{gv.split("/")[0]} "{meta["name"]}" is invalid: {exc}',
                        {"name": meta["name"], "group": gv.rpartition("/")[0], "kind": kind,
                         "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}), 422)
            meta.pop("resourceVersion", None)
            meta.pop("deletionTimestamp", None)
            self.posted.append(copy.deepcopy(body))
            if kind == "Service":
                body.setdefault("status", {"loadBalancer": {}})
                body.setdefault("spec", {}).setdefault("type", "ClusterIP")
            if kind in ("Deployment", "Pod", "Service", "Namespace") or gv == DASK:
                meta.setdefault("generation", 1)
            if kind == "Secret" and body.get("stringData"):  # merged into data, as the API server does
                body["data"] = {**(body.get("data") or {}), **{
                    k: base64.b64encode(str(v).encode()).decode() for k, v in body.pop("stringData").items()}}
            return self._json(self.put(gv, plural, body, ns), 201)
        current = self.get(gv, plural, name or "", ns)
        if current is None:
            return self._not_found(gv, plural, name)
        if method == "GET" and sub == "log" and kind == "Pod":
            text = self.pod_logs(ns, name or "")
            return web.Response(text=text or "", content_type="text/plain")
        if method == "GET":
            return self._json(current)
        if method == "DELETE":
            kept = self.delete(gv, plural, name or "", ns)
            if kept is not None and (gv, plural, ns, name) in self.objects:
                return self._json(kept)  # finalizers remain: the object, with deletionTimestamp
            return self._json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                               "details": {"name": name, "group": gv.rpartition("/")[0], "kind": plural,
                                           "uid": current["metadata"]["uid"]}})
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "")
            if "json-patch" in ctype:
                try:
                    updated = json_patch(current, body)
                except PatchTestFailed as exc:
                    return self._json(status_body(422, "Invalid", str(exc)), 422)
            else:
                updated = merge_patch(current, body)
            updated["metadata"]["uid"] = current["metadata"]["uid"]
            if updated.get("spec") != current.get("spec") and "generation" in current["metadata"]:
                updated["metadata"]["generation"] = int(current["metadata"]["generation"]) + 1
            return self._json(self.put(gv, plural, updated, ns))
        if method == "PUT":
            return self._json(self.put(gv, plural, prune_nulls(body), ns))
        return self._json(status_body(405, "MethodNotAllowed", f"{method} is not supported"), 405)

    async def _watch(self, request: web.Request, gv: str, plural: str, ns: str,
                     name: str | None) -> web.StreamResponse:
        """A watch stream: every change after ``resourceVersion`` (or, without one, the
        current objects as ADDED first), one JSON event a line, until ``timeoutSeconds``."""
        query = request.query
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        if name is not None:
            fields = ",".join(filter(None, [fields, f"metadata.name={name}"]))
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = self.loop.time() + timeout
        since = query.get("resourceVersion")
        self.watching.append((gv, plural, ns))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        def wanted(key: tuple[str, str, str, str], obj: dict[str, Any]) -> bool:
            return (key[0] == gv and key[1] == plural and (not ns or key[2] == ns)
                    and match_labels(obj, labels) and match_fields(obj, fields))

        async def send(type_: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        if since in (None, "", "0"):
            last = next(self._rv)
            for key, obj in list(self.objects.items()):
                if wanted(key, obj):
                    await send("ADDED", obj)
        else:
            last = int(since)
            if last < self._history_floor:
                await send("ERROR", status_body(410, "Expired",
                                                f"too old resource version: {last} ({self._history_floor})"))
                return response
        try:
            while True:
                waiter = self.loop.create_future()
                self._waiters.add(waiter)
                try:
                    for rv, type_, key, obj in [h for h in self.history if h[0] > last]:
                        last = rv
                        if wanted(key, obj):
                            await send(type_, obj)
                    remaining = deadline - self.loop.time()
                    if remaining <= 0 or self._closing:
                        break
                    try:
                        await asyncio.wait_for(asyncio.shield(waiter), min(remaining, 30))
                    except asyncio.TimeoutError:
                        if allow_bookmark(query):
                            await send("BOOKMARK", {"kind": self.kinds()[(gv, plural)][0], "apiVersion": gv,
                                                    "metadata": {"resourceVersion": str(last)}})
                finally:
                    self._waiters.discard(waiter)
            await response.write_eof()
        except ConnectionError:
            pass
        return response


def allow_bookmark(query: Any) -> bool:
    return query.get("allowWatchBookmarks") in ("true", "1")
