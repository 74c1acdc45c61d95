"""TLS for Kubernetes clusters: per-cluster credentials in a Secret, and a KubeCluster that
speaks TLS to the scheduler.

At start the backend makes credentials (``Security.temporary()``: an RSA key and a
self-signed certificate that is CA, scheduler, worker and client certificate at once),
creates the Secret ``<name>-tls`` before the DaskCluster, and, once the DaskCluster exists,
makes the Secret its dependent (``ownerReferences``) so Kubernetes deletes it with the
cluster. The manifests mount it into the scheduler and worker pods and start both with
``--protocol tls`` and the mounted files (``manifests.tls_args``). The kernel gets the
credentials in its lease only (``client``: PEM text), never in an address or a log line.

dask-kubernetes' operator ``KubeCluster`` has no ``security=``: it builds the scheduler
address as ``tcp://`` and opens its comm with ``rpc(address)``. :class:`SecureKubeCluster`
turns the address into ``tls://`` and, while it creates or connects, gives the ``rpc`` and
``wait_for_scheduler_comm`` of the kubecluster module the cluster's TLS connection
arguments through a context variable (unset, they behave exactly as before). The
operator's own calls to the scheduler use its HTTP API (``/api/v1/...`` on the dashboard
port), which TLS on the Dask port does not change.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
from collections.abc import Awaitable, Callable
from typing import Any

import kr8s
from dask_kubernetes.operator import KubeCluster
from dask_kubernetes.operator.kubecluster import kubecluster as _kubecluster
from distributed.comm.core import CommClosedError
from distributed.core import rpc
from distributed.security import Security

from ...errors import ClusterStartError
from ...models import client_credentials, client_security
from .manifests import API_VERSION, MANAGED_BY, OWNER_LABEL, TLS_KEYS, tls_secret_name

_CONNECTION_ARGS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "jupyter_elastic_kubernetes_tls", default=None)
_RPC = _kubecluster.rpc
_WAIT_FOR_SCHEDULER_COMM = _kubecluster.wait_for_scheduler_comm


def make_credentials() -> dict[str, str]:
    """New credentials for one cluster, as a lease's ``client`` field carries them."""
    return client_credentials(Security.temporary())


def connection_args(credentials: dict[str, str] | None) -> dict[str, Any]:
    """``rpc(..., connection_args=)`` for the cluster (``{}`` for a cluster without TLS)."""
    if not credentials:
        return {}
    return client_security(credentials).get_connection_args("client")  # type: ignore[no-any-return]


def _secured_rpc(address: Any, *args: Any, **kwargs: Any) -> Any:
    args_now = _CONNECTION_ARGS.get()
    if args_now is not None and "connection_args" not in kwargs:
        kwargs["connection_args"] = args_now
    return _RPC(address, *args, **kwargs)


async def _secured_wait_for_scheduler_comm(address: str) -> None:
    args_now = _CONNECTION_ARGS.get()
    if args_now is None:
        await _WAIT_FOR_SCHEDULER_COMM(address)
        return
    while True:  # as dask-kubernetes' wait_for_scheduler_comm, with the TLS arguments
        try:
            async with rpc(address, connection_args=args_now) as scheduler_comm:
                await scheduler_comm.versions()
        except (CommClosedError, OSError):
            await asyncio.sleep(0.1)
            continue
        break


_kubecluster.rpc = _secured_rpc
_kubecluster.wait_for_scheduler_comm = _secured_wait_for_scheduler_comm


class SecureKubeCluster(KubeCluster):  # type: ignore[misc]
    """A KubeCluster for a DaskCluster whose scheduler listens with TLS.

    ``credentials``: the lease's ``client`` field (``None``: a plain ``tcp://`` cluster, as
    an older jupyter-elastic started them). ``after_create`` runs once the DaskCluster
    exists, before the wait for the operator (the Secret gets its owner there).
    """

    def __init__(self, *args: Any, credentials: dict[str, str] | None = None,
                 after_create: Callable[[], Awaitable[None]] | None = None, **kwargs: Any) -> None:
        self._tls_credentials = credentials
        self._after_create = after_create
        super().__init__(*args, **kwargs)

    @property
    def security(self) -> Security | None:
        """What ``distributed.Client(cluster)`` connects with."""
        return client_security(self._tls_credentials) if self._tls_credentials else None

    async def _get_scheduler_address(self) -> str:
        address = str(await super()._get_scheduler_address())
        if self._tls_credentials and address.startswith("tcp://"):
            address = "tls://" + address[len("tcp://"):]
        return address

    async def _wait_for_controller(self) -> None:
        if self._after_create is not None:
            hook, self._after_create = self._after_create, None
            await hook()
        await super()._wait_for_controller()

    async def _secured(self, step: Callable[[], Awaitable[None]]) -> None:
        token = _CONNECTION_ARGS.set(connection_args(self._tls_credentials) if self._tls_credentials else None)
        try:
            await step()
        finally:
            _CONNECTION_ARGS.reset(token)

    async def _create_cluster(self) -> None:
        await self._secured(super()._create_cluster)

    async def _connect_cluster(self) -> None:
        await self._secured(super()._connect_cluster)


