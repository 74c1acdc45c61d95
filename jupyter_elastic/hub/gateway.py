"""Quotas a shared Dask Gateway enforces itself, across all of a user's clusters.

A limit kept in a user's own Jupyter server (``c.ElasticExtension.max_gpus_per_user``) stops
nobody who talks to the gateway from a cell. This module runs **inside the
dask-gateway-server process**: the admin wraps the gateway's backend (local, Kubernetes,
any ``dask_gateway_server.backends.base.Backend`` subclass) in ``dask_gateway_config.py``::

    from jupyter_elastic.hub.gateway import quota_backend
    c.DaskGateway.backend_class = quota_backend(
        "dask_gateway_server.backends.kubernetes.KubeBackend")
    c.ElasticQuota.user_gpus = 2
    c.ElasticQuota.groups = {"students": {"gpus": 1, "workers": 2, "gpu_types": ["t4"]}}
    c.ElasticQuota.contact = "hub-admins@example.org"

and the wrapped backend enforces, where a notebook cannot reach:

* **at cluster creation** (``process_cluster_options``): the GPU type is one the user's
  groups allow, and one more worker of the asked size fits in what the user's other clusters
  leave of their GPU and worker limits; the cluster's idle timeout is the default when the
  user set none (on by default) and at most the maximum;
* **at an explicit scale** (``forward_message_to_scheduler``, op ``scale``): a count over
  what the quota leaves is refused, nothing changes, and the refusal names the limit, what
  holds it and who to ask; a count within it is reserved at once;
* **at every scheduler heartbeat** (``on_cluster_heartbeat``): the worker count the
  scheduler asks for (adaptive scaling, or anything a user did on their own scheduler) is
  clamped to what the quota leaves before the gateway acts on it, the way dask-gateway
  clamps ``cluster_max_workers``;
* **the lease**: a running cluster with no Dask client connected (read from the scheduler's
  ``/metrics``: ``dask_scheduler_clients``) for ``lease_ttl`` seconds is stopped, counted
  from when a granted worker is up (``dask_scheduler_workers``);
* **pools and the queue**: ``pool_gpus`` (hub-wide) and a group's ``pool_gpus`` bound what
  everybody, or a group's members, hold together; with ``when_full = "queue"`` a request
  that does not fit now waits in a fair queue (``hub.queue``: per-user round robin, group
  priority) instead of being refused, its place reported on the quota route.

Every refusal is one line starting with ``protocol.QUOTA_MARK``; the project's gateway
backend turns it into ``QuotaExceeded`` in the cell. ``GET protocol.QUOTA_ROUTE`` tells an
authenticated user their limits and what holds them (``jupyter-elastic doctor``).

Imports: only the leaf modules of the package (``errors``, ``config``, ``models``,
``protocol``), dask-gateway-server, aiohttp, traitlets and PyYAML.

Why one module this long: admins load exactly one module into dask-gateway-server; the
limits table, the wrapping backend and its route belong together there.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from dask_gateway_server import models as gw_models
from dask_gateway_server.backends.base import Backend, PublicException
from dask_gateway_server.routes import api_handler
from traitlets import Dict, Enum, Float, Integer, List, Unicode, default, import_item
from traitlets.config import LoggingConfigurable

from ..config import non_negative, quote, short_text, whole
from ..errors import ConfigError
from ..protocol import QUOTA_MARK, QUOTA_ROUTE
from .queue import POOL, FairQueue, Ticket

#: Key under which a cluster's options keep its owner's groups (limits after a restart).
GROUPS_KEY = "jupyter_elastic_groups"
#: Keys one entry of the limits table may have (``pool_gpus`` and ``priority``: groups only).
ENTRY_KEYS = ("gpus", "workers", "gpu_types", "pool_gpus", "priority")
#: Keys of the quota file.
FILE_KEYS = ("user_gpus", "user_workers", "gpu_types", "groups", "contact", "pool_gpus")
#: Largest quota file read, and largest /metrics answer read, in bytes.
MAX_FILE_BYTES = 1 << 20
MAX_METRICS_BYTES = 4 << 20
#: Clusters named in one refusal line before "and N more".
MAX_NAMED = 4

_CLIENTS_RE = re.compile(rb"^dask_scheduler_clients(?:\{[^}\n]*\})?\s+([0-9.eE+-]+)\s*$", re.M)
_WORKERS_RE = re.compile(rb"^dask_scheduler_workers(?:\{[^}\n]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


class QuotaRefusal(Exception):
    """A request over quota: the one line the user sees (starts with QUOTA_MARK)."""


@dataclass(frozen=True)
class Limits:
    """What one user may hold; None is no limit."""

    gpus: float | None
    workers: int | None
    gpu_types: tuple[str, ...] | None
    source: str
    #: Queue priority (the highest of the user's groups'; 0 by default).
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "workers": self.workers,
                "gpu_types": list(self.gpu_types) if self.gpu_types is not None else None,
                "source": self.source, "priority": self.priority}


@dataclass(frozen=True)
class Held:
    """One active cluster of a user and what it holds."""

    cluster: str
    gpus_per_worker: float
    workers: int

    @property
    def gpus(self) -> float:
        return self.gpus_per_worker * self.workers

    def to_json(self) -> dict[str, Any]:
        return {"name": self.cluster, "workers": self.workers,
                "gpus_per_worker": self.gpus_per_worker, "gpus": self.gpus}


def parse_entry(raw: Any, what: str) -> dict[str, Any]:
    """One entry of the limits table (``{"gpus": 1, "workers": 2, "gpu_types": [...]}``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} must be a mapping with keys {', '.join(ENTRY_KEYS)}, "
                          f"got {quote(raw)}")
    unknown = sorted(str(k) for k in raw if k not in ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{what} has unknown key(s) {', '.join(map(quote, unknown))}",
                          hint=f"use {', '.join(ENTRY_KEYS)}")
    entry: dict[str, Any] = {}
    if raw.get("gpus") is not None:
        entry["gpus"] = non_negative(raw["gpus"], f"{what}.gpus")
    if raw.get("workers") is not None:
        entry["workers"] = whole(raw["workers"], f"{what}.workers", text=False)
    if raw.get("gpu_types") is not None:
        types = raw["gpu_types"]
        if not isinstance(types, (list, tuple)) or len(types) > 64:
            raise ConfigError(f"{what}.gpu_types must be a list of at most 64 GPU type names, "
                              f"got {quote(types)}")
        entry["gpu_types"] = tuple(short_text(t, f"{what}.gpu_types", limit=64) for t in types)
    if raw.get("pool_gpus") is not None:
        entry["pool_gpus"] = non_negative(raw["pool_gpus"], f"{what}.pool_gpus")
    if raw.get("priority") is not None:
        entry["priority"] = whole(raw["priority"], f"{what}.priority", text=False)
    return entry


