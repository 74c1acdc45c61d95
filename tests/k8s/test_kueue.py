"""Kueue: worker pods carry the LocalQueue label, and a gated pod is a queued start."""

from __future__ import annotations

import threading
import time

import pytest
from elastic_testing import wait_for

from jupyter_elastic import cli
from jupyter_elastic.backends.kubernetes.backend import KubernetesBackend
from jupyter_elastic.backends.kubernetes.manifests import (
    KUEUE_QUEUE_LABEL,
    render,
    validate_manifest,
)
from jupyter_elastic.config import load_settings
from jupyter_elastic.errors import ConfigError
from jupyter_elastic.models import ClusterSpec

from .conftest import run, settings

pytestmark = pytest.mark.k8s


def test_queue_name_labels_the_worker_pods_only_and_is_checked(capsys):
    s = load_settings({"kubernetes": {"image": "img:1", "queue-name": "team-a"}})
    spec = ClusterSpec.from_settings(s, name="q", backend="kubernetes", owner="alice")
    cluster = render(spec, s.kubernetes)[1]  # after the TLS Secret
    validate_manifest(cluster)
    assert cluster["spec"]["worker"]["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a"
    assert KUEUE_QUEUE_LABEL not in cluster["spec"]["scheduler"]["metadata"]["labels"]
    assert KUEUE_QUEUE_LABEL not in cluster["metadata"]["labels"]
    plain = load_settings({"kubernetes": {"image": "img:1"}})
    assert KUEUE_QUEUE_LABEL not in render(spec, plain.kubernetes)[1]["spec"]["worker"][
        "metadata"]["labels"]
    with pytest.raises(ConfigError, match="kubernetes.queue-name must be a Kueue LocalQueue "
                                          "name .* got 'team a'"):
        load_settings({"kubernetes": {"queue-name": "team a"}})

    import dask.config

    with dask.config.set({"jupyter-elastic.kubernetes.queue-name": "team-a",
                          "jupyter-elastic.kubernetes.image": "img:1"}):
        assert cli.main(["render", "--gpus", "1"]) == 0
    assert f"{KUEUE_QUEUE_LABEL}: team-a" in capsys.readouterr().out


def test_a_gated_worker_is_queued_not_unschedulable(k8s, no_leaked_processes):
    """Kueue gates the worker pod; the start shows "queued (Kueue)" for longer than the
    pending timeout (2 s here) without failing, and goes on once the gate is lifted."""
    k8s.operator.kueue_gate = True
    s = settings(**{"queue-name": "team-a"})
    spec = ClusterSpec.from_settings(s, name="kueued", backend="kubernetes", owner="alice")
    phases: list[tuple[str, str]] = []
    backend = KubernetesBackend(s)

    def admit_later() -> None:
        wait_for(lambda: any(p == "queued" for p, _ in phases), what="the queued phase",
                 timeout=60)
        time.sleep(3)  # past the 2 s pending timeout
        k8s.server.sync(k8s.operator.kueue_admit)

    admitter = threading.Thread(target=admit_later, daemon=True)
    admitter.start()

    async def start_and_close() -> None:
        handle = await backend.start(spec, lambda p, d: phases.append((p, d)))
        await backend.close(handle)

    run(start_and_close())
    admitter.join()
    queued = [d for p, d in phases if p == "queued"]
    assert queued[0].startswith("queued (Kueue): worker pod kueued-")
    assert "is gated by kueue.x-k8s.io/admission until LocalQueue team-a admits it" in queued[0]
    assert phases[-1][0] == "ready"
