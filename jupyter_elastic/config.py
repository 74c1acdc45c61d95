"""Typed access to the ``jupyter-elastic`` Dask-config namespace.

Every setting a user can change lives under ``jupyter-elastic`` in Dask's configuration
(``~/.config/dask/jupyter-elastic.yaml``, ``/etc/dask/``, or
``DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT=90s``). This module registers the defaults shipped in
``jupyter-elastic.yaml`` and parses every key once, into frozen dataclasses: the top level,
``worker``, ``pricing``, ``kubernetes`` and ``gateway``. Every bad value is a
:class:`~jupyter_elastic.errors.ConfigError` that names the key, quotes a short prefix of the
value and gives the accepted form. The value parsers here (durations, sizes, GPU counts,
whole numbers) are the only ones in the package: the magics, the REST handlers, the control
plane and the CLI call them. Each bounds its input's length before it parses, and parses in
linear time.

Why one module this long: every key and every parser of the namespace in one place is
what makes "one validator table" true; it holds no logic besides parsing.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import dask.config
import yaml

from .errors import ConfigError

NAMESPACE = "jupyter-elastic"
#: The most GPUs one worker (one machine) can have.
MAX_GPUS = 64
BACKENDS = ("local", "kubernetes", "gateway")
#: Longest text a number, duration or size may be (longer input is refused unparsed).
MAX_VALUE_CHARS = 64
#: Longest prefix of a bad value quoted back in an error message.
QUOTE_CHARS = 40
#: Highest price per GPU- or CPU-hour: with bounded seconds, every total stays finite.
MAX_PRICE = 1e6

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
# One unambiguous way to match each number: no two quantifiers compete for the same digits,
# so a failed match is linear in the input (which is bounded anyway).
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_QUANTITY_RE = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]*)\s*")


class _ShortRepr(reprlib.Repr):
    """``reprlib`` with a depth limit and no conversion of huge integers to text."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, limit, limit
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 4

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a 5000-digit int is an error, and slow before that
            return f"{'-' if x < 0 else ''}<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return repr(x)


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with a marker: safe to echo back.

    Never raises, whatever ``value`` is (nested 100000 deep, a 5000-digit int, an object
    whose ``repr`` fails), and takes time bounded by ``limit``, not by ``value``'s size.

    Examples
    --------
    >>> quote("9" * 100, 10)
    "'999999999…' (100 characters)"
    """
    if isinstance(value, str) and len(value) > limit:
        # cut the repr, not the text: escapes (\x00) make a repr up to 4 times longer
        return repr(value[:limit])[:limit] + "…' " + f"({len(value)} characters)"
    try:
        text = _ShortRepr(limit).repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded_text(value: Any, what: str, form: str) -> str:
    if not isinstance(value, str):  # str() of junk can be huge, slow or recursive
        raise ConfigError(f"{what} must be {form}, got {quote(value)}")
    if len(value) > MAX_VALUE_CHARS:
        raise ConfigError(f"{what} must be {form}; got {len(value)} characters, which is far too long")
    return value


def _quantity(value: Any, what: str, form: str, units: dict[str, Any]) -> float:
    """A number with an optional unit from ``units``; ConfigError naming ``form`` otherwise."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be {form}, got {quote(value)}")
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{what} must be {form}; that number is far too large") from None
    text = _bounded_text(value, what, form)
    m = _QUANTITY_RE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in units:
        raise ConfigError(f"{what} must be {form}, got {quote(value)}")
    return float(m.group(1)) * float(units[unit])


def parse_duration(value: Any, *, what: str = "duration") -> float:
    """Return seconds for ``value`` given as a number of seconds or a string like ``"90s"``.

    Examples
    --------
    >>> parse_duration("2m")
    120.0
    >>> parse_duration(1.5)
    1.5
    """
    form = "a duration such as 90s, 2m or 1h"
    seconds = _quantity(value, what, form, {"": 1.0, **_DURATION_UNITS})
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{what} must be a non-negative duration such as 90s, got {quote(value)}")
    return seconds


