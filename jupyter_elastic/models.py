"""The wire format: what a cluster, a worker, a lease and a history row look like in JSON.

The REST API, ``%gpu status --json``, ``%gpu history --json`` and the sidebar all speak
these shapes (snake_case keys, seconds as floats, times as ISO-8601 UTC strings). The JSON
is built here (``to_json``) and read back here (``from_json``, every field checked and
bounded); the control plane fills the values, the server and the kernels only pass them on.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import uuid
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

from .config import Settings, quote
from .errors import ConfigError
from .protocol import IN_PROCESS_ADDRESS

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def utcnow_iso() -> str:
    """Now, as an ISO-8601 UTC string with seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_id(prefix: str = "") -> str:
    """A short random id (12 hex characters), optionally prefixed."""
    return prefix + uuid.uuid4().hex[:12]



def client_credentials(security: Any) -> dict[str, Any]:
    """The lease's ``client`` field for a cluster secured by Dask's ``security``: what a
    client needs to reach it (PEM text), read back by :func:`client_security`."""
    tls = security.get_tls_config_for_role("client")  # the attributes are set dynamically
    return {"kind": "tls", "tls_ca": tls["ca_file"], "tls_cert": tls["cert"], "tls_key": tls["key"]}


def client_address(lease: dict[str, Any]) -> str:
    """The address a Dask client in *this* process uses for ``lease``'s scheduler: its
    in-process one (Dask's ``inproc://host/pid/n``) when that scheduler runs in this very
    process, its network address otherwise (another process, or a lease from elsewhere)."""
    address = (lease.get("client") or {}).get(IN_PROCESS_ADDRESS)
    if isinstance(address, str) and address.startswith("inproc://"):
        parts = address[len("inproc://"):].split("/")
        if len(parts) == 3 and parts[1] == str(os.getpid()):
            return address
    return str(lease["scheduler_address"])


def client_security(info: dict[str, Any]) -> Any:
    """The ``security=`` of a Dask client from a lease's ``client`` credentials.

    ``kind: gateway``: dask-gateway's TLS through its proxy (importing dask-gateway
    registers its ``gateway://`` comm); otherwise Dask's own TLS, with the cluster's CA.
    """
    if info.get("kind") == "gateway":
        from dask_gateway.client import GatewaySecurity

        return GatewaySecurity(tls_key=info["tls_key"], tls_cert=info["tls_cert"])
    from distributed.security import Security

    return Security(tls_ca_file=info["tls_ca"], tls_client_cert=info["tls_cert"],
                    tls_client_key=info["tls_key"], require_encryption=True)


def check_cluster_name(name: str) -> str:
    """Return ``name`` if it can name a cluster on every backend (a DNS-1123 label)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"cluster name {quote(name)} is not valid; use 1-40 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'feature-run')"
        )
    return name


@dataclass(frozen=True)
class ClusterSpec:
    """Everything a backend needs to start one cluster."""

    name: str
    backend: str = "local"
    owner: str = "user"
    session: str = ""
    gpus_per_worker: float = 1.0
    cpus_per_worker: int = 4
    memory_per_worker: int = 16 * 1024**3
    gpu_type: str | None = None
    min_workers: int = 0
    max_workers: int = 4
    idle_timeout: float = 60.0
    image: str | None = None
    namespace: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ClusterSpec:
        """A spec filled from :class:`Settings`, with per-call overrides."""
        k8s = settings.kubernetes
        values: dict[str, Any] = dict(
            name=overrides.pop("name", None) or new_id("elastic-"),
            backend=settings.backend,
            gpus_per_worker=max(settings.worker.gpus, 1.0) if settings.worker.gpus else 0.0,
            cpus_per_worker=settings.worker.cpus,
            memory_per_worker=settings.worker.memory,
            min_workers=settings.min_workers,
            max_workers=settings.max_workers,
            idle_timeout=settings.idle_timeout,
            image=k8s.image,
            namespace=k8s.namespace,
            env=dict(k8s.env),
            labels=dict(k8s.labels),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        check_cluster_name(values["name"])
        return cls(**values)


@dataclass
class WorkerDetail:
    """One live worker as the API reports it."""

    name: str
    gpus: float
    memory: int
    gpu_utilization: float | None = None
    gpu_memory: int | None = None
    address: str = ""
    status: str = "running"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Usage:
    """Metered totals for a cluster (or for a whole user)."""

    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    idle_seconds: float = 0.0
    busy_seconds: float = 0.0
    cost: float = 0.0

    def add(self, other: Usage) -> None:
        """Add ``other``'s totals to these."""
        for key in self.__dataclass_fields__:
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 9 if k == "cost" else 6) for k, v in asdict(self).items()}


