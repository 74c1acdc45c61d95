"""Typed access to the ``jupyter-elastic`` Dask-config namespace.

Every setting a user can change lives under ``jupyter-elastic`` in Dask's configuration
(``~/.config/dask/jupyter-elastic.yaml``, ``/etc/dask/``, or
``DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT=90s``). This module registers the defaults shipped in
``jupyter-elastic.yaml``, parses durations and sizes once, and turns every bad value into an
:class:`~jupyter_elastic.errors.ConfigError` that names the key, the value and the accepted form.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

import dask.config
import yaml

from .errors import ConfigError

NAMESPACE = "jupyter-elastic"
#: The most GPUs one worker (one machine) can have.
MAX_GPUS = 64
BACKENDS = ("local", "kubernetes", "gateway")

_defaults_path = os.path.join(os.path.dirname(__file__), "jupyter-elastic.yaml")
with open(_defaults_path) as _f:
    _defaults = yaml.safe_load(_f)
dask.config.update_defaults(_defaults)

_DURATION_UNITS = {
    "ms": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0,
}
_SIZE_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
    "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "ki": 1024, "kib": 1024, "mi": 1024**2,
    "mib": 1024**2, "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4,
}


def parse_duration(value: Any, *, what: str = "duration") -> float:
    """Return seconds for ``value`` given as a number of seconds or a string like ``"90s"``.

    Examples
    --------
    >>> parse_duration("2m")
    120.0
    >>> parse_duration(1.5)
    1.5
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a duration such as 90s, 2m or 1h, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ConfigError(f"{what} must be a duration such as 90s, 2m or 1h; that number is far too large") from None
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _DURATION_UNITS and unit != "":
            raise ConfigError(
                f"{what} must be a duration such as 90s, 2m or 1h, got {value!r}"
            )
        seconds = float(m.group(1)) * (_DURATION_UNITS[unit] if unit else 1.0)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{what} must be a non-negative duration such as 90s, got {value!r}")
    return seconds


def parse_size(value: Any, *, what: str = "size") -> int:
    """Return bytes for ``value`` given as a number or a string like ``"16GiB"``.

    Examples
    --------
    >>> parse_size("2GiB")
    2147483648
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a size such as 16GiB or 512MB, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            size = float(value)
        except OverflowError:
            raise ConfigError(f"{what} must be a size such as 16GiB; that number is far too large") from None
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise ConfigError(f"{what} must be a size such as 16GiB or 512MB, got {value!r}")
        size = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if not math.isfinite(size) or size <= 0:
        raise ConfigError(f"{what} must be a positive size such as 16GiB, got {value!r}")
    return int(size)


def parse_gpus(value: Any, *, what: str = "--gpus") -> float:
    """Return a GPU request: a whole number of GPUs, or a fraction in (0, 1) to share one."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number of GPUs (1, 2, ...) or a fraction of one (0.5), got {value!r}")
    try:
        gpus = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"{what} must be a number of GPUs (1, 2, ...) or a fraction of one (0.5), got {value!r}"
        ) from None
    if not math.isfinite(gpus) or gpus < 0:
        raise ConfigError(f"{what} must be 0 or more (0.5 shares one GPU), got {value!r}")
    if gpus > MAX_GPUS:
        raise ConfigError(f"{what} asks for {value!r} GPUs; one worker has at most {MAX_GPUS}")
    if gpus > 1 and not gpus.is_integer():
        raise ConfigError(
            f"{what} above 1 must be a whole number of GPUs, got {value!r}; use 2, not 1.5"
        )
    return gpus


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return number


