"""Fixtures for the Kubernetes backend tests: a fresh API server double and stand-in
operator per test, a kubeconfig in a temp directory (KUBECONFIG), and test settings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from jupyter_elastic.backends.kubernetes.backend import KubernetesBackend
from jupyter_elastic.config import load_settings

from .apiserver import APIServer
from .operator import StandInOperator


@dataclass
class K8s:
    server: APIServer
    operator: StandInOperator
    kubeconfig: str


def _reset_kr8s() -> None:
    import importlib

    importlib.import_module("kr8s._api").Api._instances.clear()


@pytest.fixture
def k8s(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[K8s]:
    """API server double with the Dask CRDs, and the stand-in operator reconciling them."""
    crds = getattr(request, "param", True)
    server = APIServer(dask_crds=crds).start()
    operator = StandInOperator(server).start()
    path = tmp_path / "kubeconfig"
    path.write_text(server.kubeconfig())
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("JUPYTER_IMAGE_SPEC", raising=False)
    monkeypatch.setattr(KubernetesBackend, "poll_interval", 0.1)
    _reset_kr8s()
    try:
        yield K8s(server, operator, str(path))
    finally:
        operator.stop()
        server.close()
        _reset_kr8s()


def settings(**kubernetes: Any) -> Any:
    """Settings for these tests: a LoadBalancer scheduler service (no cluster DNS here),
    short timers, at most two workers."""
    k8s = {"image": "registry.example/elastic-notebook:1.0", "scheduler-service-type": "LoadBalancer",
           "pending-timeout": "2s", "start-timeout": "90s", "connect-timeout": "5s",
           "labels": {"team": "vision"}}
    k8s.update(kubernetes)
    return load_settings({
        "backend": "kubernetes", "idle-timeout": "1s", "shutdown-after": "20m", "lease-ttl": "2m",
        "max-workers": 2, "worker": {"gpus": 1, "cpus": 2, "memory": "2GiB"}, "kubernetes": k8s,
    })


def run(coro: Any) -> Any:
    """Run a coroutine on a fresh event loop (the backend's loop in these tests)."""
    return asyncio.run(coro)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)


@pytest.fixture(scope="session")
def real_operator() -> Iterator[Any]:
    """The real Dask operator (kopf + dask-kubernetes' controller) against one API server
    double and process kubelet for the whole session (kopf takes seconds to start)."""
    from .realop import KOPF, RealOperator

    if not KOPF:
        pytest.skip("kopf is not installed (pip install kopf): the real operator cannot run")
    op = RealOperator()
    try:
        op.start()
        yield op
    finally:
        op.stop()


@pytest.fixture
def real_k8s(real_operator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Per test: KUBECONFIG at the shared double, cluster DNS in this process, and a check
    that every Pod process the test caused has gone by its end."""
    from .kubelet import install_resolver

    monkeypatch.setenv("KUBECONFIG", real_operator.kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    _reset_kr8s()
    try:
        with install_resolver(real_operator.kubelet):
            yield real_operator
    finally:
        _reset_kr8s()
