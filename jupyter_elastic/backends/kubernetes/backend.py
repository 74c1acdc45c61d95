"""Kubernetes backend: one Dask cluster per lease, run by the Dask operator.

The operator (installed with its Helm chart) turns our ``DaskCluster`` into a scheduler
pod, a scheduler Service and a default worker group; dask-kubernetes' operator
``KubeCluster`` creates the resource and connects to the scheduler. We add what a notebook
needs around it: manifests with GPUs on the workers only (``k8s_manifests.py``), start-up
phases read from pod conditions and events (pending with the kube-scheduler's reason,
pulling, starting), one clear error per fault with nothing left behind, a
``DaskAutoscaler`` for adaptive scaling from zero, and a guarded reconnect by name.

Why one module this long: start-up phases read from pods and events, faults translated to one
line each, reconnect and close are one conversation with the API server and the operator.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from contextlib import suppress
from typing import Any

import httpx
import kr8s
import kr8s.asyncio
from dask_kubernetes.operator import KubeCluster
from dask_kubernetes.operator.kubecluster.kubecluster import CreateMode
from distributed.core import Status, rpc
from tornado.ioloop import IOLoop

from ...config import KubernetesSettings
from ...errors import BackendUnavailable, ClusterStartError, ConfigError, ElasticError
from ...models import ClusterSpec, WorkerDetail
from ...protocol import GPU_RESOURCE, POD_EVENTS_TOPIC, RESOURCE_ENV, Progress
from ..base import ClusterHandle, ElasticBackend, remote_workers
from .manifests import (
    API_VERSION,
    HELM_INSTALL,
    KUEUE_QUEUE_LABEL,
    MANAGED_BY,
    OWNER_LABEL,
    autoscaler_manifest,
    cluster_manifest,
    kubernetes_options,
    label_value,
    tls_secret_manifest,
    tls_secret_name,
    validate_manifest,
    worker_resource,
)
from .tls import (
    SecureKubeCluster,
    connection_args,
    create_secret,
    delete_secret,
    make_credentials,
    own_secret,
    read_credentials,
    uses_tls,
)

log = logging.getLogger("jupyter_elastic.backends.kubernetes")

RBAC_HINT = "grant it with the Role in examples/kubernetes/rbac.yaml, or run `jupyter-elastic doctor`"
_IMAGE_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_FORBIDDEN_RE = re.compile(r'cannot (\w+) resource "([^"]+)"(?: in API group "([^"]*)")?')


class _Fault(Exception):
    """A start-up fault seen in pod status or events (becomes a ClusterStartError)."""

    def __init__(self, message: str, hint: str, *, unschedulable: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.unschedulable = unschedulable


def translate(exc: BaseException, *, action: str, namespace: str | None = None) -> ElasticError:
    """Turn a kr8s/httpx/dask-kubernetes exception into one ElasticError with the API's cause."""
    if isinstance(exc, ElasticError):
        return exc
    where = f" in namespace {namespace}" if namespace else ""
    if isinstance(exc, kr8s.ServerError) and exc.response is not None:
        code = exc.response.status_code
        status: dict[str, Any] = exc.status if isinstance(exc.status, dict) else {}
        message = str(status.get("message") or exc)
        if code == 403 and "exceeded quota" in message:
            return ClusterStartError(
                f"could not {action}: quota exceeded{where}: {message}",
                hint="ask your administrator to raise the ResourceQuota, or request fewer GPUs",
            )
        if code == 403:
            m = _FORBIDDEN_RE.search(message)
            what = (
                f"'{m.group(1)}' on {m.group(2)}" + (f".{m.group(3)}" if m.group(3) else "")
                if m
                else "this request"
            )
            return BackendUnavailable(
                f"could not {action}: Kubernetes RBAC forbids {what}{where} ({message})",
                hint=RBAC_HINT,
            )
        if code == 401:
            return BackendUnavailable(
                f"could not {action}: the Kubernetes API server rejected our credentials ({message})",
                hint="refresh the kubeconfig credentials or the pod's service-account token",
            )
        if code == 404 and "dask.org" in str(exc.response.request.url):
            return BackendUnavailable(
                f"could not {action}: the Dask operator's resources are not installed in this "
                f"cluster ({message})",
                hint=f"install the operator: {HELM_INSTALL}",
            )
        if code == 409:
            return ConfigError(f"could not {action}: {message}")
        if code == 422:
            causes = "; ".join(
                f"{c.get('field', '')}: {c.get('message', '')}"
                for c in (status.get("details") or {}).get("causes", [])
            )
            return ConfigError(f"could not {action}: the API server rejected it: {causes or message}")
        return BackendUnavailable(f"could not {action}: Kubernetes API error {code}: {message}")
    if isinstance(exc, (httpx.TransportError, kr8s.APITimeoutError)):
        return BackendUnavailable(
            f"could not {action}: the Kubernetes API server is unreachable ({type(exc).__name__}: {exc})",
            hint="check the network and the kubeconfig's server address; clusters already "
            "running keep running and can be found again with `jupyter-elastic status`",
        )
    if isinstance(exc, RuntimeError) and "Custom Resource Definitions" in str(exc):
        return BackendUnavailable(
            f"could not {action}: the Dask operator's CRDs are not installed",
            hint=f"install the operator: {HELM_INSTALL}",
        )
    return ClusterStartError(f"could not {action}: {type(exc).__name__}: {exc}")