@dataclass
class ClusterInfo:
    """One cluster as the REST API, ``%gpu status --json`` and the sidebar see it."""

    id: str
    name: str
    backend: str
    status: str  # starting | running | stopping | stopped | error
    phase: str
    phase_detail: str
    phase_seconds: float
    workers: int
    gpus: float
    has_gpu: bool
    idle_seconds: float
    idle_timeout: float
    shutdown_after: float
    running_cells: int
    cells: int
    adapt: dict[str, int] | None
    requested_workers: int | None
    dashboard_link: str | None
    scheduler_address: str | None
    owner: str
    created: str
    usage: Usage
    currency: str
    worker_details: list[WorkerDetail] | None = None

    def to_json(self) -> dict[str, Any]:
        data = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "worker_details"}
        data["gpus"] = int(self.gpus) if float(self.gpus).is_integer() else self.gpus
        data["phase_seconds"] = round(self.phase_seconds, 3)
        data["idle_seconds"] = round(self.idle_seconds, 3)
        data["usage"] = self.usage.to_json()
        if self.worker_details is not None:
            data["worker_details"] = [w.to_json() for w in self.worker_details]
        return data


@dataclass
class LeaseInfo:
    """A kernel's lease on a cluster: what the kernel needs to reach and keep it.

    ``client`` holds what a Dask client needs besides the address (TLS credentials), and
    ``lease_secret`` what heartbeat, release and cell reports on this lease must present:
    both are handed only to the kernel that acquired the lease, never put in a URL, a
    log line or a repr.
    """

    lease_id: str
    session: str
    cluster_id: str
    name: str
    backend: str
    scheduler_address: str | None
    dashboard_link: str | None
    has_gpu: bool
    gpus_per_worker: float
    cpus_per_worker: int
    idle_timeout: float
    lease_ttl: float
    client: dict[str, Any] | None = field(default=None, repr=False)
    #: Bytes of memory each worker holds (what ``--memory`` is checked against).
    memory_per_worker: int | None = None
    lease_secret: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


STATUSES = ("ok", "error", "cancelled", "timeout")
DEVICES = ("gpu", "cpu", "local")
#: Longest first line of a cell kept in a history row, and longest error text.
SOURCE_CHARS = 200
ERROR_CHARS = 1000
#: Largest number a history row may hold (seconds or money): totals cannot overflow.
MAX_NUMBER = 1e12
_TRUNCATED = " …[truncated]"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED


@dataclass
class HistoryRow:
    """One ``%%gpu`` cell run, as ``%gpu history`` and ``GET /history`` report it.

    Kernels report what happened (seconds, compute seconds, GPUs and CPU cores held,
    device); the control plane prices the row when it records it (``gpu_seconds``,
    ``cpu_seconds``, ``cost``), with the server's prices.
    """

    id: str
    cell: int | None
    started: str
    backend: str
    cluster_id: str | None
    worker: str | None
    device: str  # "gpu", "cpu" or "local"
    seconds: float
    compute_seconds: float
    gpus: float
    status: str  # ok | error | cancelled | timeout
    cpus: float = 0.0
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    cost: float = 0.0
    error: str | None = None
    source: str = ""
    owner: str = ""
    notebook: str | None = None
    cached_inputs: list[str] = field(default_factory=list)
    gpu_type: str | None = None  # the GPU type of the cluster the cell ran on (filled by the control plane)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> HistoryRow:
        """A row from JSON, every field typed and bounded: ConfigError naming the first bad one.

        Long ``source`` and ``error`` texts are cut with a marker rather than refused.
        """
        import math

        if not isinstance(row, dict):
            raise ConfigError(f"history row: must be a JSON object, got {quote(row)}")
        fields = cls.__dataclass_fields__
        missing = [k for k, f in fields.items()
                   if k not in row and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ConfigError(f"history row: missing field(s) {', '.join(missing)}")
        values = {k: v for k, v in row.items() if k in fields}
        for key in ("seconds", "compute_seconds", "gpus", "cpus", "gpu_seconds", "cpu_seconds", "cost"):
            if key not in values:
                continue
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (
                    isinstance(v, float) and not math.isfinite(v)):
                raise ConfigError(f"history row: {key} must be a finite number >= 0, got {quote(v)}")
            if v > MAX_NUMBER:  # before float(): a huge int would overflow it
                raise ConfigError(f"history row: {key} must be at most {MAX_NUMBER:g}, got {quote(v)}")
            values[key] = float(v)
        cell = values.get("cell")
        if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int)
                                 or not 0 <= cell < 2**31):
            raise ConfigError(f"history row: cell must be a whole number from 0 to 2**31 or null, "
                              f"got {quote(cell)}")
        for key, limit in (("id", 64), ("started", 40), ("backend", 32), ("device", 16),
                           ("status", 16)):
            if not isinstance(values[key], str) or len(values[key]) > limit:
                raise ConfigError(f"history row: {key} must be a string of at most {limit} "
                                  f"characters, got {quote(values[key])}")
        if values["status"] not in STATUSES:
            raise ConfigError(f"history row: status must be one of {', '.join(STATUSES)}, "
                              f"got {quote(values['status'])}")
        if values["device"] not in DEVICES:
            raise ConfigError(f"history row: device must be one of {', '.join(DEVICES)}, "
                              f"got {quote(values['device'])}")
        try:
            _dt.datetime.fromisoformat(values["started"])
        except ValueError:
            raise ConfigError(f"history row: started must be an ISO-8601 time, "
                              f"got {quote(values['started'])}") from None
        text_limits: tuple[tuple[str, int | None], ...] = (
            ("cluster_id", 64), ("worker", 256), ("error", None), ("notebook", 1024), ("gpu_type", 64))
        for key, cap in text_limits:
            v = values.get(key)
            if v is None:
                continue
            if not isinstance(v, str) or (cap is not None and len(v) > cap):
                raise ConfigError(f"history row: {key} must be a string or null, got {quote(v)}")
        for key in ("source", "owner"):
            if key in values and not isinstance(values[key], str):
                raise ConfigError(f"history row: {key} must be a string, got {quote(values[key])}")
        if values.get("error") is not None:
            values["error"] = _truncate(values["error"], ERROR_CHARS)
        if "source" in values:
            values["source"] = _truncate(values["source"], SOURCE_CHARS)
        if len(values.get("owner", "")) > 200:
            raise ConfigError("history row: owner must be at most 200 characters")
        cached = values.get("cached_inputs", [])
        if (not isinstance(cached, list) or len(cached) > 1000
                or not all(isinstance(n, str) and len(n) <= 256 for n in cached)):
            raise ConfigError(f"history row: cached_inputs must be a list of names, got {quote(cached)}")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("seconds", "compute_seconds", "gpu_seconds", "cpu_seconds", "cost"):
            data[key] = round(data[key], 9 if key == "cost" else 6)  # a CPU cell costs ~1e-7
        return data