def _number(value: Any) -> float:
    """A cluster option's GPU count as a number (0 when absent or not a number)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value > 0 else 0.0
    if isinstance(value, str) and len(value) <= 32:
        try:
            number = float(value)
        except ValueError:
            return 0.0
        return number if math.isfinite(number) and number > 0 else 0.0
    return 0.0


def _named(held: list[Held]) -> str:
    """The clusters holding a limit, for one line."""
    shown = [f"{h.cluster} ({h.workers} worker(s) x {h.gpus_per_worker:g} GPU)" for h in held
             if h.workers > 0]
    if not shown:
        return "no cluster holds any"
    more = f" and {len(shown) - MAX_NAMED} more" if len(shown) > MAX_NAMED else ""
    return "cluster " + ", ".join(shown[:MAX_NAMED]) + more


class ElasticQuota(LoggingConfigurable):
    """The limits table and the rules; ``c.ElasticQuota.*`` in dask_gateway_config.py."""

    user_gpus = Float(None, allow_none=True, config=True,
                      help="GPUs a user may hold across all their clusters (None: no limit), "
                           "unless one of their groups says otherwise")
    user_workers = Integer(None, allow_none=True, config=True,
                           help="Workers a user may run across all their clusters (None: no limit)")
    gpu_types = List(Unicode(), default_value=None, allow_none=True, config=True,
                     help="GPU types every user may ask for (None: any)")
    groups = Dict(config=True,
                  help='Limits by group: {"students": {"gpus": 1, "workers": 2, '
                       '"gpu_types": ["t4"]}}; a member gets the most generous of their groups')
    pool_gpus = Float(None, allow_none=True, config=True,
                      help="GPUs all users together may hold (None: no pool limit); a group's "
                           "pool_gpus bounds what its members hold together")
    when_full = Enum(["refuse", "queue"], "refuse", config=True,
                     help="What a request that does not fit now gets: 'refuse' (one line "
                          "naming what holds the quota) or 'queue' (it waits its turn in a "
                          "per-user round-robin queue and starts when it fits)")
    queue_per_user = Integer(4, min=1, config=True,
                             help="Requests one user may have waiting in the queue")
    quota_file = Unicode("", config=True,
                         help="A YAML file with user_gpus, user_workers, gpu_types, groups, "
                              "contact, pool_gpus; its keys win over these settings; re-read "
                              "when it changes")
    contact = Unicode("the hub admin", config=True, help="Who users ask for more")
    idle_timeout = Float(1800.0, min=0, config=True,
                         help="Seconds before an idle cluster is stopped when the user set "
                              "none (0: off)")
    max_idle_timeout = Float(8 * 3600.0, min=0, config=True,
                             help="Largest idle timeout a user may set (0: no maximum)")
    lease_ttl = Float(600.0, min=0, config=True,
                      help="Seconds a running cluster may have no Dask client before it is "
                           "stopped (0: off)")
    lease_check_period = Float(15.0, min=0.05, config=True,
                               help="Seconds between looks at every running cluster's clients")
    gpu_option = Unicode("worker_gpus", config=True,
                         help="The cluster option that holds GPUs per worker")
    gpu_type_option = Unicode("gpu_type", config=True,
                              help="The cluster option that holds the GPU type")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._file_stamp: tuple[float, int] | None = None
        self._table = self._parse(self._settings())
        self.table()  # a missing or malformed quota file fails here, at the gateway's start

    # ------------------------------------------------------------------ the table
    def _settings(self) -> dict[str, Any]:
        return {"user_gpus": self.user_gpus, "user_workers": self.user_workers,
                "gpu_types": self.gpu_types, "groups": dict(self.groups), "contact": self.contact,
                "pool_gpus": self.pool_gpus}

    def _parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        groups = raw.get("groups") or {}
        if not isinstance(groups, dict):
            raise ConfigError(f"ElasticQuota.groups must be a mapping, got {quote(groups)}")
        default = parse_entry({"gpus": raw.get("user_gpus"), "workers": raw.get("user_workers"),
                               "gpu_types": raw.get("gpu_types")}, "ElasticQuota (user_*)")
        pool = raw.get("pool_gpus")
        return {
            "default": default,
            "pool_gpus": None if pool is None else non_negative(pool, "ElasticQuota.pool_gpus"),
            "groups": {short_text(g, "a group name", limit=128): parse_entry(e, f"groups[{g!r}]")
                       for g, e in groups.items()},
            "contact": short_text(raw.get("contact") or "the hub admin", "ElasticQuota.contact"),
        }

    def table(self) -> dict[str, Any]:
        """The limits in force: these settings, overlaid by the quota file when it changed."""
        if not self.quota_file:
            return self._table
        try:
            st = os.stat(self.quota_file)
        except OSError as exc:
            if self._file_stamp is None:
                raise ConfigError(f"cannot read ElasticQuota.quota_file {self.quota_file}: {exc}") \
                    from None
            self.log.error("jupyter-elastic: cannot read %s (%s); keeping the limits read before",
                           self.quota_file, exc)
            return self._table
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._file_stamp:
            try:
                self._table = self._read_file(st.st_size)
            except (ConfigError, OSError, yaml.YAMLError) as exc:
                reason = " ".join(str(exc).split())[:300]  # YAML errors span lines
                if self._file_stamp is None:
                    raise ConfigError(f"ElasticQuota.quota_file {self.quota_file}: {reason}") \
                        from None
                self.log.error("jupyter-elastic: %s is invalid (%s); keeping the limits read "
                               "before", self.quota_file, reason)
            self._file_stamp = stamp
        return self._table

    def _read_file(self, size: int) -> dict[str, Any]:
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"the file is {size} bytes; at most {MAX_FILE_BYTES} are read")
        with open(self.quota_file, encoding="utf-8") as f:
            raw = yaml.safe_load(f.read(MAX_FILE_BYTES)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"it must be a mapping, got {quote(raw)}")
        unknown = sorted(set(map(str, raw)) - set(FILE_KEYS))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(map(quote, unknown))}")
        return self._parse({**self._settings(), **raw})

    @property
    def who(self) -> str:
        return str(self.table()["contact"])

    def limits_for(self, groups: Iterable[str]) -> Limits:
        """A user's limits: the most generous entry among their groups, else the default."""
        table = self.table()
        default = table["default"]
        names = sorted(g for g in set(groups) if g in table["groups"])
        if not names:
            return Limits(default.get("gpus"), default.get("workers"), default.get("gpu_types"),
                          "the default for every user")
        chosen = [table["groups"][g] for g in names]
        entries = [{**default, **g} for g in chosen]

        def most(key: str) -> Any:
            values = [e.get(key) for e in entries]
            return None if any(v is None for v in values) else max(v for v in values if v is not None)

        if any(e.get("gpu_types") is None for e in entries):
            types = None
        else:
            types = tuple(sorted({t for e in entries for t in e["gpu_types"]}))
        source = ("group " if len(names) == 1 else "groups ") + ", ".join(names)
        priority = max(int(g.get("priority", 0)) for g in chosen)
        return Limits(most("gpus"), most("workers"), types, source, priority)

    def pools_for(self, groups: Iterable[str]) -> dict[str, float]:
        """The GPU pools a member of ``groups`` draws from: scope -> GPUs in it."""
        table = self.table()
        pools = {f"group:{g}": float(table["groups"][g]["pool_gpus"]) for g in set(groups)
                 if "pool_gpus" in table["groups"].get(g, {})}
        if table["pool_gpus"] is not None:
            pools[POOL] = float(table["pool_gpus"])
        return pools

    def idle_for(self, asked: float) -> float:
        """The idle timeout a cluster gets: the default when none was set, at most the max."""
        seconds = float(asked or 0) or self.idle_timeout
        if self.max_idle_timeout > 0 and (seconds <= 0 or seconds > self.max_idle_timeout):
            seconds = self.max_idle_timeout
        return seconds

    def gpus_of(self, options: Any) -> float:
        return _number((options or {}).get(self.gpu_option))

    # ------------------------------------------------------------------ the rules
    def check_new(self, user: str, limits: Limits, gpus_per_worker: float, gpu_type: Any,
                  held: list[Held]) -> None:
        """Raise QuotaRefusal unless a new cluster could run one worker of this size."""
        ask = f"or ask {self.who} for more"
        if gpus_per_worker > 0 and limits.gpu_types is not None:
            if gpu_type is None or str(gpu_type) not in limits.gpu_types:
                allowed = ", ".join(limits.gpu_types) or "none"
                raise QuotaRefusal(
                    f"{QUOTA_MARK} GPU type {quote(gpu_type)} is not allowed for {user} "
                    f"({limits.source} allows: {allowed}); pick one of those, {ask}")
        if limits.gpus is not None and gpus_per_worker > limits.gpus:
            raise QuotaRefusal(
                f"{QUOTA_MARK} one worker with {gpus_per_worker:g} GPUs is over {user}'s limit "
                f"of {limits.gpus:g} GPUs ({limits.source}); ask for fewer GPUs per worker, {ask}")
        used_gpus = sum(h.gpus for h in held)
        if (limits.gpus is not None and gpus_per_worker > 0
                and used_gpus + gpus_per_worker > limits.gpus + 1e-9):
            raise QuotaRefusal(
                f"{QUOTA_MARK} {user} may hold {limits.gpus:g} GPUs ({limits.source}) and holds "
                f"{used_gpus:g}: {_named(held)}; a cluster with {gpus_per_worker:g} GPU(s) per "
                f"worker does not fit. Stop or scale down a cluster, {ask}")
        used_workers = sum(h.workers for h in held)
        if limits.workers is not None and used_workers + 1 > limits.workers:
            raise QuotaRefusal(
                f"{QUOTA_MARK} {user} may run {limits.workers} workers ({limits.source}) and runs "
                f"{used_workers}: {_named(held)}; a new cluster could not start one. Stop or "
                f"scale down a cluster, {ask}")

    def allowed_workers(self, limits: Limits, gpus_per_worker: float, others: list[Held]) -> int | None:
        """Most workers one cluster may have given the user's other clusters (None: any)."""
        bounds = []
        if limits.gpus is not None and gpus_per_worker > 0:
            free = limits.gpus - sum(h.gpus for h in others)
            bounds.append(max(0, math.floor(free / gpus_per_worker + 1e-9)))
        if limits.workers is not None:
            bounds.append(max(0, limits.workers - sum(h.workers for h in others)))
        return min(bounds) if bounds else None

    def scale_refusal(self, user: str, cluster: str, count: int, allowed: int, limits: Limits,
                      gpus_per_worker: float, others: list[Held]) -> QuotaRefusal:
        if limits.gpus is not None and gpus_per_worker > 0 and \
                count * gpus_per_worker > limits.gpus - sum(h.gpus for h in others) + 1e-9:
            what = (f"{count} workers x {gpus_per_worker:g} GPU need {count * gpus_per_worker:g} "
                    f"GPUs; {user} may hold {limits.gpus:g} ({limits.source}) and the other "
                    f"clusters hold {sum(h.gpus for h in others):g}: {_named(others)}")
        else:
            what = (f"{user} may run {limits.workers} workers ({limits.source}) and the other "
                    f"clusters run {sum(h.workers for h in others)}: {_named(others)}")
        return QuotaRefusal(
            f"{QUOTA_MARK} cannot scale cluster {cluster} to {count}: {what}. At most {allowed} "
            f"worker(s) fit here: scale to {allowed} or fewer, stop another cluster, or ask "
            f"{self.who} for more")


