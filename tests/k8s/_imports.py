"""The one place the Kubernetes tests import package modules from, so that a move of the
backend modules (``backends/kubernetes.py`` -> ``backends/kubernetes/backend.py``,
``k8s_manifests.py`` -> ``backends/kubernetes/manifests.py``, ``manager.py`` ->
``controlplane/manager.py``) is followed here only."""

from __future__ import annotations

from jupyter_elastic.config import load_settings
from jupyter_elastic.errors import ConfigError

try:
    from jupyter_elastic.controlplane.manager import ElasticClusterManager
except ImportError:
    from jupyter_elastic.manager import ElasticClusterManager  # type: ignore[no-redef]

try:  # the package layout after the move
    from jupyter_elastic.backends.kubernetes.backend import KubernetesBackend
    from jupyter_elastic.backends.kubernetes.manifests import validate_manifest
except ImportError:  # the flat layout before it
    from jupyter_elastic.backends.kubernetes import KubernetesBackend  # type: ignore[no-redef]
    from jupyter_elastic.k8s_manifests import validate_manifest  # type: ignore[no-redef]

__all__ = ["ConfigError", "ElasticClusterManager", "KubernetesBackend", "load_settings", "validate_manifest"]