#: Seconds one request to the API server may take (kr8s waits forever by default, and a
#: server that accepts connections but never answers would hang every call).
REQUEST_TIMEOUT = 30.0
#: Seconds a scale request may take to be reflected in the worker group's replicas.
SCALE_TIMEOUT = 120.0


async def kube_api() -> Any:
    """The kr8s API client (kubeconfig, or the pod's service account inside a cluster).

    The client is shared with dask-kubernetes' KubeCluster, so its request timeout bounds
    their calls too.
    """
    try:
        api = await kr8s.asyncio.api()
        api.timeout = REQUEST_TIMEOUT
        return api
    except ValueError as exc:
        raise BackendUnavailable(
            f"no Kubernetes credentials: {exc} (no kubeconfig at $KUBECONFIG or ~/.kube/config, "
            "and not running in a pod with a service account)",
            hint="run inside a JupyterHub pod on Kubernetes, or point KUBECONFIG at a kubeconfig",
        ) from None
    except Exception as exc:
        raise translate(exc, action="reach the Kubernetes API server") from None


async def own_api() -> Any:
    """A kr8s client of its own, not shared through kr8s' cache: its connections survive
    another caller's re-authentication (kr8s closes a client's connections on a 403)."""
    api = await kr8s.asyncio.Api(bypass_factory=True)
    api.timeout = REQUEST_TIMEOUT
    return api


async def close_api(api: Any) -> None:
    """Close the connections of a client from :func:`own_api`."""
    session = getattr(api, "_session", None)
    if session is not None:
        with suppress(Exception):
            await session.aclose()


async def get_json(api: Any, path: str, *, version: str = "v1", namespace: str | None = None,
                   params: dict[str, Any] | None = None, base: str = "") -> dict[str, Any] | None:
    """GET one API path as JSON; ``None`` for 404."""
    try:
        async with api.call_api("GET", version=version, base=base, url=path,
                                namespace=namespace, params=params) as resp:
            return resp.json()  # type: ignore[no-any-return]
    except kr8s.ServerError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return None
        raise


async def check_operator(api: Any) -> None:
    """Raise BackendUnavailable with the Helm command when the operator's API group is absent."""
    try:
        found = await get_json(api, "", version="", base=f"/apis/{API_VERSION}")
    except Exception as exc:
        raise translate(exc, action="look up the Dask operator's API group") from None
    names = {r.get("name") for r in (found or {}).get("resources", [])}
    if not found or "daskclusters" not in names:
        raise BackendUnavailable(
            "the Dask operator's custom resources (daskclusters.kubernetes.dask.org) are not "
            "installed in this Kubernetes cluster",
            hint=f"install the operator: {HELM_INSTALL}",
        )


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond  # type: ignore[no-any-return]
    return {}


