"""``--gpus 0.5`` on Kubernetes: one note in the cell that pods get whole GPUs (issue: cold
start engineering); other backends share a GPU through Dask's fractional resources, silently."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from jupyter_elastic.kernel.dispatch import Dispatcher
from jupyter_elastic.protocol import GPU_RESOURCE


def _lease(backend: str) -> dict[str, object]:
    return {"backend": backend, "has_gpu": True, "gpus_per_worker": 1.0}


def _options(gpus: float) -> SimpleNamespace:
    return SimpleNamespace(gpus=gpus, require_gpu=False)


def test_half_a_gpu_on_kubernetes_says_once_that_pods_get_whole_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    dispatcher = Dispatcher(SimpleNamespace())  # type: ignore[arg-type]
    assert dispatcher._resources(_lease("kubernetes"), _options(0.5)) == {GPU_RESOURCE: 0.5}
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--gpus 0.5: Kubernetes gives each worker pod whole devices (1 per pod)" in err
    assert "jupyter-elastic.kubernetes.gpu-resource" in err
    # said once per kernel, not on every cell
    dispatcher._resources(_lease("kubernetes"), _options(0.5))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("backend,gpus", [("local", 0.5), ("gateway", 0.5), ("kubernetes", 1.0)])
def test_no_note_where_the_share_is_real_or_whole(backend: str, gpus: float,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dispatcher = Dispatcher(SimpleNamespace())  # type: ignore[arg-type]
    assert dispatcher._resources(_lease(backend), _options(gpus)) == {GPU_RESOURCE: gpus}
    assert capsys.readouterr().err == ""
