"""Each fault is one clear ElasticError carrying the API's own cause, and nothing is left
behind: no DaskCluster, no pods, no processes."""

from __future__ import annotations

import pytest
from elastic_testing import wait_for

from jupyter_elastic.backends.kubernetes.backend import KubernetesBackend
from jupyter_elastic.backends.kubernetes.manifests import HELM_INSTALL
from jupyter_elastic.controlplane.manager import ElasticClusterManager
from jupyter_elastic.errors import BackendUnavailable, ClusterStartError
from jupyter_elastic.models import ClusterSpec

from .apiserver import DASK
from .conftest import run, settings

pytestmark = pytest.mark.k8s


def _start(s, phases=None, **spec):
    spec = ClusterSpec.from_settings(s, name=spec.pop("name", "faulty"), backend="kubernetes",
                                     owner="alice", **spec)
    progress = (lambda p, d: phases.append((p, d))) if phases is not None else (lambda p, d: None)
    return run(KubernetesBackend(s).start(spec, progress))


def _nothing_left(k8s) -> None:
    wait_for(lambda: not k8s.operator.live(), what="processes to stop")
    srv = k8s.server
    assert srv.sync(lambda: srv.list(DASK, "daskclusters")) == []
    assert srv.sync(lambda: srv.list("v1", "pods")) == []


def test_no_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(BackendUnavailable, match="no Kubernetes credentials") as info:
        _start(settings())
    assert "KUBECONFIG" in info.value.message


@pytest.mark.parametrize("k8s", [False], indirect=True)
def test_operator_crds_missing_names_the_helm_command(k8s):
    with pytest.raises(BackendUnavailable, match="not installed") as info:
        _start(settings())
    assert HELM_INSTALL in info.value.message
    assert not any(m == "POST" for m, _ in k8s.server.requests)


def test_rbac_forbidden_create_names_verb_and_resource(k8s):
    k8s.server.forbid.add(("create", "daskclusters"))
    with pytest.raises(BackendUnavailable) as info:
        _start(settings())
    msg = info.value.message
    assert "RBAC forbids 'create' on daskclusters.kubernetes.dask.org" in msg
    assert 'User "system:serviceaccount:jhub:jupyter-alice"' in msg
    assert "rbac.yaml" in msg
    _nothing_left(k8s)


def test_rbac_forbidden_reading_pods(k8s, no_leaked_processes):
    k8s.server.forbid.add(("list", "pods"))
    with pytest.raises(BackendUnavailable, match="RBAC forbids 'list' on pods"):
        _start(settings())
    _nothing_left(k8s)


def test_rbac_forbidden_after_create_deletes_what_was_created(k8s, no_leaked_processes):
    k8s.server.forbid.add(("create", "daskautoscalers"))

    async def scenario() -> None:
        manager = ElasticClusterManager(settings(), owner="alice")
        try:
            with pytest.raises(BackendUnavailable, match="RBAC forbids 'create' on daskautoscalers"):
                await manager.acquire("kernel-1", backend="kubernetes")
            assert manager.list_clusters() == []
        finally:
            await manager.close_all()

    run(scenario())
    assert any(o["kind"] == "DaskCluster" for o in k8s.server.posted)
    _nothing_left(k8s)


def test_no_node_can_take_the_gpu_request(k8s, no_leaked_processes):
    phases: list[tuple[str, str]] = []
    with pytest.raises(ClusterStartError) as info:
        _start(settings(), phases, gpus_per_worker=2.0)
    msg = info.value.message
    assert "no node can run the worker pod: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu" in msg
    assert "--gpus" in msg
    assert any(p == "pending" and "Insufficient nvidia.com/gpu" in d for p, d in phases)
    _nothing_left(k8s)


def test_unknown_gpu_type_is_unschedulable(k8s, no_leaked_processes):
    with pytest.raises(ClusterStartError, match="didn't match Pod's node affinity/selector"):
        _start(settings(), gpu_type="NVIDIA-H100")
    _nothing_left(k8s)


def test_image_pull_failure(k8s, no_leaked_processes):
    k8s.operator.bad_images.add("registry.example/typo:1")
    with pytest.raises(ClusterStartError, match="'registry.example/typo:1' cannot be pulled") as info:
        _start(settings(image="registry.example/typo:1"))
    assert "ErrImagePull" in info.value.message and "not found" in info.value.message
    _nothing_left(k8s)


def test_quota_exceeded(k8s, no_leaked_processes):
    k8s.operator.gpu_quota = 0
    with pytest.raises(ClusterStartError, match="quota exceeded") as info:
        _start(settings())
    assert "exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1" in info.value.message
    _nothing_left(k8s)


def test_api_server_unreachable_mid_session(no_leaked_processes, k8s):
    s = settings()
    spec = ClusterSpec.from_settings(s, name="cut-off", backend="kubernetes", owner="alice", max_workers=1)

    async def scenario() -> None:
        backend = KubernetesBackend(s)
        handle = await backend.start(spec, lambda p, d: None)
        k8s.server.stop_serving()
        assert len(await backend.workers(handle)) == 1  # the Dask side still answers
        with pytest.raises(BackendUnavailable, match="API server is unreachable"):
            await backend.scale(handle, 0)
        with pytest.raises(BackendUnavailable) as info:
            await backend.close(handle)
        assert "kubectl delete daskcluster cut-off -n jhub" in info.value.message

    run(scenario())