class KubernetesBackend(ElasticBackend):
    """Clusters made by the Dask operator from a ``DaskCluster`` we create per lease."""

    name = "kubernetes"
    supports_adapt = True
    supports_reconnect = True
    #: Seconds between looks at pods and events while a cluster starts.
    poll_interval: float = 0.5
    #: Seconds between looks at a running cluster's worker pods and warning events.
    watch_interval: float = 1.0

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self.options = kubernetes_options(settings)

    # ------------------------------------------------------------------ helpers
    async def _namespace(self, api: Any, spec: ClusterSpec | None = None) -> str:
        explicit = (spec.namespace if spec else None) or self.settings.kubernetes.namespace
        return str(explicit or api.namespace or "default")

    def _options(self, namespace: str) -> KubernetesSettings:
        return kubernetes_options(self.settings, namespace=namespace)

    async def _delete(self, api: Any, namespace: str, name: str) -> None:
        for plural in ("daskautoscalers", "daskclusters"):
            try:
                async with api.call_api("DELETE", version=API_VERSION, namespace=namespace,
                                        url=f"{plural}/{name}"):
                    pass
            except kr8s.ServerError as exc:
                if exc.response is None or exc.response.status_code != 404:
                    raise
        # owned by the DaskCluster, so it goes with it; deleted here too for a start that
        # failed before the DaskCluster existed
        await delete_secret(api, namespace, tls_secret_name(name))

    @staticmethod
    async def _discard(cluster: Any) -> None:
        """Forget a KubeCluster object without touching the Kubernetes objects."""
        if cluster is None:
            return
        cluster.shutdown_on_close = False
        with suppress(Exception):
            await KubeCluster._close(cluster)
        cluster.status = Status.closed

    def _handle(self, cluster: Any, spec_info: dict[str, Any]) -> ClusterHandle:
        handle = ClusterHandle(
            name=cluster.name,
            scheduler_address=cluster.scheduler_address,
            dashboard_link=cluster.dashboard_link,
            has_gpu=spec_info["resource"] == GPU_RESOURCE,
            cluster=cluster,
            extra=spec_info,
        )
        # Worker pods lost or blocked while the cluster runs reach the cells through the
        # scheduler (``POD_EVENTS_TOPIC``); the watch ends with ``close``.
        watch = PodWatch(spec_info["namespace"], cluster.name, cluster.scheduler_address,
                         self.watch_interval, connection_args=connection_args(spec_info.get("client")))
        handle.extra["pod_watch"] = watch
        watch.start()
        return handle

    # ------------------------------------------------------------------ start
    async def start(self, spec: ClusterSpec, progress: Progress) -> ClusterHandle:
        t0 = time.monotonic()
        api = await kube_api()
        namespace = await self._namespace(api, spec)
        options = self._options(namespace)
        manifest = cluster_manifest(spec, options, replicas=min(1, spec.max_workers))
        validate_manifest(manifest)  # a bad label or --gpu-type fails here, before anything exists
        await check_operator(api)
        try:
            existing = await get_json(api, f"daskclusters/{spec.name}", version=API_VERSION,
                                      namespace=namespace)
        except Exception as exc:
            raise translate(exc, action="look up DaskClusters", namespace=namespace) from None
        if existing is not None and existing.get("metadata", {}).get("deletionTimestamp"):
            # a cluster of this name being deleted (the last try of a --gpu-type list, a
            # stop): wait for it to go rather than reconnect to it
            progress("queued", f"waiting for the DaskCluster {spec.name} being deleted to go")
            deadline = time.monotonic() + options.start_timeout
            while existing is not None and time.monotonic() < deadline:
                await asyncio.sleep(self.poll_interval)
                existing = await get_json(api, f"daskclusters/{spec.name}", version=API_VERSION,
                                          namespace=namespace)
        if existing is not None:
            labels = existing.get("metadata", {}).get("labels") or {}
            if labels.get(OWNER_LABEL) != label_value(spec.owner) or not all(
                labels.get(k) == v for k, v in MANAGED_BY.items()
            ):
                raise ConfigError(
                    f"a DaskCluster named {spec.name!r} already exists in namespace {namespace} "
                    "and was not started by jupyter-elastic for you; pick another name"
                )
            progress("scheduler", f"reconnecting to DaskCluster {spec.name} in {namespace}")
            handle = await self.connect(spec.name, namespace=namespace)
            assert handle is not None
            return handle

        resource, slots = worker_resource(spec)
        info = {"namespace": namespace, "resource": resource, "slots": slots,
                "max_workers": spec.max_workers, "labels": manifest["metadata"]["labels"]}
        progress("scheduler", f"creating DaskCluster {spec.name} in namespace {namespace}")
        # the start watch has its own client, made before anything exists: on a 403 kr8s
        # re-authenticates the shared one by closing its connections, which would cut the
        # watch's request in flight (ReadError)
        watch_api = await own_api()
        # per-cluster TLS credentials, in a Secret the pods mount (tls.py); the kernel gets
        # them in its lease only
        credentials = await asyncio.to_thread(make_credentials)
        secret = tls_secret_manifest(spec.name, namespace, manifest["metadata"]["labels"], credentials)
        try:
            await create_secret(api, secret, label_value(spec.owner))
        except Exception as exc:
            raise translate(exc, action=f"create the TLS Secret of {spec.name!r}", namespace=namespace) from None
        info["client"] = credentials
        cluster = SecureKubeCluster(
            credentials=credentials,
            after_create=lambda: own_secret(api, namespace, spec.name),
            custom_cluster_spec=manifest,
            namespace=namespace,
            create_mode=CreateMode.CREATE_ONLY,
            shutdown_on_close=True,
            resource_timeout=max(1, int(options.start_timeout)),
            asynchronous=True,
            quiet=True,
            loop=IOLoop.current(),
        )

        async def run() -> None:
            await cluster

        starter = asyncio.ensure_future(run())
        watch = _StartWatch(watch_api, namespace, spec.name, progress, t0, options, self.poll_interval)
        try:
            while not starter.done():
                await watch.look("scheduler")
                if time.monotonic() - t0 > options.start_timeout:
                    raise _Fault(
                        f"the scheduler did not start within {options.start_timeout:g}s",
                        "raise jupyter-elastic.kubernetes.start-timeout or check the "
                        "operator's logs (kubectl -n dask-operator logs deploy/...)",
                    )
                await asyncio.wait({starter}, timeout=self.poll_interval)
            starter.result()
            if spec.max_workers > 0:
                while not cluster.scheduler_info.get("workers"):
                    await watch.look("worker")
                    if time.monotonic() - t0 > options.start_timeout:
                        raise _Fault(
                            f"no worker joined within {options.start_timeout:g}s",
                            "raise jupyter-elastic.kubernetes.start-timeout",
                        )
                    await asyncio.sleep(self.poll_interval)
            progress("ready", f"scheduler and first worker running ({time.monotonic() - t0:.1f}s)")
        except BaseException as exc:
            starter.cancel()
            with suppress(BaseException):
                await starter
            await close_api(watch_api)
            await self._discard(cluster)
            error: BaseException
            if isinstance(exc, _Fault):
                error = ClusterStartError(f"the Kubernetes cluster {spec.name!r} did not start: {exc}",
                                          hint=exc.hint)
                error.unschedulable = exc.unschedulable
            elif isinstance(exc, Exception):
                error = translate(exc, action=f"start the Kubernetes cluster {spec.name!r}",
                                  namespace=namespace)
            else:
                error = exc
            if isinstance(exc, ValueError) and "already exists" in str(exc):
                # Someone else created this name after our check: it is theirs, keep it.
                raise ConfigError(
                    f"a DaskCluster named {spec.name!r} was created in {namespace} by someone else "
                    "while this one started",
                    hint="run the cell again to connect to it, or use another cluster name",
                ) from None
            try:
                # a fresh client: kr8s re-authenticates after a 403 and concurrent calls can
                # leave the shared one without a server address (UnsupportedProtocol)
                fresh = await own_api()
                if watch.forbidden is None and isinstance(exc, httpx.UnsupportedProtocol):
                    watch.forbidden = watch.forbidden or await _probe_forbidden(fresh, namespace)
                if watch.forbidden is not None and isinstance(exc, Exception):
                    error = translate(watch.forbidden, namespace=namespace,
                                      action=f"start the Kubernetes cluster {spec.name!r}")
                await self._delete(fresh, namespace, spec.name)
                await close_api(fresh)
            except Exception as cleanup:
                log.warning("could not delete DaskCluster %s: %s", spec.name, cleanup)
                if isinstance(error, ElasticError):
                    error = type(error)(
                        f"{error.args[0]}; the DaskCluster could not be deleted either "
                        f"({type(cleanup).__name__}): run `kubectl delete daskcluster {spec.name} "
                        f"-n {namespace}`",
                        hint=error.hint,
                    )
            if error is exc:
                raise
            raise error from None
        await close_api(watch_api)
        return self._handle(cluster, info)

    # ------------------------------------------------------------------ reconnect
    async def connect(self, name: str, *, namespace: str | None = None) -> ClusterHandle | None:
        """Find the running DaskCluster ``name`` again (after a kernel or server restart).

        A DaskCluster whose scheduler pod is gone would make KubeCluster wait forever; that
        case, and a scheduler that does not answer within ``connect-timeout``, raise
        ClusterStartError saying how to remove the stale resource.
        """
        api = await kube_api()
        namespace = namespace or await self._namespace(api)
        options = self._options(namespace)
        try:
            obj = await get_json(api, f"daskclusters/{name}", version=API_VERSION,
                                 namespace=namespace)
            if obj is None:
                return None
            pods = await get_json(
                api, "pods", namespace=namespace,
                params={"labelSelector": f"dask.org/cluster-name={name},dask.org/component=scheduler"},
            )
            credentials = await read_credentials(api, namespace, name) if uses_tls(obj) else None
        except Exception as exc:
            raise translate(exc, action=f"look up DaskCluster {name!r}", namespace=namespace) from None
        stale_hint = (
            f"delete it with `kubectl delete daskcluster {name} -n {namespace}` "
            f"(or `jupyter-elastic stop {name}`) and start a new one"
        )
        running = [p for p in (pods or {}).get("items", [])
                   if p.get("status", {}).get("phase") == "Running"]
        if not running:
            raise ClusterStartError(
                f"DaskCluster {name!r} in namespace {namespace} is stale: its scheduler pod is gone",
                hint=stale_hint,
            )
        cluster = SecureKubeCluster(
            credentials=credentials,
            name=name, namespace=namespace, create_mode=CreateMode.CONNECT_ONLY,
            shutdown_on_close=True, asynchronous=True, quiet=True, loop=IOLoop.current(),
            resource_timeout=max(1, int(options.connect_timeout)),
        )

        async def run() -> None:
            await cluster

        try:
            await asyncio.wait_for(run(), options.connect_timeout)
        except asyncio.TimeoutError:
            await self._discard(cluster)
            raise ClusterStartError(
                f"DaskCluster {name!r} in namespace {namespace} did not answer within "
                f"{options.connect_timeout:g}s (its scheduler is not reachable)",
                hint=stale_hint,
            ) from None
        except BaseException as exc:
            await self._discard(cluster)
            if isinstance(exc, Exception):
                raise translate(exc, action=f"reconnect to {name!r}", namespace=namespace) from None
            raise
        env = {e["name"]: e.get("value") for e in
               obj["spec"]["scheduler"]["spec"]["containers"][0].get("env") or []}
        resource = env.get(RESOURCE_ENV, GPU_RESOURCE)
        info = {"namespace": namespace, "resource": resource,
                "slots": float(env.get("JUPYTER_ELASTIC_SLOTS", "1")),
                "max_workers": self.settings.max_workers,
                "labels": obj.get("metadata", {}).get("labels") or {}}
        if credentials:
            info["client"] = credentials
        return self._handle(cluster, info)

    # ------------------------------------------------------------------ scaling
    async def scale(self, handle: ClusterHandle, n: int) -> None:
        n = max(0, min(int(n), handle.extra["max_workers"]))
        try:
            # removes the autoscaler, then sets the replicas; kr8s waits for the replica count
            # without a limit of its own
            await asyncio.wait_for(handle.cluster._scale(n), SCALE_TIMEOUT)
        except asyncio.TimeoutError:
            raise ClusterStartError(
                f"scaling {handle.name} to {n} workers did not settle within {SCALE_TIMEOUT:g}s",
                hint="look at the worker group with `kubectl get daskworkergroups`; try again",
            ) from None
        except Exception as exc:
            raise translate(exc, action=f"scale {handle.name} to {n}",
                            namespace=handle.extra["namespace"]) from None

    async def adapt(
        self, handle: ClusterHandle, minimum: int, maximum: int, idle_timeout: float
    ) -> None:
        ns = handle.extra["namespace"]
        maximum = min(maximum, handle.extra["max_workers"])
        with suppress(Exception):
            async with rpc(handle.scheduler_address,
                           connection_args=connection_args(handle.extra.get("client"))) as scheduler:
                await scheduler.elastic_set_idle_timeout(seconds=idle_timeout)
        body = autoscaler_manifest(handle.name, ns, minimum, maximum, handle.extra.get("labels"))
        api = await kube_api()
        try:
            try:
                async with api.call_api(
                    "PATCH", version=API_VERSION, namespace=ns,
                    url=f"daskautoscalers/{handle.name}",
                    headers={"Content-Type": "application/merge-patch+json"},
                    content=_json({"spec": body["spec"]}),
                ):
                    pass
            except kr8s.ServerError as exc:
                if exc.response is None or exc.response.status_code != 404:
                    raise
                async with api.call_api("POST", version=API_VERSION, namespace=ns,
                                        url="daskautoscalers", content=_json(body)):
                    pass
        except Exception as exc:
            raise translate(exc, action=f"set adaptive scaling on {handle.name}", namespace=ns) from None

    async def wake(self, handle: ClusterHandle) -> None:
        if handle.cluster.scheduler_info.get("workers"):
            return
        ns = handle.extra["namespace"]
        api = await kube_api()
        try:
            wg = await get_json(api, f"daskworkergroups/{handle.name}-default",
                                version=API_VERSION, namespace=ns)
            if wg is not None and not wg["spec"]["worker"].get("replicas"):
                async with api.call_api(
                    "PATCH", version=API_VERSION, namespace=ns,
                    url=f"daskworkergroups/{handle.name}-default",
                    headers={"Content-Type": "application/merge-patch+json"},
                    content=_json({"spec": {"worker": {"replicas": 1}}}),
                ):
                    pass
        except Exception as exc:
            raise translate(exc, action=f"start a worker for {handle.name}", namespace=ns) from None

    async def close(self, handle: ClusterHandle) -> None:
        watch = handle.extra.get("pod_watch")
        if watch is not None:
            await watch.stop()
        cluster = handle.cluster
        ns = handle.extra["namespace"]
        cluster.shutdown_on_close = True
        try:
            await cluster._close(timeout=120)
            # The operator owns the autoscaler once it has seen it; before that it would stay.
            await self._delete(await kube_api(), ns, handle.name)
        except Exception as exc:
            cluster.status = Status.closed
            error = translate(exc, action=f"delete the Kubernetes cluster {handle.name}", namespace=ns)
            raise type(error)(
                f"{error.args[0]}; it may still be running: `kubectl delete daskcluster "
                f"{handle.name} -n {ns}`", hint=error.hint,
            ) from None

    async def workers(self, handle: ClusterHandle) -> list[WorkerDetail]:
        return await remote_workers(handle.cluster, self.options.connect_timeout,
                                    gpus=handle.extra.get("resource", GPU_RESOURCE) == GPU_RESOURCE)


