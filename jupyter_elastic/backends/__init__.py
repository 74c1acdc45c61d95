"""Backends start, scale and stop one Dask cluster each; nothing else.

Concrete backends are found by name through the ``jupyter_elastic.backends`` entry-point
group, with the three built-in ones registered here, and their heavy imports happen only
inside their own module.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..config import BACKENDS
from ..errors import BackendUnavailable, ConfigError
from .base import ClusterHandle, ElasticBackend

_BUILTIN = {
    "local": "jupyter_elastic.backends.local:LocalBackend",
    "kubernetes": "jupyter_elastic.backends.kubernetes.backend:KubernetesBackend",
    "gateway": "jupyter_elastic.backends.gateway:GatewayBackend",
}


def backend_class(name: str) -> type[ElasticBackend]:
    """The backend class registered under ``name``; a clear error for unknown names."""
    target = _BUILTIN.get(name)
    if target is None:
        for ep in entry_points(group="jupyter_elastic.backends"):
            if ep.name == name:
                return ep.load()  # type: ignore[no-any-return]
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except ImportError as exc:
        raise BackendUnavailable(
            f"the {name} backend cannot be loaded: {exc}",
            hint=f"install what it needs (pip install 'jupyter-elastic[{name}]')",
        ) from None


__all__ = ["ClusterHandle", "ElasticBackend", "backend_class"]
