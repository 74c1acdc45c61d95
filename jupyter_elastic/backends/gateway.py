"""Dask Gateway backend: ``%%gpu`` cells on a cluster of the hub's shared gateway.

JupyterHub deployments often run one Dask Gateway for all users; each user asks it for
clusters over HTTP, and reaches their schedulers through the gateway's TLS proxy. This
backend uses dask-gateway's own asynchronous client (``Gateway`` / ``GatewayCluster``):
the gateway starts, scales and stops the scheduler and workers, and runs the adaptive
loop on the scheduler. We add what a notebook needs around it: the cluster options this
gateway offers filled from our worker settings (what it does not offer is said in the
start-up phase), one clear error per fault with nothing left on the gateway, the first
worker's resources read to know whether cells get GPUs, a tag on the scheduler so that a
restarted kernel finds its cluster by our name, and the TLS credentials a kernel needs to
connect (they travel in the lease as ``"client"``, ``kind: gateway``).

Gateway clusters are named by the gateway; our cluster name is kept in the scheduler's
metadata under ``jupyter-elastic``. Hub admin configuration (GPU resources, preload, image,
adaptive period, idle timeout) is described in ``docs/GATEWAY_NOTES.md``.

Why one module this long: it wraps one external system's whole lifecycle (options, start-up
phases, reconnect by name, one clear error per fault); split, one protocol would be spread thin.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from contextlib import suppress
from dataclasses import replace
from typing import Any

import aiohttp
from dask_gateway import BasicAuth, Gateway, GatewayCluster, JupyterHubAuth, KerberosAuth
from dask_gateway.auth import GatewayAuth, get_auth
from dask_gateway.client import (
    ClusterStatus,
    GatewayClusterError,
    GatewayServerError,
    GatewayWarning,
)
from dask_gateway.utils import format_template
from distributed.core import rpc

from ..config import GatewaySettings, Settings
from ..errors import (
    BackendUnavailable,
    ClusterStartError,
    ConfigError,
    ElasticError,
    QuotaExceeded,
)
from ..models import ClusterSpec, WorkerDetail
from ..protocol import CPU_RESOURCE, GPU_RESOURCE, QUOTA_MARK, QUOTA_ROUTE, Progress
from .base import ClusterHandle, ElasticBackend, remote_workers

log = logging.getLogger("jupyter_elastic.backends.gateway")

#: Scheduler-metadata key under which our cluster name and resource are kept.
TAG = "jupyter-elastic"
KEY = "jupyter-elastic.gateway."
ADDRESS_HINT = (
    "set jupyter-elastic.gateway.address (environment: DASK_JUPYTER_ELASTIC__GATEWAY__ADDRESS), "
    "or dask-gateway's own gateway.address (DASK_GATEWAY__ADDRESS); on JupyterHub it is "
    "usually https://<hub>/services/dask-gateway"
)
RESOURCE_HINT = (
    "ask the hub admin to start gateway workers with --resources GPU=1 (CPU-only workers: "
    "--resources CELL=1) in c.ClusterConfig.worker_cmd; resource names are case-sensitive and "
    "DASK_DISTRIBUTED__WORKER__RESOURCES__* environment variables arrive lower-cased, so they "
    "do not work; see docs/GATEWAY_NOTES.md"
)

#: Cluster-option names gateways commonly use for each worker setting, first match wins.
OPTION_NAMES: dict[str, tuple[str, ...]] = {
    "gpus": ("worker_gpus", "gpus", "worker_gpu", "gpu"),
    "cores": ("worker_cores", "cores", "worker_cpus", "cpus"),
    "memory": ("worker_memory", "memory"),
    "gpu_type": ("gpu_type", "worker_gpu_type", "accelerator"),
}


_TEMPLATED = ("address", "proxy_address", "public_address", "username", "password", "api_token")


def gateway_options(settings: Settings) -> GatewaySettings:
    """The ``gateway`` settings with dask-gateway templates (``{JUPYTERHUB_USER}``) expanded
    (parsing and checks are ``config.py``'s)."""
    gw = settings.gateway
    return replace(gw, **{k: format_template(getattr(gw, k)) for k in _TEMPLATED
                          if getattr(gw, k) is not None})


def _auth(options: GatewaySettings) -> GatewayAuth:
    """The dask-gateway authenticator for ``options.auth`` (None: dask-gateway's config)."""
    try:
        if options.auth == "jupyterhub":
            token = options.api_token or os.environ.get("JUPYTERHUB_API_TOKEN")
            if not token:
                raise ConfigError(
                    f"{KEY}auth is 'jupyterhub' but there is no JupyterHub API token "
                    "(JUPYTERHUB_API_TOKEN is not set: is this server started by JupyterHub?)",
                    hint=f"set {KEY}auth to simple, basic or kerberos for a gateway outside a "
                    "hub, or null to use dask-gateway's own gateway.auth settings",
                )
            return JupyterHubAuth(api_token=token)
        if options.auth in ("simple", "basic"):
            if options.username is None and options.password is None:
                return get_auth("basic")  # dask-gateway's gateway.auth.kwargs, if any
            return BasicAuth(username=options.username, password=options.password)
        if options.auth == "kerberos":
            return KerberosAuth()
        return get_auth(None)
    except ElasticError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot set up Dask Gateway authentication: {exc}") from None


def _unreachable(options: GatewaySettings, address: str, exc: BaseException) -> BackendUnavailable:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return BackendUnavailable(
        f"the Dask Gateway at {address} is unreachable ({reason})",
        hint="check jupyter-elastic.gateway.address and that the gateway is running; "
        "clusters already running keep running",
    )


def translate(exc: BaseException, options: GatewaySettings, address: str, *, action: str) -> ElasticError:
    """Turn a dask-gateway / aiohttp exception into one ElasticError naming the cause."""
    if isinstance(exc, ElasticError):
        return exc
    if isinstance(exc, aiohttp.ClientResponseError) and exc.status in (401, 403):
        how = options.auth or "dask-gateway's default (gateway.auth.type)"
        if options.auth == "jupyterhub":
            hint = ("the hub did not accept this server's JUPYTERHUB_API_TOKEN for the "
                    "dask-gateway service: restart your server from the hub's control panel, "
                    "or ask the admin to allow your user on the gateway")
        elif options.auth in ("simple", "basic"):
            hint = f"check {KEY}username and {KEY}password"
        else:
            hint = f"check {KEY}auth and the gateway's authenticator"
        word = "rejected our credentials" if exc.status == 401 else "refused access"
        return BackendUnavailable(
            f"could not {action}: the Dask Gateway at {address} {word} "
            f"({exc.status} {exc.message}; auth: {how})",
            hint=hint,
        )
    if isinstance(exc, (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError)):
        return _unreachable(options, address, exc)
    if isinstance(exc, aiohttp.InvalidURL):
        return ConfigError(f"{KEY}address {address!r} is not a valid URL", hint=ADDRESS_HINT)
    if isinstance(exc, aiohttp.ClientResponseError):
        return BackendUnavailable(
            f"could not {action}: the server at {address} answered {exc.status} {exc.message}",
            hint="is this the Dask Gateway's address? " + ADDRESS_HINT,
        )
    if isinstance(exc, (ValueError, GatewayClusterError)) and QUOTA_MARK in str(exc):
        # the hub's quota module (jupyter_elastic.hub.gateway) refused: its line is the message
        return QuotaExceeded(str(exc).split(QUOTA_MARK, 1)[1].strip()[:2000])
    if isinstance(exc, ValueError):  # dask-gateway's 404 / 422 (bad options, unknown cluster)
        return ClusterStartError(f"could not {action}: the Dask Gateway said: {exc}")
    if isinstance(exc, (GatewayClusterError, GatewayServerError)):
        return ClusterStartError(f"could not {action}: {exc}",
                                 hint="the gateway's logs say why; ask the hub admin")
    return ClusterStartError(f"could not {action}: {type(exc).__name__}: {exc}")


def _field_value(field: Any, kind: str, spec: ClusterSpec) -> tuple[Any, str]:
    """The value for one gateway option field of ``kind``, and how it was chosen."""
    if kind == "gpu_type":
        return spec.gpu_type, ""
    number: float
    if kind == "gpus":
        number = spec.gpus_per_worker
    elif kind == "cores":
        number = float(spec.cpus_per_worker)
    else:
        number = spec.memory_per_worker / 1024**3  # gateways take memory in GiB
    type_name = type(field).__name__
    if type_name == "Bool":
        return number > 0, ""
    if type_name == "String":
        return (f"{number:g}G" if kind == "memory" else f"{number:g}"), ""
    note = ""
    low, high = getattr(field, "min", None), getattr(field, "max", None)
    if high is not None and number > high:
        number, note = high, f" (the gateway's maximum; asked for {number:g})"
    elif low is not None and number < low:
        number, note = low, f" (the gateway's minimum; asked for {number:g})"
    if type_name == "Integer":
        return int(round(number)), note
    return float(number), note


def fill_options(options: Any, spec: ClusterSpec, extra: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Set the worker options this gateway offers; return (what was set, what it lacks)."""
    fields = getattr(options, "_fields", {})
    done: list[str] = []
    absent: list[str] = []
    wanted = {"gpus": spec.gpus_per_worker > 0, "cores": True, "memory": True,
              "gpu_type": spec.gpu_type is not None}
    for kind, names in OPTION_NAMES.items():
        if not wanted[kind]:
            continue
        name = next((n for n in names if n in fields), None)
        if name is None:
            absent.append(kind.replace("_", "-"))
            continue
        value, note = _field_value(fields[name], kind, spec)
        try:
            options[name] = value
        except (TypeError, ValueError) as exc:
            absent.append(f"{kind.replace('_', '-')} ({exc})")
            continue
        unit = " GiB" if kind == "memory" and not isinstance(value, (bool, str)) else ""
        done.append(f"{name}={value}{unit}{note}")
    for name, value in extra.items():
        if name not in fields:
            absent.append(f"{name} (from {KEY}cluster-options)")
            continue
        try:
            options[name] = value
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{KEY}cluster-options: {exc}") from None
        done.append(f"{name}={value}")
    return done, absent


class GatewayBackend(ElasticBackend):
    """Clusters on a Dask Gateway (JupyterHub's shared one, or any other)."""

    name = "gateway"
    supports_adapt = True
    supports_reconnect = True
    #: Seconds between looks at the cluster while its first worker starts.
    poll_interval: float = 0.1

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        self.options = gateway_options(settings)


    # ------------------------------------------------------------------ helpers
    def _address(self) -> str:
        address = self.options.address or format_template(_dask_get("gateway.address"))
        if not address:
            raise ConfigError("no Dask Gateway address is configured", hint=ADDRESS_HINT)
        if not address.startswith(("http://", "https://")):
            raise ConfigError(
                f"{KEY}address must be an http:// or https:// URL, got {address!r}",
                hint=ADDRESS_HINT,
            )
        return address.rstrip("/")

    def _gateway(self) -> Gateway:
        address = self._address()
        auth = _auth(self.options)
        return Gateway(address=address, proxy_address=self.options.proxy_address,
                       public_address=self.options.public_address, auth=auth,
                       asynchronous=True)

    async def _call(self, gateway: Gateway, awaitable: Any, action: str) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self.options.connect_timeout)
        except asyncio.TimeoutError:
            raise _unreachable(self.options, gateway.address, TimeoutError(
                f"no answer within {self.options.connect_timeout:g}s")) from None
        except Exception as exc:
            raise translate(exc, self.options, gateway.address, action=action) from None

    def _handle(self, name: str, cluster: GatewayCluster, resource: str, slots: float,
                max_workers: int) -> ClusterHandle:
        security = cluster.security
        return ClusterHandle(
            name=name,
            scheduler_address=cluster.scheduler_address,
            dashboard_link=cluster.dashboard_link,
            has_gpu=resource == GPU_RESOURCE,
            cluster=cluster,
            extra={
                "gateway_name": cluster.name,
                "resource": resource,
                "slots": slots,
                "max_workers": max_workers,
                "client": {"kind": "gateway", "tls_cert": security.tls_cert,
                           "tls_key": security.tls_key},
                "keep_first_until": 0.0,
                "pending": None,
            },
        )

    async def _open(self, gateway: Gateway, gateway_name: str) -> GatewayCluster:
        """A connected GatewayCluster object for a running gateway cluster."""
        cluster = GatewayCluster.from_name(
            gateway_name, shutdown_on_close=True, address=gateway.address,
            proxy_address=gateway.proxy_address, public_address=gateway._public_address,
            auth=gateway.auth, asynchronous=True,
        )
        try:
            await asyncio.wait_for(cluster._start_internal(), self.options.start_timeout)
        except BaseException:
            with suppress(BaseException):
                await cluster.close(shutdown=False)
            raise
        return cluster

    async def _tags(self, gateway: Gateway) -> list[tuple[str, dict[str, Any]]]:
        """(gateway name, our tag or {}) for each of this user's running gateway clusters."""
        reports = await self._call(gateway, gateway.list_clusters(status="running"),
                                   "list your Dask Gateway clusters")
        found = []
        for report in reports:
            tag: dict[str, Any] = {}
            try:
                full = await self._call(gateway, gateway.get_cluster(report.name),
                                        f"look up gateway cluster {report.name}")
                comm = rpc(full.scheduler_address,
                           connection_args=full.security.get_connection_args("client"))
                try:
                    tag = await asyncio.wait_for(
                        comm.get_metadata(keys=[TAG], default=None), self.options.connect_timeout
                    ) or {}
                finally:
                    await comm.close_rpc()
            except Exception as exc:
                log.debug("could not read the tag of gateway cluster %s: %s", report.name, exc)
            found.append((report.name, tag))
        return found

    async def _stop_new(self, gateway: Gateway, before: set[str]) -> None:
        """Stop this user's gateway clusters that are not in ``before`` (a failed submit)."""
        with suppress(BaseException):
            reports = await asyncio.wait_for(gateway.list_clusters(), self.options.connect_timeout)
            for report in reports:
                if report.name not in before:
                    log.warning("stopping gateway cluster %s left by a failed start", report.name)
                    await asyncio.wait_for(gateway.stop_cluster(report.name), self.options.connect_timeout)

    # ------------------------------------------------------------------ start
    async def start(self, spec: ClusterSpec, progress: Progress) -> ClusterHandle:
        t0 = time.monotonic()
        gateway = self._gateway()
        try:
            progress("scheduler", f"asking the Dask Gateway at {gateway.address} for a cluster")
            existing = await self._tags(gateway)
            for gateway_name, tag in existing:
                if tag.get("name") == spec.name:
                    progress("scheduler", f"reconnecting to gateway cluster {gateway_name}")
                    return await self._reconnect(gateway, gateway_name, spec.name, tag)
            options = await self._call(gateway, gateway.cluster_options(),
                                       "read the Dask Gateway's cluster options")
            done, absent = fill_options(options, spec, self.options.cluster_options or {})
            detail = "creating a gateway cluster"
            if done:
                detail += " with " + ", ".join(done)
            if absent:
                detail += "; this gateway offers no option for " + ", ".join(absent) + \
                          " (its defaults apply)"
            progress("scheduler", detail)
            try:
                name = await self._call(gateway, gateway.submit(options),
                                        f"create a Dask Gateway cluster for {spec.name!r}")
            except BaseException:
                # The gateway may have created it and answered too late (or the cell was
                # stopped): stop whatever of ours appeared since we looked.
                await self._stop_new(gateway, {n for n, _ in existing})
                raise
            try:
                return await self._finish_start(gateway, name, spec, progress, t0)
            except BaseException as exc:
                with suppress(BaseException):
                    await asyncio.wait_for(gateway.stop_cluster(name), self.options.connect_timeout)
                if isinstance(exc, Exception) and not isinstance(exc, ElasticError):
                    raise translate(exc, self.options, gateway.address,
                                    action=f"start gateway cluster {name}") from None
                raise
        finally:
            with suppress(Exception):
                await gateway.close()

    async def _finish_start(self, gateway: Gateway, gateway_name: str, spec: ClusterSpec,
                            progress: Progress, t0: float) -> ClusterHandle:
        try:
            cluster = await self._open(gateway, gateway_name)
        except asyncio.TimeoutError:
            raise ClusterStartError(
                f"gateway cluster {gateway_name} did not start within "
                f"{self.options.start_timeout:g}s",
                hint=f"raise {KEY}start-timeout, or ask the hub admin (the gateway may be full)",
            ) from None
        try:
            resource, slots = CPU_RESOURCE, 1.0
            if spec.max_workers > 0:
                progress("workers", f"scheduler ready ({time.monotonic() - t0:.1f}s); "
                                    "starting the first worker")
                resources = await self._first_worker(gateway, cluster, t0, progress)
                if resources.get(GPU_RESOURCE, 0) > 0:
                    resource, slots = GPU_RESOURCE, float(resources[GPU_RESOURCE])
                elif resources.get(CPU_RESOURCE, 0) <= 0:
                    raise ClusterStartError(
                        f"the workers of gateway cluster {gateway_name} offer neither a "
                        f"{GPU_RESOURCE} nor a {CPU_RESOURCE} resource (they have "
                        f"{resources or 'none'}), so no %%gpu cell could run on them",
                        hint=RESOURCE_HINT,
                    )
            await asyncio.wait_for(
                cluster.scheduler_comm.set_metadata(
                    keys=[TAG], value={"name": spec.name, "owner": spec.owner,
                                       "resource": resource, "slots": slots}),
                self.options.connect_timeout,
            )
        except BaseException:
            with suppress(BaseException):
                await cluster.close(shutdown=False)
            raise
        handle = self._handle(spec.name, cluster, resource, slots, spec.max_workers)
        handle.extra["keep_first_until"] = time.monotonic() + spec.idle_timeout
        return handle

    async def _queue_place(self, gateway: Gateway, cluster_name: str) -> dict[str, Any] | None:
        """This cluster's place in the hub's queue (``jupyter_elastic.hub.gateway`` with
        ``when_full = "queue"``): None when it is not queued."""
        try:
            resp = await asyncio.wait_for(gateway._request("GET", gateway.address + QUOTA_ROUTE),
                                          self.options.connect_timeout)
            report = await resp.json()
        except ValueError:  # 404: this gateway does not load the quota module
            return {"absent": True}
        except Exception as exc:  # the start goes on; the place is shown at the next look
            log.debug("could not read the gateway's queue: %r", exc)
            return None
        for entry in report.get("queue") or ():
            if isinstance(entry, dict) and entry.get("cluster") == cluster_name:
                return entry
        return None

    async def _first_worker(self, gateway: Gateway, cluster: GatewayCluster, t0: float,
                            progress: Progress | None = None) -> dict[str, float]:
        """Ask for one worker and return its resources once it joined. While the hub's
        queue holds the request, its place and the wait are the start-up phase, and the
        start timeout counts only the time after it."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GatewayWarning)
            await self._call(gateway, cluster.scale(1), f"scale gateway cluster {cluster.name}")
        last_check = time.monotonic()
        ask_queue, queued = progress is not None, False
        while True:
            workers = (cluster.scheduler_info or {}).get("workers") or {}
            if workers:
                return dict(next(iter(workers.values())).get("resources") or {})
            now = time.monotonic()
            if now - last_check > 1.0:
                last_check = now
                report = await self._call(gateway, gateway.get_cluster(cluster.name),
                                          f"look up gateway cluster {cluster.name}")
                if report.status in (ClusterStatus.FAILED, ClusterStatus.STOPPED):
                    raise ClusterStartError(
                        f"gateway cluster {cluster.name} {report.status.name.lower()} while "
                        "its first worker started",
                        hint="the gateway's logs say why; ask the hub admin",
                    )
                place = await self._queue_place(gateway, cluster.name) if ask_queue else None
                if place is not None and place.get("absent"):
                    ask_queue = False
                elif place is None and queued and progress is not None:
                    queued = False
                    progress("workers", "the hub's queue admitted it; starting the first worker")
                elif place is not None and progress is not None:
                    queued = True
                    t0 = now  # queued time does not count against the start timeout
                    reason = str(place.get("reason") or "")[:200]
                    progress("queued", f"place {place.get('position')} of "
                                       f"{place.get('length')} in the hub's GPU queue, waiting "
                                       f"{float(place.get('waited') or 0):.0f}s"
                                       + (f" ({reason})" if reason else "")
                                       + "; stop the cell to leave the queue")
            if now - t0 > self.options.start_timeout:
                raise ClusterStartError(
                    f"no worker joined gateway cluster {cluster.name} within "
                    f"{self.options.start_timeout:g}s",
                    hint=f"raise {KEY}start-timeout, or ask the hub admin: the gateway may be at "
                    "its worker limit or the worker image may fail to start (see its logs)",
                )
            await asyncio.sleep(self.poll_interval)

    # ------------------------------------------------------------------ reconnect
    async def _reconnect(self, gateway: Gateway, gateway_name: str, name: str,
                         tag: dict[str, Any]) -> ClusterHandle:
        try:
            cluster = await self._open(gateway, gateway_name)
        except asyncio.TimeoutError:
            raise ClusterStartError(
                f"gateway cluster {gateway_name} did not answer within "
                f"{self.options.start_timeout:g}s",
                hint=f"stop it (dask-gateway: Gateway().stop_cluster({gateway_name!r})) and "
                "start a new one",
            ) from None
        except Exception as exc:
            raise translate(exc, self.options, gateway.address,
                            action=f"reconnect to gateway cluster {gateway_name}") from None
        resource = tag.get("resource", CPU_RESOURCE)
        return self._handle(tag.get("name") or name, cluster, resource,
                            float(tag.get("slots", 1.0)), self.settings.max_workers)

    async def connect(self, name: str) -> ClusterHandle | None:
        """The running gateway cluster named ``name`` (ours or the gateway's); else None."""
        gateway = self._gateway()
        try:
            for gateway_name, tag in await self._tags(gateway):
                if name in (gateway_name, tag.get("name")):
                    return await self._reconnect(gateway, gateway_name, name, tag)
            return None
        finally:
            with suppress(Exception):
                await gateway.close()

    # ------------------------------------------------------------------ scaling
    def _cancel_pending(self, handle: ClusterHandle) -> None:
        pending = handle.extra.get("pending")
        if pending is not None and not pending.done():
            pending.cancel()
        handle.extra["pending"] = None

    async def _request(self, handle: ClusterHandle, awaitable: Any, action: str) -> None:
        cluster = handle.cluster
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GatewayWarning)  # capped by the gateway's limit
            await self._call(cluster.gateway, awaitable, action)

    async def scale(self, handle: ClusterHandle, n: int) -> None:
        self._cancel_pending(handle)
        n = max(0, min(int(n), handle.extra["max_workers"]))
        await self._request(handle, handle.cluster.scale(n), f"scale {handle.name} to {n}")

    async def adapt(
        self, handle: ClusterHandle, minimum: int, maximum: int, idle_timeout: float
    ) -> None:
        """The gateway's adaptive scaling in [minimum, maximum].

        The gateway retires idle workers on its own schedule (``adaptive_period``, server
        config); ``idle_timeout`` applies only to the first worker, which start() waited
        for: it is kept that long so the first cell does not start a second one.
        """
        self._cancel_pending(handle)
        maximum = min(maximum, handle.extra["max_workers"])
        keep = handle.extra.get("keep_first_until", 0.0) - time.monotonic()
        handle.extra["keep_first_until"] = 0.0
        if keep > 0 and minimum < 1 <= maximum:
            await self._request(handle, handle.cluster.adapt(minimum=1, maximum=maximum),
                                f"set adaptive scaling on {handle.name}")

            async def later() -> None:
                await asyncio.sleep(keep)
                try:
                    await self._request(handle, handle.cluster.adapt(minimum=minimum, maximum=maximum),
                                        f"set adaptive scaling on {handle.name}")
                except ElasticError as exc:
                    log.warning("jupyter-elastic: %s", exc.message)

            handle.extra["pending"] = asyncio.ensure_future(later())
            return
        await self._request(handle, handle.cluster.adapt(minimum=minimum, maximum=maximum),
                            f"set adaptive scaling on {handle.name}")

    async def close(self, handle: ClusterHandle) -> None:
        self._cancel_pending(handle)
        cluster = handle.cluster
        try:
            await asyncio.wait_for(cluster.close(shutdown=True), self.options.start_timeout)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            log.warning("could not shut down gateway cluster %s: %r", cluster.name, exc)
            raise BackendUnavailable(
                f"could not stop gateway cluster {cluster.name}: {type(exc).__name__}: {exc!r}",
                hint=f"it may still be running; stop it with dask-gateway "
                     f"(Gateway().stop_cluster({cluster.name!r}))",
            ) from None

    async def quota(self) -> dict[str, Any] | None:
        """The hub's quota for this user (the quota module's route); None when the gateway
        does not load it (404)."""
        gateway = self._gateway()
        try:
            try:
                resp = await asyncio.wait_for(
                    gateway._request("GET", gateway.address + QUOTA_ROUTE),
                    self.options.connect_timeout)
            except ValueError:  # 404: no jupyter-elastic quota module in this gateway
                return None
            except Exception as exc:
                raise translate(exc, self.options, gateway.address,
                                action="read your quota") from None
            return dict(await resp.json())
        finally:
            await gateway.close()

    async def workers(self, handle: ClusterHandle) -> list[WorkerDetail]:
        return await remote_workers(handle.cluster, self.options.connect_timeout)


def _dask_get(key: str) -> Any:
    import dask.config

    return dask.config.get(key, None)