# --------------------------------------------------------------------------- the Secret
async def create_secret(api: Any, manifest: dict[str, Any], owner: str) -> None:
    """Create the TLS Secret; a leftover one of ours (same owner) is replaced, anyone
    else's is a ConfigError."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    body = json.dumps(manifest)
    try:
        async with api.call_api("POST", version="v1", namespace=namespace, url="secrets", content=body):
            return
    except kr8s.ServerError as exc:
        if exc.response is None or exc.response.status_code != 409:
            raise
    async with api.call_api("GET", version="v1", namespace=namespace, url=f"secrets/{name}") as resp:
        labels = (resp.json().get("metadata") or {}).get("labels") or {}
    ours = labels.get(OWNER_LABEL) == owner and all(labels.get(k) == v for k, v in MANAGED_BY.items())
    if not ours:
        from ...errors import ConfigError

        raise ConfigError(f"a Secret named {name!r} already exists in namespace {namespace} and is not "
                          "one jupyter-elastic made for you; pick another cluster name")
    await delete_secret(api, namespace, name)
    async with api.call_api("POST", version="v1", namespace=namespace, url="secrets", content=body):
        pass


async def own_secret(api: Any, namespace: str, cluster: str) -> None:
    """Make the Secret a dependent of the DaskCluster ``cluster``: deleted with it."""
    async with api.call_api("GET", version=API_VERSION, namespace=namespace,
                            url=f"daskclusters/{cluster}") as resp:
        uid = resp.json()["metadata"]["uid"]
    owner = {"apiVersion": API_VERSION, "kind": "DaskCluster", "name": cluster, "uid": uid}
    async with api.call_api("PATCH", version="v1", namespace=namespace,
                            url=f"secrets/{tls_secret_name(cluster)}",
                            headers={"Content-Type": "application/merge-patch+json"},
                            content=json.dumps({"metadata": {"ownerReferences": [owner]}})):
        pass


async def delete_secret(api: Any, namespace: str, name: str) -> None:
    """Delete a Secret; one already gone is fine."""
    try:
        async with api.call_api("DELETE", version="v1", namespace=namespace, url=f"secrets/{name}"):
            pass
    except kr8s.ServerError as exc:
        if exc.response is None or exc.response.status_code != 404:
            raise


def uses_tls(daskcluster: dict[str, Any]) -> bool:
    """Whether the DaskCluster's scheduler was started with TLS (older ones were not)."""
    args = daskcluster["spec"]["scheduler"]["spec"]["containers"][0].get("args") or []
    return "--tls-ca-file" in args


async def read_credentials(api: Any, namespace: str, cluster: str) -> dict[str, str]:
    """The credentials of a running cluster, from its Secret (a reconnect after a restart)."""
    name = tls_secret_name(cluster)
    try:
        async with api.call_api("GET", version="v1", namespace=namespace, url=f"secrets/{name}") as resp:
            data = resp.json().get("data") or {}
    except kr8s.ServerError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            raise ClusterStartError(
                f"DaskCluster {cluster!r} in namespace {namespace} has no TLS Secret {name!r} any more, "
                "so nothing can connect to its scheduler",
                hint=f"delete it with `kubectl delete daskcluster {cluster} -n {namespace}` and start a new one",
            ) from None
        raise
    try:
        creds = {field: base64.b64decode(data[key]).decode() for key, field in TLS_KEYS.items()}
    except (KeyError, ValueError) as exc:
        raise ClusterStartError(f"the TLS Secret {name!r} in namespace {namespace} is incomplete "
                                f"({type(exc).__name__}: {exc})") from None
    return {"kind": "tls", **creds}