def parse_size(value: Any, *, what: str = "size") -> int:
    """Return bytes for ``value`` given as a number or a string like ``"16GiB"``.

    Examples
    --------
    >>> parse_size("2GiB")
    2147483648
    """
    size = _quantity(value, what, "a size such as 16GiB or 512MB", _SIZE_UNITS)
    if not math.isfinite(size) or size <= 0:
        raise ConfigError(f"{what} must be a positive size such as 16GiB, got {quote(value)}")
    return int(size)


def parse_gpus(value: Any, *, what: str = "--gpus") -> float:
    """Return a GPU request: a whole number of GPUs, or a fraction in (0, 1) to share one."""
    form = "a number of GPUs (1, 2, ...) or a fraction of one (0.5)"
    gpus = _quantity(value, what, form, {"": 1.0})
    if not math.isfinite(gpus) or gpus < 0:
        raise ConfigError(f"{what} must be 0 or more (0.5 shares one GPU), got {quote(value)}")
    if gpus > MAX_GPUS:
        raise ConfigError(f"{what} asks for {quote(value)} GPUs; one worker has at most {MAX_GPUS}")
    if gpus > 1 and not gpus.is_integer():
        raise ConfigError(
            f"{what} above 1 must be a whole number of GPUs, got {quote(value)}; use 2, not 1.5"
        )
    return gpus


def whole(
    value: Any,
    what: str,
    *,
    minimum: int = 0,
    maximum: int | None = None,
    unit: str = "",
    text: bool = True,
) -> int:
    """``value`` as a whole number in [minimum, maximum]; the one such check in the package.

    ``text=False`` refuses strings (JSON fields must be numbers); ``unit`` names what is
    counted in the message ("workers").

    Examples
    --------
    >>> whole("3", "--retries")
    3
    >>> whole(2, "n", unit="workers", text=False)
    2
    """
    counted = f" of {unit}" if unit else ""
    problem = f"{what} must be a whole number{counted} >= {minimum}, got {quote(value)}"
    if isinstance(value, bool):
        raise ConfigError(problem)
    if isinstance(value, int):
        number = value
    elif text and isinstance(value, str):
        stripped = _bounded_text(value, what, f"a whole number >= {minimum}").strip()
        if not re.fullmatch(r"[-+]?[0-9]+", stripped):
            raise ConfigError(problem)
        number = int(stripped)
    else:
        raise ConfigError(problem)
    if number < minimum:
        raise ConfigError(problem)
    if maximum is not None and number > maximum:
        raise ConfigError(f"{what} must be at most {maximum}, got {quote(number)}")
    return number


