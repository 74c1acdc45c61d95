"""``jupyter-elastic doctor --backend kubernetes`` against the API server double."""

from __future__ import annotations

import pytest

from jupyter_elastic.backends.kubernetes.manifests import HELM_INSTALL
from jupyter_elastic.cli import main

pytestmark = pytest.mark.k8s


def test_doctor_reports_rbac_gaps_and_missing_image(k8s, capsys, monkeypatch):
    monkeypatch.setenv("DASK_JUPYTER_ELASTIC__KUBERNETES__IMAGE", "")
    k8s.server.forbid.update({("create", "daskclusters"), ("get", "pods/log")})
    rc = main(["doctor", "--backend", "kubernetes"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "Dask operator CRDs installed" in out
    assert "missing: create daskclusters (kubernetes.dask.org), get pods/log" in out
    assert "rbac.yaml" in out
    assert "no node offers nvidia.com/gpu" in out


@pytest.mark.parametrize("k8s", [False], indirect=True)
def test_doctor_says_how_to_install_the_operator(k8s, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTER_IMAGE_SPEC", "hub/notebook:1")
    assert main(["doctor", "--backend", "kubernetes"]) == 1
    out = capsys.readouterr().out
    assert HELM_INSTALL in out
    assert "RBAC allows every verb" in out and "worker image: hub/notebook:1" in out
