"""Forwarding module: ``--preload jupyter_elastic.k8s_scheduler`` (0.1 manifests) loads the
Kubernetes scheduler preload, now ``jupyter_elastic.backends.kubernetes.scheduler``."""

from __future__ import annotations

from .backends.kubernetes.scheduler import dask_setup

__all__ = ["dask_setup"]