def _pool_name(scope: str) -> str:
    return "the hub's GPU pool" if scope == POOL else f"group {scope.split(':', 1)[1]}'s GPU pool"


class Usage:
    """What every active cluster is granted now, summed per user and per GPU pool."""

    def __init__(self) -> None:
        self.clusters: dict[str, tuple[str, float, int, tuple[str, ...]]] = {}
        self.user_gpus: dict[str, float] = {}
        self.user_workers: dict[str, int] = {}
        self.pools: dict[str, float] = {}

    def _apply(self, name: str, sign: int) -> None:
        user, gpw, workers, scopes = self.clusters[name]
        self.user_gpus[user] = self.user_gpus.get(user, 0.0) + sign * gpw * workers
        self.user_workers[user] = self.user_workers.get(user, 0) + sign * workers
        for scope in scopes:
            self.pools[scope] = self.pools.get(scope, 0.0) + sign * gpw * workers

    def set(self, name: str, user: str, gpus_per_worker: float, workers: int,
            scopes: Iterable[str]) -> None:
        if name in self.clusters:
            self._apply(name, -1)
        self.clusters[name] = (user, gpus_per_worker, workers, tuple(scopes))
        self._apply(name, +1)

    def allowed(self, name: str, user: str, limits: Limits, pools: dict[str, float],
                gpus_per_worker: float) -> tuple[int | None, str, str]:
        """Most workers cluster ``name`` may have now (None: any), the scope that bounds it
        and that bound in words."""
        _u, own_gpw, own_workers, _s = self.clusters.get(name, (user, 0.0, 0, ()))
        own_gpus = own_gpw * own_workers
        best: tuple[int | None, str, str] = (None, "", "")

        def bound(n: float, scope: str, words: str) -> None:
            nonlocal best
            n = max(0, math.floor(n + 1e-9))
            if best[0] is None or n < best[0]:
                best = (int(n), scope, words)

        if gpus_per_worker > 0:
            if limits.gpus is not None:
                held = self.user_gpus.get(user, 0.0) - own_gpus
                bound((limits.gpus - held) / gpus_per_worker, f"user:{user}",
                      f"{user} may hold {limits.gpus:g} GPUs ({limits.source}) and the other "
                      f"clusters hold {held:g}")
            for scope, cap in pools.items():
                held = self.pools.get(scope, 0.0) - own_gpus
                bound((cap - held) / gpus_per_worker, scope,
                      f"{_pool_name(scope)} has {cap:g} GPUs and {held:g} are held")
        if limits.workers is not None:
            held_workers = self.user_workers.get(user, 0) - own_workers
            bound(limits.workers - held_workers, f"user:{user}",
                  f"{user} may run {limits.workers} workers ({limits.source}) and the other "
                  f"clusters run {held_workers}")
        return best


