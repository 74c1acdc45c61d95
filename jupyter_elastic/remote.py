"""Forwarding module: ``--preload jupyter_elastic.remote`` (0.1 gateway and Kubernetes
configs) loads the worker preload, now ``jupyter_elastic.execution.worker``."""

from __future__ import annotations

from .execution.worker import dask_setup

__all__ = ["dask_setup"]
