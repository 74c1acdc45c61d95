"""The wire format: what a cluster, a worker, a lease and a history row look like in JSON.

The REST API, ``%gpu status --json``, ``%gpu history --json`` and the sidebar all speak
these shapes (snake_case keys, seconds as floats, times as ISO-8601 UTC strings).
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

from .config import Settings
from .errors import ConfigError

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def utcnow_iso() -> str:
    """Now, as an ISO-8601 UTC string with seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_id(prefix: str = "") -> str:
    """A short random id (12 hex characters), optionally prefixed."""
    return prefix + uuid.uuid4().hex[:12]


def check_cluster_name(name: str) -> str:
    """Return ``name`` if it can name a cluster on every backend (a DNS-1123 label)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"cluster name {name!r} is not valid; use 1-40 lower-case letters, digits and '-', "
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
    idle_timeout: float = 90.0
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
            image=k8s.get("image"),
            namespace=k8s.get("namespace"),
            env=dict(k8s.get("env") or {}),
            labels=dict(k8s.get("labels") or {}),
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

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


@dataclass
class HistoryRow:
    """One ``%%gpu`` cell run, as ``%gpu history`` and ``GET /history`` report it."""

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
    gpu_seconds: float
    cpu_seconds: float
    cost: float
    status: str  # ok | error | cancelled | timeout
    error: str | None = None
    source: str = ""
    owner: str = ""
    cached_inputs: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> HistoryRow:
        """A row from JSON, every field checked: ConfigError naming the first bad one."""
        import math

        fields = cls.__dataclass_fields__
        missing = [k for k, f in fields.items()
                   if k not in row and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ConfigError(f"history row: missing field(s) {', '.join(missing)}")
        values = {k: v for k, v in row.items() if k in fields}
        for key in ("seconds", "compute_seconds", "gpus", "gpu_seconds", "cpu_seconds", "cost"):
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"history row: {key} must be a finite number >= 0, got {v!r}")
            values[key] = float(v)
        cell = values.get("cell")
        if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int)):
            raise ConfigError(f"history row: cell must be a whole number or null, got {cell!r}")
        for key in ("id", "started", "backend", "device", "status"):
            if not isinstance(values[key], str):
                raise ConfigError(f"history row: {key} must be a string, got {values[key]!r}")
        for key in ("cluster_id", "worker", "error"):
            if values.get(key) is not None and not isinstance(values[key], str):
                raise ConfigError(f"history row: {key} must be a string or null, got {values[key]!r}")
        cached = values.get("cached_inputs", [])
        if not isinstance(cached, list) or not all(isinstance(n, str) for n in cached):
            raise ConfigError(f"history row: cached_inputs must be a list of names, got {cached!r}")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("seconds", "compute_seconds", "gpu_seconds", "cpu_seconds", "cost"):
            data[key] = round(data[key], 6)
        return data