def _float(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{what} must be a non-negative number, got {value!r}")
    return number


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker offers: GPUs, CPU cores and memory."""

    gpus: float = 1.0
    cpus: int = 4
    memory: int = 16 * 1024**3


@dataclass(frozen=True)
class Pricing:
    """Prices used to turn GPU- and CPU-seconds into money."""

    gpu_hour: float = 2.50
    cpu_hour: float = 0.05
    currency: str = "USD"

    def cost(self, gpu_seconds: float, cpu_seconds: float) -> float:
        """Money for ``gpu_seconds`` of GPU time and ``cpu_seconds`` of CPU-core time."""
        return gpu_seconds / 3600.0 * self.gpu_hour + cpu_seconds / 3600.0 * self.cpu_hour


@dataclass(frozen=True)
class Settings:
    """The ``jupyter-elastic`` configuration, parsed and checked."""

    backend: str = "local"
    idle_timeout: float = 90.0
    shutdown_after: float = 1200.0
    lease_ttl: float = 120.0
    min_workers: int = 0
    max_workers: int = 4
    interrupt_grace: float = 2.0
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    pricing: Pricing = field(default_factory=Pricing)
    kubernetes: dict[str, Any] = field(default_factory=dict)
    gateway: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a copy with some fields replaced (already-parsed values)."""
        return replace(self, **changes)


def check_backend(value: Any) -> str:
    """Return ``value`` if it names a backend, else raise a ConfigError listing the choices."""
    if value not in BACKENDS:
        raise ConfigError(f"unknown backend {value!r}; choose one of: {', '.join(BACKENDS)}")
    return str(value)


def _dashed(value: Any) -> Any:
    """Keys with ``-`` throughout: environment variables arrive as ``idle_timeout``."""
    if isinstance(value, dict):
        return {str(k).replace("_", "-"): _dashed(v) for k, v in value.items()}
    return value


def load_settings(raw: dict[str, Any] | None = None) -> Settings:
    """Parse the ``jupyter-elastic`` namespace (or ``raw``) into :class:`Settings`."""
    cfg = _dashed(dask.config.get(NAMESPACE) if raw is None else raw)
    key = NAMESPACE + "."
    worker = cfg.get("worker") or {}
    pricing = cfg.get("pricing") or {}
    settings = Settings(
        backend=check_backend(cfg.get("backend", "local")),
        idle_timeout=parse_duration(cfg.get("idle-timeout", "90s"), what=key + "idle-timeout"),
        shutdown_after=parse_duration(cfg.get("shutdown-after", "20m"), what=key + "shutdown-after"),
        lease_ttl=parse_duration(cfg.get("lease-ttl", "2m"), what=key + "lease-ttl"),
        min_workers=_int(cfg.get("min-workers", 0), key + "min-workers"),
        max_workers=_int(cfg.get("max-workers", 4), key + "max-workers", minimum=1),
        interrupt_grace=parse_duration(
            cfg.get("interrupt-grace", "2s"), what=key + "interrupt-grace"
        ),
        worker=WorkerSettings(
            gpus=parse_gpus(worker.get("gpus", 1), what=key + "worker.gpus"),
            cpus=_int(worker.get("cpus", 4), key + "worker.cpus", minimum=1),
            memory=parse_size(worker.get("memory", "16GiB"), what=key + "worker.memory"),
        ),
        pricing=Pricing(
            gpu_hour=_float(pricing.get("gpu-hour", 2.5), key + "pricing.gpu-hour"),
            cpu_hour=_float(pricing.get("cpu-hour", 0.05), key + "pricing.cpu-hour"),
            currency=str(pricing.get("currency", "USD")),
        ),
        kubernetes=dict(cfg.get("kubernetes") or {}),
        gateway=dict(cfg.get("gateway") or {}),
    )
    if settings.min_workers > settings.max_workers:
        raise ConfigError(
            f"{key}min-workers ({settings.min_workers}) is above {key}max-workers "
            f"({settings.max_workers}); lower min-workers or raise max-workers"
        )
    return settings


# Keys a user may set with ``%gpu config KEY=VALUE``, each with the parser that checks it.
SETTABLE_KEYS: dict[str, Any] = {
    "backend": check_backend,
    "idle-timeout": lambda v: parse_duration(v, what="idle-timeout"),
    "shutdown-after": lambda v: parse_duration(v, what="shutdown-after"),
    "lease-ttl": lambda v: parse_duration(v, what="lease-ttl"),
    "min-workers": lambda v: _int(v, "min-workers"),
    "max-workers": lambda v: _int(v, "max-workers", minimum=1),
    "interrupt-grace": lambda v: parse_duration(v, what="interrupt-grace"),
    "worker.gpus": lambda v: parse_gpus(v, what="worker.gpus"),
    "worker.cpus": lambda v: _int(v, "worker.cpus", minimum=1),
    "worker.memory": lambda v: parse_size(v, what="worker.memory"),
    "pricing.gpu-hour": lambda v: _float(v, "pricing.gpu-hour"),
    "pricing.cpu-hour": lambda v: _float(v, "pricing.cpu-hour"),
    "pricing.currency": str,
    "kubernetes.namespace": str,
    "kubernetes.image": str,
    "gateway.address": str,
}


def set_option(key: str, value: str) -> None:
    """Check ``value`` for ``key`` and set it in Dask config for this process.

    Raises ConfigError naming the key and the accepted keys or form when either is wrong.
    """
    if key not in SETTABLE_KEYS:
        raise ConfigError(
            f"unknown setting {key!r}; settable keys are: {', '.join(sorted(SETTABLE_KEYS))}"
        )
    SETTABLE_KEYS[key](value)  # raises ConfigError with the accepted form
    dask.config.set({f"{NAMESPACE}.{key}": value})
    load_settings()  # cross-field checks (min-workers <= max-workers)