async def _probe_forbidden(api: Any, namespace: str) -> kr8s.ServerError | None:
    """The 403 that reading pods, services or events gives, if RBAC forbids one of them."""
    for path in ("pods", "services", "events"):
        try:
            await get_json(api, path, namespace=namespace, params={"limit": 1})
        except kr8s.ServerError as exc:
            if exc.response is not None and exc.response.status_code == 403:
                return exc
        except Exception:
            return None
    return None


def _json(data: Any) -> str:
    import json

    return json.dumps(data)


def _event_time(event: dict[str, Any]) -> float:
    """When an event last happened (epoch seconds); events without a time count as new."""
    import datetime as _dt

    stamp = (event.get("lastTimestamp") or event.get("eventTime")
             or (event.get("metadata") or {}).get("creationTimestamp"))
    if not stamp:
        return float("inf")
    try:
        return _dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")


class _StartWatch:
    """Reads pods and events of a starting cluster: reports phases, raises on faults."""

    def __init__(self, api: Any, namespace: str, name: str, progress: Progress,
                 t0: float, options: KubernetesSettings, interval: float) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.progress, self.t0, self.options = progress, t0, options
        self.interval = interval
        self.last: tuple[str, str] | None = None
        self.last_sent = 0.0
        self.unschedulable_since: dict[str, float] = {}
        self.forbidden: kr8s.ServerError | None = None
        # events older than this start (an earlier cluster of the same name) are not ours
        self.since_wall = time.time() - (time.monotonic() - t0) - 5.0

    def report(self, phase: str, detail: str) -> None:
        now = time.monotonic()
        if (phase, detail) != self.last or now - self.last_sent >= 2.0:
            self.last, self.last_sent = (phase, detail), now
            self.progress(phase, f"{detail} ({now - self.t0:.0f}s)")

    async def _events(self, **selector: str) -> list[dict[str, Any]]:
        sel = ",".join(f"{k}={v}" for k, v in selector.items())
        found = await get_json(self.api, "events", namespace=self.namespace,
                               params={"fieldSelector": sel})
        items = (found or {}).get("items", [])
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    async def look(self, component: str) -> None:
        """One look at the ``component`` ("scheduler" or "worker") pods; raises _Fault."""
        try:
            await self._look(component)
        except _Fault:
            raise
        except kr8s.ServerError as exc:
            if exc.response is not None and exc.response.status_code == 403:
                self.forbidden = exc
                raise  # RBAC: translated by the caller
            log.debug("start watch: %s", exc)
        except (httpx.TransportError, kr8s.APITimeoutError):
            raise

    async def _look(self, component: str) -> None:
        warnings = await self._events(type="Warning")
        for event in warnings:
            involved = event.get("involvedObject") or {}
            if _event_time(event) < self.since_wall:
                continue
            if event.get("reason") == "FailedCreate" and str(involved.get("name", "")).startswith(self.name + "-"):
                message = str(event.get("message", ""))
                if "exceeded quota" in message:
                    raise _Fault(f"quota exceeded: {message}",
                                 "ask your administrator to raise the ResourceQuota, or request fewer GPUs")
                raise _Fault(f"the {component} pod could not be created: {message}", RBAC_HINT)
        found = await get_json(
            self.api, "pods", namespace=self.namespace,
            params={"labelSelector": f"dask.org/cluster-name={self.name},dask.org/component={component}"},
        )
        pods = (found or {}).get("items", [])
        if not pods:
            self.report("pending", f"waiting for the Dask operator to create the {component} pod")
            return
        pod = pods[0]
        pod_name = pod["metadata"]["name"]
        status = pod.get("status", {})
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in _IMAGE_ERRORS:
                raise _Fault(
                    f"the image {cs.get('image')!r} cannot be pulled ({reason}: {waiting.get('message', '')})",
                    "check the image name and tag (jupyter-elastic.kubernetes.image or --image) "
                    "and the namespace's imagePullSecrets",
                )
            if reason == "CrashLoopBackOff":
                term = (cs.get("lastState") or {}).get("terminated") or {}
                raise _Fault(
                    f"the {component} container keeps crashing: {term.get('message') or waiting.get('message', '')}",
                    f"see `kubectl logs -n {self.namespace} {pod_name}`",
                )
        gates = [str(g.get("name", "")) for g in (pod.get("spec") or {}).get("schedulingGates") or []
                 if isinstance(g, dict)]
        if gates:  # Kueue holds the pod until its queue admits the workload
            self.unschedulable_since.pop(pod_name, None)  # waiting its turn is not a fault
            queue = (pod["metadata"].get("labels") or {}).get(KUEUE_QUEUE_LABEL)
            self.report("queued", f"queued (Kueue): {component} pod {pod_name} is gated by "
                                  f"{', '.join(gates)[:200]}"
                                  + (f" until LocalQueue {queue} admits it" if queue else ""))
            return
        scheduled = _condition(pod, "PodScheduled")
        if scheduled.get("status") == "False":
            message = scheduled.get("message") or scheduled.get("reason") or "not scheduled yet"
            since = self.unschedulable_since.setdefault(pod_name, time.monotonic())
            if time.monotonic() - since > self.options.pending_timeout:
                raise _Fault(
                    f"no node can run the {component} pod: {message}",
                    "request fewer GPUs (--gpus), another --gpu-type, or ask for GPU nodes; "
                    "the wait is jupyter-elastic.kubernetes.pending-timeout",
                    unschedulable=component == "worker",
                )
            self.report("pending", f"{component} pod unschedulable: {message}")
            return
        self.unschedulable_since.pop(pod_name, None)
        if status.get("phase") == "Pending":
            events = await self._events(**{"involvedObject.name": pod_name})
            reasons = [e.get("reason") for e in events]
            if "Pulling" in reasons and "Pulled" not in reasons[reasons.index("Pulling"):]:
                image = pod["spec"]["containers"][0].get("image", "")
                self.report("pulling", f"{component} pod pulling image {image}")
            else:
                self.report("starting", f"{component} pod {pod_name} starting")
            return
        if _condition(pod, "Ready").get("status") != "True":
            self.report("starting", f"{component} pod {pod_name} running, not ready yet")
        else:
            self.report("starting", f"{component} pod {pod_name} ready, connecting")