def _ceiling(limits: Limits, pools: dict[str, float], gpus_per_worker: float) -> int | None:
    """Most workers one cluster could ever have, with nothing else running (None: any)."""
    bounds = [limits.workers] if limits.workers is not None else []
    if gpus_per_worker > 0:
        caps = [*pools.values()] + ([limits.gpus] if limits.gpus is not None else [])
        bounds += [math.floor(c / gpus_per_worker + 1e-9) for c in caps]
    return min(bounds) if bounds else None


class QuotaBackendMixin:
    """The quota rules around a dask-gateway backend; see ``quota_backend``."""

    log: Any
    #: The clock of the lease and the queue's waits (a simulation replaces it).
    elastic_clock = staticmethod(time.monotonic)

    @property
    def elastic_quota(self) -> ElasticQuota:
        quota = self.__dict__.get("_elastic_quota")
        if quota is None:
            quota = ElasticQuota(parent=self, log=self.log)
            self.__dict__["_elastic_quota"] = quota
        return quota

    @property
    def _granted(self) -> dict[str, int]:
        """Workers granted to each active cluster (scale reservations and heartbeats)."""
        return self.__dict__.setdefault("_elastic_granted", {})

    # ------------------------------------------------------------------ holdings
    def _held(self, cluster: Any) -> Held:
        return Held(cluster.name, self.elastic_quota.gpus_of(cluster.options),
                    self._granted.get(cluster.name, 0))

    async def _holdings(self, username: str, *, besides: str | None = None) -> list[Held]:
        clusters = await super().list_clusters(username=username)  # type: ignore[misc]
        return [self._held(c) for c in clusters if c.name != besides]

    def _limits_of(self, cluster: Any) -> Limits:
        return self.elastic_quota.limits_for((cluster.options or {}).get(GROUPS_KEY) or ())

    def _pools_of(self, cluster: Any) -> dict[str, float]:
        return self.elastic_quota.pools_for((cluster.options or {}).get(GROUPS_KEY) or ())

    @property
    def _meta(self) -> dict[str, tuple[str, float, tuple[str, ...]]]:
        """A granted cluster's user, GPUs per worker and pools (read at its last grant)."""
        return self.__dict__.setdefault("_elastic_meta", {})

    def _grant(self, name: str, count: int, user: str, gpus_per_worker: float,
               pools: Iterable[str]) -> None:
        self._granted[name] = count
        self._meta[name] = (user, gpus_per_worker, tuple(pools))

    def _forget(self, name: str) -> None:
        self._granted.pop(name, None)
        self._meta.pop(name, None)
        self._explicit.pop(name, None)

    async def _usage(self) -> Usage:
        """Every active cluster's grant, summed per user and per pool: O(granted clusters),
        not O(all clusters), so a decision stays cheap with many idle clusters."""
        usage, meta = Usage(), self._meta
        for name, workers in self._granted.items():
            if workers and name in meta:
                user, gpw, pools = meta[name]
                usage.set(name, user, gpw, workers, pools)
        return usage

    # ------------------------------------------------------------------ the queue
    @property
    def elastic_queue(self) -> FairQueue:
        queue = self.__dict__.get("_elastic_queue")
        if queue is None:
            queue = self.__dict__["_elastic_queue"] = FairQueue(clock=self.elastic_clock)
            self.__dict__["_elastic_lock"] = asyncio.Lock()
            self.__dict__["_elastic_waiting"] = {}
        return queue

    @property
    def _lock(self) -> asyncio.Lock:
        self.elastic_queue  # noqa: B018 - creates the lock with the queue
        return self.__dict__["_elastic_lock"]

    @property
    def _explicit(self) -> dict[str, int]:
        """Clusters sized by an explicit scale (until an adapt): their worker count."""
        return self.__dict__.setdefault("_elastic_explicit", {})

    @property
    def _waiting(self) -> dict[str, tuple[Limits, dict[str, float]]]:
        """A queued cluster's limits and pools (read when it was queued)."""
        self.elastic_queue  # noqa: B018
        return self.__dict__["_elastic_waiting"]

    def _withdraw(self, cluster_name: str) -> Ticket | None:
        self._waiting.pop(cluster_name, None)
        return self.elastic_queue.withdraw(cluster_name)

    async def _admit(self, usage: Usage | None = None) -> list[Ticket]:
        """Grant every queued request that fits now, in the queue's order (under the lock)."""
        queue = self.elastic_queue
        if not len(queue):
            return []
        usage = usage or await self._usage()

        def blocked_by(ticket: Ticket) -> str | None:
            limits, pools = self._waiting[ticket.cluster]
            allowed, scope, words = usage.allowed(ticket.cluster, ticket.user, limits, pools,
                                                  ticket.gpus_per_worker)
            if allowed is not None and ticket.count > allowed:
                ticket.reason = words
                return scope
            usage.set(ticket.cluster, ticket.user, ticket.gpus_per_worker, ticket.count, pools)
            return None

        admitted = queue.admit(blocked_by)
        for ticket in admitted:
            _limits, pools = self._waiting.pop(ticket.cluster)
            self._grant(ticket.cluster, ticket.count, ticket.user, ticket.gpus_per_worker, pools)
            self.log.info("jupyter-elastic: queue admits cluster %s of %s (%d worker(s)) after "
                          "%.1fs", ticket.cluster, ticket.user, ticket.count,
                          self.elastic_clock() - ticket.since)
        return admitted

    async def _forward_admitted(self, admitted: list[Ticket], skip: str | None = None) -> None:
        """Tell the schedulers of admitted explicit requests their new size."""
        for ticket in admitted:
            if ticket.kind != "scale" or ticket.cluster == skip:
                continue
            try:
                cluster = await super().get_cluster(ticket.cluster)  # type: ignore[misc]
                if cluster is not None:
                    await super().forward_message_to_scheduler(  # type: ignore[misc]
                        cluster, {"op": "scale", "count": ticket.count})
            except Exception as exc:
                self.log.warning("jupyter-elastic: cannot scale admitted cluster %s: %r",
                                 ticket.cluster, exc)

    async def _ask(self, cluster: Any, count: int, kind: str) -> tuple[int | None, list[Ticket]]:
        """Grant ``count`` workers to ``cluster`` if the quota and the queue allow: the count
        granted now (None: an explicit request waits in the queue) and the queued requests
        this admitted. Refuses (QuotaRefusal) an explicit request that cannot be granted."""
        quota, queue, name = self.elastic_quota, self.elastic_queue, cluster.name
        current = self._granted.get(name, 0)
        if kind == "adaptive" and count < current and name in self._explicit:
            # a heartbeat sent before the scheduler heard of the scale (or a count lowered on
            # the scheduler itself): the explicit request keeps its grant until rescaled
            return count, []
        waiting = queue.get(name)
        if count <= current:  # less than it has: always granted, and frees room
            if waiting is not None and (kind == "scale" or waiting.kind == "adaptive"):
                self._withdraw(name)
            self._granted[name] = count
            return count, (await self._admit() if count < current else [])
        if kind == "adaptive" and waiting is not None and waiting.kind == "scale":
            return current, []  # an explicit request waits: the scheduler's own count does not
        if waiting is not None and waiting.kind == kind and waiting.count == count:
            # the same request again (every heartbeat of a waiting cluster): it keeps its
            # place; admission runs when room frees, not once per heartbeat
            return (None if kind == "scale" else current), []
        usage = await self._usage()
        limits, pools = self._limits_of(cluster), self._pools_of(cluster)
        gpw = quota.gpus_of(cluster.options)
        ceiling = _ceiling(limits, pools, gpw) if quota.when_full == "queue" else None
        allowed, scope, words = usage.allowed(name, cluster.username, limits, pools, gpw)
        if quota.when_full == "refuse" or (ceiling is not None and count > ceiling):
            bound = allowed if quota.when_full == "refuse" else ceiling
            if bound is not None and count > bound:
                if kind == "scale" and quota.when_full == "queue":
                    raise self._refusal(cluster, count, bound,
                                        f"at most {bound} worker(s) with {gpw:g} GPU(s) each "
                                        f"ever fit in {cluster.username}'s limits "
                                        f"({limits.source}) and GPU pools, even with nothing "
                                        f"else running")
                if kind == "scale" and scope.startswith("user:"):
                    others = await self._holdings(cluster.username, besides=name)
                    raise quota.scale_refusal(cluster.username, name, count, bound, limits, gpw,
                                              others)
                if kind == "scale":
                    raise self._refusal(cluster, count, bound, words)
                self.log.info("jupyter-elastic: cluster %s of %s asked for %d workers; its "
                              "quota leaves %d", name, cluster.username, count, bound)
                count = max(bound, current)
            if quota.when_full == "refuse" or count <= current:
                self._grant(name, count, cluster.username, gpw, pools)
                return count, []
        if waiting is None and len(queue.of_user(cluster.username)) >= quota.queue_per_user:
            if kind == "adaptive":
                return current, []
            raise QuotaRefusal(
                f"{QUOTA_MARK} {cluster.username} already has {quota.queue_per_user} requests "
                f"waiting in the queue; stop one of those clusters first, or ask {quota.who}")
        queue.put(Ticket(name, cluster.username, count, gpw,
                         frozenset({f"user:{cluster.username}", *pools}), limits.priority,
                         kind, reason=words))
        self._waiting[name] = (limits, pools)
        admitted = await self._admit(usage)
        if any(t.cluster == name for t in admitted):
            return count, admitted
        if waiting is None:
            self.log.info("jupyter-elastic: cluster %s of %s waits in the queue for %d "
                          "worker(s) (place %d of %d)", name, cluster.username, count,
                          queue.positions().get(name, 0), len(queue))
        return (None if kind == "scale" else current), admitted

    def _refusal(self, cluster: Any, count: int, allowed: int, words: str) -> QuotaRefusal:
        return QuotaRefusal(
            f"{QUOTA_MARK} cannot scale cluster {cluster.name} to {count}: {words}. At most "
            f"{allowed} worker(s) fit here: scale to {allowed} or fewer, stop another cluster, "
            f"or ask {self.elastic_quota.who} for more")

    # ------------------------------------------------------------------ the gateway's hooks
    async def setup(self, app: web.Application) -> None:
        quota = self.elastic_quota
        quota.table()  # a malformed table or file stops the gateway at start, not later
        app.router.add_get(QUOTA_ROUTE, api_handler(self._quota_route, user_authenticated=True))
        await super().setup(app)  # type: ignore[misc]
        self.__dict__["_elastic_session"] = aiohttp.ClientSession()
        self.__dict__["_elastic_seen"] = {}
        self.__dict__["_elastic_lease"] = asyncio.ensure_future(self._lease_loop())
        self.log.info("jupyter-elastic quotas on: idle timeout %gs (max %gs), lease %gs, "
                      "contact %s", quota.idle_timeout, quota.max_idle_timeout, quota.lease_ttl,
                      quota.who)

    async def cleanup(self) -> None:
        task = self.__dict__.pop("_elastic_lease", None)
        if task is not None:
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: S110 - cancelled on purpose
                pass
        session = self.__dict__.pop("_elastic_session", None)
        if session is not None:
            await session.close()
        await super().cleanup()  # type: ignore[misc]

    async def process_cluster_options(self, user: Any, request: Any) -> tuple[dict[str, Any], Any]:
        options, config = await super().process_cluster_options(user, request)  # type: ignore[misc]
        quota = self.elastic_quota
        limits, gpw = quota.limits_for(user.groups), quota.gpus_of(options)
        queued = quota.when_full == "queue"
        try:
            # queued: only what could never fit is refused; the rest waits for its workers
            quota.check_new(user.name, limits, gpw, options.get(quota.gpu_type_option),
                            [] if queued else await self._holdings(user.name))
            pools = quota.pools_for(user.groups)
            if gpw > 0 and pools:
                usage = Usage() if queued else await self._usage()
                allowed, _scope, words = usage.allowed("", user.name, limits, pools, gpw)
                if allowed is not None and allowed < 1:
                    if queued:
                        words = f"{_pool_name(_scope)} has fewer than {gpw:g} GPUs"
                    raise QuotaRefusal(
                        f"{QUOTA_MARK} a cluster with {gpw:g} GPU(s) per worker does not fit: "
                        f"{words}. Try again later, or ask {quota.who}")
        except QuotaRefusal as exc:
            raise PublicException(str(exc)) from None
        if hasattr(config, "idle_timeout"):
            config.idle_timeout = quota.idle_for(config.idle_timeout)
        return {**options, GROUPS_KEY: sorted(user.groups)}, config

    async def forward_message_to_scheduler(self, cluster: Any, msg: dict[str, Any]) -> None:
        if msg.get("op") == "adapt":
            self._explicit.pop(cluster.name, None)
        if msg.get("op") == "scale" and isinstance(msg.get("count"), int):
            try:
                async with self._lock:  # reserved now; heartbeats confirm it
                    granted, admitted = await self._ask(cluster, msg["count"], "scale")
                    self._explicit[cluster.name] = msg["count"]
            except QuotaRefusal as exc:
                raise PublicException(str(exc)) from None
            await self._forward_admitted(admitted, skip=cluster.name)
            if granted is None:
                return  # queued: the scheduler is told when the request is admitted
        await super().forward_message_to_scheduler(cluster, msg)  # type: ignore[misc]

    async def on_cluster_heartbeat(self, cluster_name: str, msg: dict[str, Any]) -> None:
        count = msg.get("count")
        if isinstance(count, int):
            cluster = await super().get_cluster(cluster_name)  # type: ignore[misc]
            if cluster is not None and cluster.status <= gw_models.ClusterStatus.RUNNING:
                async with self._lock:
                    granted, admitted = await self._ask(cluster, count, "adaptive")
                await self._forward_admitted(admitted)
                if granted is not None and granted != count:
                    msg = {**msg, "count": granted}
        await super().on_cluster_heartbeat(cluster_name, msg)  # type: ignore[misc]

    async def stop_cluster(self, cluster_name: str, failed: bool = False) -> None:
        async with self._lock:
            if self._withdraw(cluster_name) is not None:
                self.log.info("jupyter-elastic: cluster %s left the queue (stopped)",
                              cluster_name)
            freed = self._granted.get(cluster_name, 0)
            self._forget(cluster_name)
        await super().stop_cluster(cluster_name, failed=failed)  # type: ignore[misc]
        if freed:
            async with self._lock:
                admitted = await self._admit()
            await self._forward_admitted(admitted)

    # ------------------------------------------------------------------ the lease
    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.elastic_quota.lease_check_period)
            try:
                await self._check_leases()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("jupyter-elastic: lease check failed: %r", exc)

    async def _check_leases(self) -> None:
        clusters = await super().list_clusters()  # type: ignore[misc]
        active = {c.name for c in clusters}
        async with self._lock:  # clusters that ended on their own (idle, failed) free room
            for name in {*self._granted, *self._meta, *self._explicit} - active:
                self._forget(name)
            for ticket in [t for t in self.elastic_queue.order() if t.cluster not in active]:
                self._withdraw(ticket.cluster)
            admitted = await self._admit()
        await self._forward_admitted(admitted)
        seen: dict[str, float] = self.__dict__["_elastic_seen"]
        for name in [n for n in seen if n not in active]:
            del seen[name]
        ttl = self.elastic_quota.lease_ttl
        if ttl <= 0:
            return
        running = [c for c in clusters if c.status == gw_models.ClusterStatus.RUNNING]
        counts = await asyncio.gather(*(self._clients(c) for c in running))
        metrics: dict[str, bytes] = self.__dict__.get("_elastic_metrics", {})
        now = self.elastic_clock()
        for cluster, clients in zip(running, counts, strict=True):
            if clients is None:
                continue
            # workers granted and none up yet: nobody could connect to use them, the lease
            # counts from when the first one is there (a GPU node may take minutes to come)
            starting = (self._granted.get(cluster.name, 0) > 0
                        and _workers(metrics.get(cluster.name)) == 0)
            if clients > 0 or starting or cluster.name not in seen:
                seen[cluster.name] = now
            elif now - seen[cluster.name] > ttl:
                self.log.warning("jupyter-elastic: lease lapsed: stopping cluster %s of %s, "
                                 "no Dask client for %gs", cluster.name, cluster.username, ttl)
                del seen[cluster.name]
                await self.stop_cluster(cluster.name)

    async def _clients(self, cluster: Any) -> int | None:
        """Dask clients connected to a cluster's scheduler (None: cannot tell)."""
        address = cluster.dashboard_address
        if not address:
            return None
        session: aiohttp.ClientSession = self.__dict__["_elastic_session"]
        try:
            async with session.get(address.rstrip("/") + "/metrics",
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                body = await resp.content.read(MAX_METRICS_BYTES)
            self.__dict__.setdefault("_elastic_metrics", {})[cluster.name] = body  # usage
            match = _CLIENTS_RE.search(body)
            if match is None:
                raise ValueError("no dask_scheduler_clients metric (is prometheus_client "
                                 "installed in the scheduler's image?)")
            return int(float(match.group(1)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.warning("jupyter-elastic: cannot count the clients of cluster %s (%s); "
                             "its lease is not checked", cluster.name, exc)
            return None

    # ------------------------------------------------------------------ the quota route
    async def quota_report(self, user: Any) -> dict[str, Any]:
        quota = self.elastic_quota
        limits = quota.limits_for(user.groups)
        held = await self._holdings(user.name)
        queue = self.elastic_queue
        usage = await self._usage()
        pools = quota.pools_for(user.groups)
        return {
            "user": user.name, "groups": sorted(user.groups), "limits": limits.to_json(),
            "holding": {"gpus": sum(h.gpus for h in held),
                        "workers": sum(h.workers for h in held)},
            "clusters": [h.to_json() for h in held],
            "idle_timeout": quota.idle_timeout, "max_idle_timeout": quota.max_idle_timeout,
            "lease_ttl": quota.lease_ttl, "contact": quota.who,
            "when_full": quota.when_full, "queue": queue.report(queue.of_user(user.name)),
            "queue_length": len(queue),
            "pools": [{"name": _pool_name(scope), "gpus": cap,
                       "holding": usage.pools.get(scope, 0.0)} for scope, cap in pools.items()],
        }

    async def _quota_route(self, request: web.Request) -> web.Response:
        return web.json_response(await self.quota_report(request["user"]))


def quota_backend(base: type[Backend] | str) -> type[Backend]:
    """``base`` (a Backend class or its import path) with the quota rules around it."""
    cls = import_item(base) if isinstance(base, str) else base
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"quota_backend needs a dask_gateway_server Backend class, got "
                          f"{quote(base)}")
    return type(f"Quota{cls.__name__}", (UsageBackendMixin, QuotaBackendMixin, cls),
                {"__module__": __name__})


__all__ = ["ElasticQuota", "Held", "Limits", "QuotaBackendMixin", "QuotaRefusal", "quota_backend"]


# ---------------------------------------------------------------------------- usage metering
# What the admin usage page (``jupyter-elastic-hub``, hub/service.py) shows comes from here:
# every lease pass adds, per user, the GPU-seconds their clusters held (workers granted x
# GPUs per worker) and the part of them held while the scheduler ran no task (idle).

_PROCESSING_RE = re.compile(
    rb'^dask_scheduler_tasks\{[^}\n]*state="processing"[^}\n]*\}\s+([0-9.eE+-]+)\s*$', re.M)
#: Users whose usage is kept (the rest of a day's users are dropped, oldest first).
MAX_METERED_USERS = 100_000


class ElasticUsage(LoggingConfigurable):
    """Prices and access for the usage report; ``c.ElasticUsage.*`` in dask_gateway_config.py."""

    gpu_hour_price = Float(2.5, min=0, max=1e6, config=True,
                           help="Price of one GPU-hour on the usage page")
    currency = Unicode("USD", config=True, help="Currency the prices are in")
    api_token = Unicode(config=True,
                        help="Token the jupyter-elastic-hub service presents to read every "
                             "user's usage (default $JUPYTER_ELASTIC_USAGE_TOKEN); hub admins "
                             "(JupyterHub auth) may read it with their own token")

    @default("api_token")
    def _api_token_default(self) -> str:
        return os.environ.get("JUPYTER_ELASTIC_USAGE_TOKEN", "")


@dataclass
class UserUsage:
    """One user's metered GPU-seconds (UTC day and month) and what they last held."""

    groups: tuple[str, ...] = ()
    day: str = ""
    month: str = ""
    gpu_seconds_day: float = 0.0
    gpu_seconds_month: float = 0.0
    idle_gpu_seconds_day: float = 0.0
    idle_gpu_seconds_month: float = 0.0

    def add(self, now: float, gpu_seconds: float, idle_gpu_seconds: float) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if day != self.day:
            self.day, self.gpu_seconds_day, self.idle_gpu_seconds_day = day, 0.0, 0.0
        if day[:7] != self.month:
            self.month, self.gpu_seconds_month, self.idle_gpu_seconds_month = day[:7], 0.0, 0.0
        self.gpu_seconds_day += gpu_seconds
        self.gpu_seconds_month += gpu_seconds
        self.idle_gpu_seconds_day += idle_gpu_seconds
        self.idle_gpu_seconds_month += idle_gpu_seconds


class UsageBackendMixin:
    """GPU-seconds per user, metered on every lease pass, and the admin usage route."""

    log: Any
    elastic_quota: ElasticQuota
    _granted: dict[str, int]

    @property
    def elastic_usage(self) -> ElasticUsage:
        usage = self.__dict__.get("_elastic_usage_conf")
        if usage is None:
            usage = ElasticUsage(parent=self, log=self.log)
            self.__dict__["_elastic_usage_conf"] = usage
        return usage

    @property
    def _metered(self) -> dict[str, UserUsage]:
        return self.__dict__.setdefault("_elastic_usage", {})

    async def setup(self, app: web.Application) -> None:
        from ..protocol import USAGE_ROUTE

        self.elastic_usage  # noqa: B018 - a bad setting stops the gateway at start
        app.router.add_get(USAGE_ROUTE, self._usage_route)
        await super().setup(app)  # type: ignore[misc]

    async def _check_leases(self) -> None:
        await super()._check_leases()  # type: ignore[misc]
        await self._meter()

    async def _meter(self) -> None:
        """Add the GPU-seconds since the last pass to each user holding GPUs."""
        now = time.time()
        last = self.__dict__.get("_elastic_metered_at")
        self.__dict__["_elastic_metered_at"] = now
        metrics: dict[str, bytes] = self.__dict__.get("_elastic_metrics", {})
        clusters = await super().list_clusters()  # type: ignore[misc]
        for name in [n for n in metrics if n not in {c.name for c in clusters}]:
            del metrics[name]
        if last is None:
            return
        elapsed = min(max(0.0, now - last), 10 * self.elastic_quota.lease_check_period + 60)
        for cluster in clusters:
            gpus = self.elastic_quota.gpus_of(cluster.options) * self._granted.get(cluster.name, 0)
            record = self._metered.get(cluster.username)
            if record is None:
                if len(self._metered) >= MAX_METERED_USERS:
                    self._metered.pop(next(iter(self._metered)))
                record = self._metered[cluster.username] = UserUsage()
            record.groups = tuple((cluster.options or {}).get(GROUPS_KEY) or record.groups)
            idle = gpus if _processing(metrics.get(cluster.name)) == 0 else 0.0
            record.add(now, gpus * elapsed, idle * elapsed)

    def _queued(self, username: str) -> int:
        """Cells of this user waiting at the gateway (0 where no queue is loaded)."""
        queue = self.__dict__.get("_elastic_queue")
        length = getattr(queue, "length_for", None)
        return int(length(username)) if callable(length) else 0

    async def usage_report(self) -> dict[str, Any]:
        """Every metered or active user: held now, GPU-seconds and cost, headroom."""
        quota, conf = self.elastic_quota, self.elastic_usage
        clusters = await super().list_clusters()  # type: ignore[misc]
        held: dict[str, list[Held]] = {}
        groups: dict[str, tuple[str, ...]] = {}
        for cluster in clusters:
            held.setdefault(cluster.username, []).append(self._held(cluster))  # type: ignore[attr-defined]
            groups[cluster.username] = tuple((cluster.options or {}).get(GROUPS_KEY) or ())
        today = time.strftime("%Y-%m-%d", time.gmtime())
        users = []
        for name in sorted(set(held) | set(self._metered)):
            record = self._metered.get(name) or UserUsage()
            user_groups = groups.get(name) or record.groups
            limits = quota.limits_for(user_groups)
            gpus_now = sum(h.gpus for h in held.get(name, []))
            fresh_day = record.day == today
            fresh_month = record.month == today[:7]
            day = record.gpu_seconds_day if fresh_day else 0.0
            month = record.gpu_seconds_month if fresh_month else 0.0
            users.append({
                "user": name, "groups": sorted(user_groups), "gpus_now": gpus_now,
                "workers_now": sum(h.workers for h in held.get(name, [])),
                "clusters": len(held.get(name, [])),
                "gpu_seconds_today": day, "gpu_seconds_month": month,
                "cost_today": day / 3600.0 * conf.gpu_hour_price,
                "cost_month": month / 3600.0 * conf.gpu_hour_price,
                "idle_gpu_seconds_today": record.idle_gpu_seconds_day if fresh_day else 0.0,
                "idle_gpu_seconds_month": record.idle_gpu_seconds_month if fresh_month else 0.0,
                "queued": self._queued(name),
                "gpu_limit": limits.gpus, "limit_source": limits.source,
                "gpu_headroom": None if limits.gpus is None else max(0.0, limits.gpus - gpus_now),
            })
        return {"generated": time.time(), "day": today, "month": today[:7],
                "gpu_hour_price": conf.gpu_hour_price, "currency": conf.currency,
                "lease_check_period": quota.lease_check_period, "users": users}

    async def _usage_route(self, request: web.Request) -> web.Response:
        """Admins only: the service's token, or a hub admin through the authenticator."""
        import hmac

        header = request.headers.get("Authorization", "")[:4096]
        scheme, _, secret = header.partition(" ")
        expected = self.elastic_usage.api_token
        allowed = bool(expected) and scheme.lower() in ("token", "bearer") and \
            hmac.compare_digest(secret.strip().encode(), expected.encode())
        if not allowed:
            authenticator = request.app["authenticator"]
            try:
                user = await authenticator.authenticate(request)
            except web.HTTPException:
                raise
            if isinstance(user, tuple):
                user = user[0]
            if not getattr(user, "admin", False):
                return web.json_response(
                    {"message": "the usage report is for hub admins and the "
                                "jupyter-elastic-hub service only"}, status=403)
        return web.json_response(await self.usage_report())


def _workers(body: bytes | None) -> float | None:
    """Workers the scheduler knows, in any state, from its /metrics (None: unknown)."""
    if not body:
        return None
    counts = _WORKERS_RE.findall(body)
    return sum(float(c) for c in counts) if counts else None


def _processing(body: bytes | None) -> float | None:
    """Tasks the scheduler is running, from its /metrics (None: unknown)."""
    if not body:
        return None
    match = _PROCESSING_RE.search(body)
    return float(match.group(1)) if match else None


__all__ += ["ElasticUsage", "UsageBackendMixin", "UserUsage"]