def non_negative(value: Any, what: str, *, maximum: float | None = None) -> float:
    """``value`` as a finite number >= 0 (prices, costs), at most ``maximum`` when given."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number, got {quote(value)}")
    if isinstance(value, str):
        value = _bounded_text(value, what, "a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{what} must be a number, got {quote(value)}") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{what} must be a non-negative number, got {quote(value)}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{what} must be at most {maximum:g}, got {number:g}")
    return number


def short_text(value: Any, what: str, *, limit: int = 200, allow_empty: bool = False) -> str:
    """``value`` as a string of at most ``limit`` characters."""
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ConfigError(f"{what} must be a non-empty string, got {quote(value)}")
    if len(value) > limit:
        raise ConfigError(f"{what} must be at most {limit} characters, got {len(value)}")
    return value


#: Most GPU types one ``--gpu-type A,B,...`` list may name, and the longest name (a
#: Kubernetes label value).
MAX_GPU_TYPES = 8
GPU_TYPE_CHARS = 63
_GPU_TYPE_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


def parse_gpu_types(value: Any, *, what: str = "--gpu-type") -> tuple[str, ...]:
    """GPU types to try in order: ``"A,B"`` (or a YAML list), each a label value.

    Examples
    --------
    >>> parse_gpu_types("NVIDIA-H100-80GB-HBM3, NVIDIA-A100-SXM4-80GB")
    ('NVIDIA-H100-80GB-HBM3', 'NVIDIA-A100-SXM4-80GB')
    """
    form = (f"a GPU type such as NVIDIA-A100-SXM4-80GB, or up to {MAX_GPU_TYPES} of them "
            "separated by commas, tried in order")
    if value is None or value == "" or value == []:
        return ()
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_GPU_TYPES:
            raise ConfigError(f"{what} names {len(value)} GPU types; at most {MAX_GPU_TYPES}")
        items = [_scalar_text(v, what, GPU_TYPE_CHARS + 1) for v in value]
    elif isinstance(value, str):
        if len(value) > MAX_GPU_TYPES * (GPU_TYPE_CHARS + 2):
            raise ConfigError(f"{what} must be {form}; got {len(value)} characters, which is far too long")
        items = value.split(",")
    else:
        raise ConfigError(f"{what} must be {form}, got {quote(value)}")
    types = tuple(t.strip() for t in items)
    if len(types) > MAX_GPU_TYPES:
        raise ConfigError(f"{what} names {len(types)} GPU types; at most {MAX_GPU_TYPES}")
    for t in types:
        if len(t) > GPU_TYPE_CHARS or not _GPU_TYPE_RE.fullmatch(t):
            raise ConfigError(f"{what} must be {form}, got {quote(t)} in {quote(value)}")
    if len(set(types)) != len(types):
        raise ConfigError(f"{what} names a GPU type twice: {quote(value)}")
    return types


def check_backend(value: Any) -> str:
    """Return ``value`` if it names a backend, else raise a ConfigError listing the choices."""
    if value not in BACKENDS:
        raise ConfigError(f"unknown backend {quote(value)}; choose one of: {', '.join(BACKENDS)}")
    return str(value)


# --------------------------------------------------------------------------- sections
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
    #: ``(gpu type, price per GPU-hour)`` pairs: ``pricing.gpu-hour`` given as a table keyed
    #: by type (its ``default`` key, or 2.50, is ``gpu_hour``: the price of any other type).
    gpu_hour_types: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        # Prices also come from traitlets (c.ElasticExtension.gpu_hour_price), not only
        # from load_settings: an infinite or huge price would make every total Infinity.
        for name in ("gpu_hour", "cpu_hour"):
            non_negative(getattr(self, name), f"{NAMESPACE}.pricing.{name.replace('_', '-')}",
                         maximum=MAX_PRICE)
        for gpu_type, price in self.gpu_hour_types:
            non_negative(price, f"{NAMESPACE}.pricing.gpu-hour[{quote(gpu_type)}]", maximum=MAX_PRICE)

    def gpu_price(self, gpu_type: str | None = None) -> float:
        """The price of one GPU-hour of ``gpu_type`` (the default price for any other)."""
        if gpu_type is not None:
            for known, price in self.gpu_hour_types:
                if known == gpu_type:
                    return price
        return self.gpu_hour

    def cost(self, gpu_seconds: float, cpu_seconds: float, gpu_type: str | None = None) -> float:
        """Money for ``gpu_seconds`` of GPU time (of ``gpu_type``) and ``cpu_seconds`` of
        CPU-core time."""
        return gpu_seconds / 3600.0 * self.gpu_price(gpu_type) + cpu_seconds / 3600.0 * self.cpu_hour


SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


@dataclass(frozen=True)
class KubernetesSettings:
    """``jupyter-elastic.kubernetes``: where and how clusters run on Kubernetes."""

    namespace: str | None = None
    image: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    gpu_type_label: str = "nvidia.com/gpu.product"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    service_account: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    scheduler_service_type: str = "ClusterIP"
    pending_timeout: float = 300.0
    start_timeout: float = 900.0
    connect_timeout: float = 30.0
    #: Kueue LocalQueue that worker pods join (label ``kueue.x-k8s.io/queue-name``).
    queue_name: str | None = None
    #: ``kubernetes.scheduler.node-selector`` / ``.tolerations``: the scheduler pod's own
    #: placement (the worker ones above do not apply to it).
    scheduler_node_selector: dict[str, str] = field(default_factory=dict)
    scheduler_tolerations: list[dict[str, Any]] = field(default_factory=list)
    #: ``kubernetes.spot``: worker pods go to spot/preemptible nodes (GKE, EKS, AKS labels).
    spot: bool = False
    #: GPU types to try in order when a cell gives no --gpu-type (``kubernetes.gpu-type``)
    gpu_types: tuple[str, ...] = ()


GATEWAY_AUTH_TYPES = ("jupyterhub", "simple", "basic", "kerberos")


@dataclass(frozen=True)
class GatewaySettings:
    """``jupyter-elastic.gateway``: where the Dask Gateway is and how to log in.

    Text values may hold dask-gateway templates (``{JUPYTERHUB_USER}``): the gateway
    backend expands them where it uses them.
    """

    address: str | None = None
    auth: str | None = None
    proxy_address: str | None = None
    public_address: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    cluster_options: dict[str, Any] = field(default_factory=dict)
    connect_timeout: float = 10.0
    start_timeout: float = 300.0


@dataclass(frozen=True)
class JobsSettings:
    """``jupyter-elastic.jobs``: where detached cells (``%%gpu --detach``) keep their results.

    ``store`` is a directory or an fsspec URL (``s3://bucket/jobs``); ``None`` means
    ``{jupyter_data_dir}/jupyter-elastic/jobs``. ``ttl`` is how long results are kept.
    """

    store: str | None = None
    ttl: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Settings:
    """The ``jupyter-elastic`` configuration, parsed and checked."""

    backend: str = "local"
    idle_timeout: float = 60.0
    shutdown_after: float = 1200.0
    lease_ttl: float = 120.0
    min_workers: int = 0
    max_workers: int = 4
    interrupt_grace: float = 2.0
    #: local backend: serve the Dask dashboard on 127.0.0.1 (no authentication: every
    #: user of this machine can read it; docs/security.md). Off by default.
    dashboard: bool = False
    #: server extension: start a notebook's scheduler (never a worker, unless min-workers)
    #: when it opens with ``%%gpu`` cells or its first ``%%gpu`` cell is typed.
    prewarm: bool = True
    #: ``%%gpu --sync`` for every cell: install what a cell imports that the workers lack
    #: (the notebook's pip packages, its folder's local modules) with Dask worker plugins.
    sync_packages: bool = False
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    pricing: Pricing = field(default_factory=Pricing)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a copy with some fields replaced (already-parsed values)."""
        return replace(self, **changes)


# --------------------------------------------------------------------------- parsing
#: Mappings whose keys are the user's own (environment variables, labels): kept as written.
_USER_MAPPINGS = ("env", "labels", "node-selector", "cluster-options", "tolerations", "gpu-hour")


def _dashed(value: Any) -> Any:
    """Keys with ``-`` throughout: environment variables arrive as ``idle_timeout``.

    The keys inside ``env``, ``labels`` and the like are not settings: ``CUDA_VISIBLE_DEVICES``
    stays as it is.
    """
    if isinstance(value, dict):
        dashed = {}
        for k, v in value.items():
            key = k.replace("_", "-") if isinstance(k, str) else k
            dashed[key] = v if key in _USER_MAPPINGS else _dashed(v)
        return dashed
    return value


#: Longest text setting (an image, an address, a label value).
MAX_SETTING_CHARS = 4096


def _scalar_text(value: Any, what: str, limit: int = MAX_SETTING_CHARS) -> str:
    """A text setting: a string (or a number, as YAML reads ``1``), bounded in length."""
    if isinstance(value, numbers.Real) and not (isinstance(value, int) and value.bit_length() > 128):
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {quote(value)}")
    if len(value) > limit:
        raise ConfigError(f"{what} must be at most {limit} characters, got {len(value)}")
    return value


def _section(cfg: dict[str, Any], name: str, what: str) -> dict[str, Any]:
    """A sub-mapping of the configuration (``worker``, ``pricing``, ...); ``{}`` when unset."""
    value = cfg.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping of keys to values, got {quote(value)}")
    return value


def _mapping(value: Any, what: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping of strings, got {quote(value)}")
    return {_scalar_text(k, f"a key of {what}", 317): _scalar_text(v, f"{what}[{quote(k)}]")
            for k, v in value.items()}


def _optional_text(value: Any, what: str) -> str | None:
    if value is None or (isinstance(value, str) and value in ("", "null")):
        return None
    return _scalar_text(value, what)


def _tolerations(value: Any, what: str) -> list[dict[str, Any]]:
    tolerations = value or []
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        raise ConfigError(
            f"{what} must be a list of tolerations such as "
            f"[{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}], got {quote(tolerations)}"
        )
    return [dict(t) for t in tolerations]


def _kubernetes(raw: dict[str, Any]) -> KubernetesSettings:
    key = f"{NAMESPACE}.kubernetes."
    tolerations = _tolerations(raw.get("tolerations"), key + "tolerations")
    scheduler = _section(raw, "scheduler", key + "scheduler")
    unknown = sorted(set(scheduler) - {"node-selector", "tolerations"})
    if unknown:
        raise ConfigError(
            f"{key}scheduler has no setting {quote(unknown[0])}; its settings are node-selector "
            "and tolerations"
        )
    service_type = _scalar_text(raw.get("scheduler-service-type") or "ClusterIP",
                                key + "scheduler-service-type")
    if service_type not in SERVICE_TYPES:
        raise ConfigError(
            f"{key}scheduler-service-type must be ClusterIP, NodePort or LoadBalancer, "
            f"got {quote(service_type)}"
        )
    return KubernetesSettings(
        namespace=_optional_text(raw.get("namespace"), key + "namespace"),
        image=_optional_text(raw.get("image"), key + "image"),
        gpu_resource=_scalar_text(raw.get("gpu-resource") or "nvidia.com/gpu", key + "gpu-resource"),
        gpu_type_label=_scalar_text(raw.get("gpu-type-label") or "nvidia.com/gpu.product",
                                    key + "gpu-type-label"),
        node_selector=_mapping(raw.get("node-selector"), key + "node-selector"),
        tolerations=tolerations,
        service_account=_optional_text(raw.get("service-account"), key + "service-account"),
        env=_mapping(raw.get("env"), key + "env"),
        labels=_mapping(raw.get("labels"), key + "labels"),
        scheduler_service_type=service_type,
        pending_timeout=parse_duration(raw.get("pending-timeout", "5m"), what=key + "pending-timeout"),
        start_timeout=parse_duration(raw.get("start-timeout", "15m"), what=key + "start-timeout"),
        connect_timeout=parse_duration(raw.get("connect-timeout", "30s"), what=key + "connect-timeout"),
        queue_name=_queue_name(raw.get("queue-name"), key + "queue-name"),
        scheduler_node_selector=_mapping(scheduler.get("node-selector"), key + "scheduler.node-selector"),
        scheduler_tolerations=_tolerations(scheduler.get("tolerations"), key + "scheduler.tolerations"),
        spot=flag(raw.get("spot", False), key + "spot"),
        gpu_types=parse_gpu_types(raw.get("gpu-type"), what=key + "gpu-type"),
    )


_QUEUE_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def _queue_name(value: Any, what: str) -> str | None:
    """A Kueue LocalQueue name: it becomes a label value (63 characters, Kubernetes' rules)."""
    name = _optional_text(value, what)
    if name is not None and not _QUEUE_NAME.match(name):
        raise ConfigError(f"{what} must be a Kueue LocalQueue name (up to 63 letters, digits, "
                          f"'-', '_', '.', starting and ending with a letter or digit), got "
                          f"{quote(name)}")
    return name


def _gpu_hour(value: Any, what: str) -> tuple[float, tuple[tuple[str, float], ...]]:
    """``pricing.gpu-hour``: a price, or a table ``{<gpu type>: price, default: price}``."""
    if not isinstance(value, dict):
        return non_negative(value, what, maximum=MAX_PRICE), ()
    if len(value) > 64:
        raise ConfigError(f"{what} may price at most 64 GPU types, got {len(value)}")
    default, table = 2.5, []
    for gpu_type, price in value.items():
        if gpu_type == "default":
            default = non_negative(price, f"{what}.default", maximum=MAX_PRICE)
            continue
        (name,) = parse_gpu_types(_scalar_text(gpu_type, f"a key of {what}", GPU_TYPE_CHARS + 1),
                                  what=f"a key of {what}")
        table.append((name, non_negative(price, f"{what}[{quote(name)}]", maximum=MAX_PRICE)))
    return default, tuple(table)


def _gateway(raw: dict[str, Any]) -> GatewaySettings:
    key = f"{NAMESPACE}.gateway."
    auth = raw.get("auth")
    auth = _optional_text(auth, key + "auth")
    auth = None if auth is None or auth.lower() == "none" else auth.lower()
    if auth is not None and auth not in GATEWAY_AUTH_TYPES:
        raise ConfigError(
            f"{key}auth must be one of {', '.join(GATEWAY_AUTH_TYPES)} or null (dask-gateway's "
            f"default), got {quote(raw.get('auth'))}"
        )
    options = _section(raw, "cluster-options", key + "cluster-options")
    return GatewaySettings(
        address=_optional_text(raw.get("address"), key + "address"),
        auth=auth,
        proxy_address=_optional_text(raw.get("proxy-address"), key + "proxy-address"),
        public_address=_optional_text(raw.get("public-address"), key + "public-address"),
        username=_optional_text(raw.get("username"), key + "username"),
        password=_optional_text(raw.get("password"), key + "password"),
        api_token=_optional_text(raw.get("api-token"), key + "api-token"),
        cluster_options=dict(options),
        connect_timeout=parse_duration(raw.get("connect-timeout", "10s"), what=key + "connect-timeout"),
        start_timeout=parse_duration(raw.get("start-timeout", "5m"), what=key + "start-timeout"),
    )


def flag(value: Any, what: str) -> bool:
    """``value`` as a yes/no setting (a bool, or one of true/false/yes/no/on/off/1/0).

    Examples
    --------
    >>> flag("on", "dashboard")
    True
    """
    if isinstance(value, bool):
        return value
    text = str(value)[:8].strip().lower() if isinstance(value, (str, int)) else None
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"{what} must be true or false, got {quote(value)}")


def _jobs(raw: dict[str, Any]) -> JobsSettings:
    key = f"{NAMESPACE}.jobs."
    store = _optional_text(raw.get("store"), key + "store")
    if store is not None:
        store = short_text(store, key + "store", limit=1024)
    ttl = parse_duration(raw.get("ttl", "7d"), what=key + "ttl")
    if ttl <= 0:
        raise ConfigError(f"{key}ttl must be above 0, got {quote(raw.get('ttl'))}")
    return JobsSettings(store=store, ttl=ttl)


def load_settings(raw: dict[str, Any] | None = None) -> Settings:
    """Parse the ``jupyter-elastic`` namespace (or ``raw``) into :class:`Settings`.

    Dask's configuration is read every time (a notebook may ``dask.config.set`` between
    cells); what it parsed to is kept for the same text of the namespace, which every
    ``%%gpu`` cell reads (parsing it took half a millisecond of each warm cell)."""
    if raw is None:
        current = dask.config.get(NAMESPACE)
        text = repr(current)
        cached = _parsed.get(text)
        if cached is not None:
            return cached
        settings = _load_settings(current)
        _parsed.clear()  # one entry: the settings of the moment
        _parsed[text] = settings
        return settings
    return _load_settings(raw)


#: The last namespace text :func:`load_settings` parsed, and what it parsed to.
_parsed: dict[str, Settings] = {}


def _load_settings(raw: Any) -> Settings:
    cfg = _dashed(raw)
    key = NAMESPACE + "."
    if not isinstance(cfg, dict):
        raise ConfigError(f"{NAMESPACE} must be a mapping of settings, got {quote(cfg)}")
    worker = _section(cfg, "worker", key + "worker")
    pricing = _section(cfg, "pricing", key + "pricing")
    gpu_hour, gpu_hour_types = _gpu_hour(pricing.get("gpu-hour", 2.5), key + "pricing.gpu-hour")
    settings = Settings(
        backend=check_backend(cfg.get("backend", "local")),
        idle_timeout=parse_duration(cfg.get("idle-timeout", "60s"), what=key + "idle-timeout"),
        shutdown_after=parse_duration(cfg.get("shutdown-after", "20m"), what=key + "shutdown-after"),
        lease_ttl=parse_duration(cfg.get("lease-ttl", "2m"), what=key + "lease-ttl"),
        min_workers=whole(cfg.get("min-workers", 0), key + "min-workers"),
        max_workers=whole(cfg.get("max-workers", 4), key + "max-workers", minimum=1),
        interrupt_grace=parse_duration(cfg.get("interrupt-grace", "2s"), what=key + "interrupt-grace"),
        dashboard=flag(cfg.get("dashboard", False), key + "dashboard"),
        prewarm=flag(cfg.get("prewarm", True), key + "prewarm"),
        sync_packages=flag(cfg.get("sync-packages", False), key + "sync-packages"),
        worker=WorkerSettings(
            gpus=parse_gpus(worker.get("gpus", 1), what=key + "worker.gpus"),
            cpus=whole(worker.get("cpus", 4), key + "worker.cpus", minimum=1),
            memory=parse_size(worker.get("memory", "16GiB"), what=key + "worker.memory"),
        ),
        pricing=Pricing(
            gpu_hour=gpu_hour, gpu_hour_types=gpu_hour_types,
            cpu_hour=non_negative(pricing.get("cpu-hour", 0.05), key + "pricing.cpu-hour",
                                  maximum=MAX_PRICE),
            currency=short_text(_scalar_text(pricing.get("currency", "USD"), key + "pricing.currency"),
                                key + "pricing.currency", limit=8),
        ),
        kubernetes=_kubernetes(_section(cfg, "kubernetes", key + "kubernetes")),
        gateway=_gateway(_section(cfg, "gateway", key + "gateway")),
        jobs=_jobs(_section(cfg, "jobs", key + "jobs")),
    )
    if settings.min_workers > settings.max_workers:
        raise ConfigError(
            f"{key}min-workers ({settings.min_workers}) is above {key}max-workers "
            f"({settings.max_workers}); lower min-workers or raise max-workers"
        )
    return settings


# Keys a user may set with ``%gpu config KEY=VALUE``, each with the parser that checks it.
SETTABLE_KEYS: dict[str, Callable[[Any], Any]] = {
    "backend": check_backend,
    "idle-timeout": lambda v: parse_duration(v, what="idle-timeout"),
    "shutdown-after": lambda v: parse_duration(v, what="shutdown-after"),
    "lease-ttl": lambda v: parse_duration(v, what="lease-ttl"),
    "min-workers": lambda v: whole(v, "min-workers"),
    "max-workers": lambda v: whole(v, "max-workers", minimum=1),
    "interrupt-grace": lambda v: parse_duration(v, what="interrupt-grace"),
    "sync-packages": lambda v: flag(v, "sync-packages"),
    "worker.gpus": lambda v: parse_gpus(v, what="worker.gpus"),
    "worker.cpus": lambda v: whole(v, "worker.cpus", minimum=1),
    "worker.memory": lambda v: parse_size(v, what="worker.memory"),
    "pricing.gpu-hour": lambda v: non_negative(v, "pricing.gpu-hour", maximum=MAX_PRICE),
    "pricing.cpu-hour": lambda v: non_negative(v, "pricing.cpu-hour", maximum=MAX_PRICE),
    "pricing.currency": lambda v: short_text(v, "pricing.currency", limit=8),
    "kubernetes.namespace": lambda v: short_text(v, "kubernetes.namespace", limit=63),
    "kubernetes.image": lambda v: short_text(v, "kubernetes.image", limit=512),
    "gateway.address": lambda v: short_text(v, "gateway.address", limit=512),
    "jobs.store": lambda v: short_text(v, "jobs.store", limit=1024),
    "jobs.ttl": lambda v: parse_duration(v, what="jobs.ttl"),
}


def set_option(key: str, value: str) -> None:
    """Check ``value`` for ``key`` and set it in Dask config for this process.

    Raises ConfigError naming the key and the accepted keys or form when either is wrong.
    """
    if key not in SETTABLE_KEYS:
        raise ConfigError(
            f"unknown setting {quote(key)}; settable keys are: {', '.join(sorted(SETTABLE_KEYS))}"
        )
    SETTABLE_KEYS[key](value)  # raises ConfigError with the accepted form
    dask.config.set({f"{NAMESPACE}.{key}": value})
    load_settings()  # cross-field checks (min-workers <= max-workers)