#: Pod conditions and events that say why a pod is going (Kubernetes 1.26+ sets the
#: ``DisruptionTarget`` condition before a preemption, eviction or taint-manager deletion).
_LOSS_EVENTS = ("Preempted", "Evicted", "Preempting", "TaintManagerEviction", "NodeNotReady",
                "OOMKilling", "Killing")


def loss_reason(pod: dict[str, Any], events: list[dict[str, Any]], gone: bool) -> str:
    """Why a worker pod went, from what the API server says about it (most specific first):
    its ``DisruptionTarget`` condition, its status reason (``Evicted``), a container that was
    OOM-killed, the events about it, else that it was deleted or failed."""
    status = pod.get("status") or {}
    target = _condition(pod, "DisruptionTarget")
    if target.get("status") == "True":
        return _one(f"{target.get('reason', 'DisruptionTarget')}: {target.get('message', '')}")
    if status.get("reason"):
        return _one(f"{status['reason']}: {status.get('message', '')}")
    for cs in status.get("containerStatuses") or []:
        for state in (cs.get("state") or {}, cs.get("lastState") or {}):
            term = state.get("terminated") or {}
            if term.get("reason") == "OOMKilled":
                limit = (((pod.get("spec") or {}).get("containers") or [{}])[0]
                         .get("resources", {}).get("limits", {}).get("memory"))
                return "OOMKilled: the container ran out of memory" + (
                    f" (its limit is {limit})" if limit else "")
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or {}
        if term:
            return _one(f"its container exited with code {term.get('exitCode', '?')} "
                        f"({term.get('reason') or 'terminated'}) {term.get('message') or ''}")
    for event in reversed(events):
        if event.get("reason") in _LOSS_EVENTS:
            return _one(f"{event['reason']}: {event.get('message', '')}")
    if gone or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "deleted through the Kubernetes API (no eviction, preemption or OOM recorded)"
    if status.get("phase") == "Failed":
        return "the pod failed"
    return "unknown"


def _one(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split()).rstrip(": ")
    return line if len(line) <= limit else line[:limit - 1] + "…"


class PodWatch:
    """While a cluster runs: one look per ``interval`` at its worker pods and the namespace's
    warning events, and what a cell needs to know sent to the scheduler's event log
    (``POD_EVENTS_TOPIC``), where the kernel of a failed or waiting cell reads it:

    * ``pod-lost``: a worker pod deleted, evicted, preempted, failed or OOM-killed, with its
      node and the reason the API server gives (``loss_reason``);
    * ``scale-blocked``: a worker pod that cannot be created (quota: the ``FailedCreate``
      event), scheduled (the kube-scheduler's message) or pulled, on any scale-up, not only
      the first worker's; ``scale-ok`` once no worker pod is blocked any more.

    A look that fails (API server unreachable, RBAC) is skipped; the watch never raises.
    """

    def __init__(self, namespace: str, name: str, scheduler_address: str, interval: float,
                 connection_args: dict[str, Any] | None = None) -> None:
        self.namespace, self.name, self.address = namespace, name, scheduler_address
        self.connection_args = connection_args or {}  # the cluster's TLS, when it has it
        self.interval = interval
        self.pods: dict[str, dict[str, Any]] | None = None  # last look's worker pods
        self.reported: set[str] = set()
        self.blocked: str | None = ""  # "": not told yet (the first look always tells)
        self.newest = float("-inf")  # creation time of the newest worker pod seen
        self.since_wall = time.time() - 5.0
        self.sent: list[dict[str, Any]] = []  # what was told, for tests and logs
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(BaseException):
                await task

    async def _run(self) -> None:
        api: Any = None
        async with rpc(self.address, connection_args=self.connection_args) as scheduler:
            while True:
                try:
                    if api is None:
                        # its own client: the shared one serves KubeCluster's calls
                        await kube_api()  # credentials, or the one-line error (logged below)
                        api = await kr8s.asyncio.Api(bypass_factory=True)
                        api.timeout = REQUEST_TIMEOUT
                    for msg in await self.look(api):
                        self.sent.append(msg)
                        await asyncio.wait_for(
                            scheduler.log_event(topic=POD_EVENTS_TOPIC, msg=msg), REQUEST_TIMEOUT)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("pod watch of %s: %s", self.name, exc)
                await asyncio.sleep(self.interval)

    async def look(self, api: Any) -> list[dict[str, Any]]:
        """One look: the messages to send (none when nothing changed)."""
        found = await get_json(
            api, "pods", namespace=self.namespace,
            params={"labelSelector": f"dask.org/cluster-name={self.name},dask.org/component=worker"},
        )
        pods = {p["metadata"]["name"]: p for p in (found or {}).get("items", [])}
        warnings = await get_json(api, "events", namespace=self.namespace,
                                  params={"fieldSelector": "type=Warning"})
        warned = [e for e in (warnings or {}).get("items", []) if _event_time(e) >= self.since_wall]
        out: list[dict[str, Any]] = []
        previous, self.pods = self.pods, pods
        if previous is not None:
            for pod_name, last in previous.items():
                pod = pods.get(pod_name)
                # a container restarted in place (OOM-killed, crashed) lost its worker too
                restarted = pod is not None and _restarts(pod) > _restarts(last)
                if pod_name in self.reported or (pod is not None and not _leaving(pod)
                                                 and not restarted):
                    continue
                if not restarted:
                    self.reported.add(pod_name)
                about = await get_json(api, "events", namespace=self.namespace,
                                       params={"fieldSelector": f"involvedObject.name={pod_name}"})
                events = sorted((about or {}).get("items", []), key=_event_time)
                seen = pod or last
                out.append({
                    "kind": "pod-lost", "pod": pod_name,
                    "node": (seen.get("spec") or {}).get("nodeName") or "",
                    "ip": (seen.get("status") or {}).get("podIP") or "",
                    "reason": loss_reason(seen, events, gone=pod is None),
                })
        blocked = self._blocked(pods, warned)
        if blocked != self.blocked:
            self.blocked = blocked
            out.append({"kind": "scale-blocked", "reason": blocked} if blocked else {"kind": "scale-ok"})
        return out

    def _blocked(self, pods: dict[str, dict[str, Any]], warned: list[dict[str, Any]]) -> str | None:
        """Why a worker pod cannot start, if one cannot: the kube-scheduler's message, the
        image pull error, or a ``FailedCreate`` (quota) newer than the newest worker pod."""
        for pod in pods.values():
            status = pod.get("status") or {}
            for cs in status.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in _IMAGE_ERRORS:
                    return _one(f"worker pod {pod['metadata']['name']}: the image "
                                f"{cs.get('image')!r} cannot be pulled ({waiting['reason']}: "
                                f"{waiting.get('message', '')})")
            scheduled = _condition(pod, "PodScheduled")
            if status.get("phase") == "Pending" and scheduled.get("status") == "False":
                return _one(f"worker pod {pod['metadata']['name']} is unschedulable: "
                            f"{scheduled.get('message') or scheduled.get('reason', '')}")
        # a FailedCreate older than a worker pod created since is over (the create went through)
        self.newest = newest = max([self.newest, *(_created(p) for p in pods.values())])
        for event in sorted(warned, key=_event_time, reverse=True):
            involved = str((event.get("involvedObject") or {}).get("name", ""))
            if (event.get("reason") == "FailedCreate" and involved.startswith(self.name + "-")
                    and _event_time(event) > newest):
                message = str(event.get("message", ""))
                what = "quota exceeded" if "exceeded quota" in message else "cannot create a worker pod"
                return _one(f"{what}: {message}")
        return None


def _leaving(pod: dict[str, Any]) -> bool:
    """Whether a worker pod is going or gone as a worker: being deleted, failed, evicted,
    marked for disruption, or its container OOM-killed."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") == "Failed":
        return True
    if _condition(pod, "DisruptionTarget").get("status") == "True":
        return True
    return any(((cs.get("state") or {}).get("terminated") or {}).get("reason") == "OOMKilled"
               for cs in status.get("containerStatuses") or [])


def _restarts(pod: dict[str, Any]) -> int:
    return sum(int(cs.get("restartCount") or 0)
               for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def _created(pod: dict[str, Any]) -> float:
    stamp = (pod.get("metadata") or {}).get("creationTimestamp")
    return _event_time({"metadata": {"creationTimestamp": stamp}}) if stamp else float("-inf")
