"""``%%gpu`` through a real kernel on the Kubernetes backend: API server double, stand-in
operator, the real dask-kubernetes client code in the kernel."""

from __future__ import annotations

import pytest
import yaml
from elastic_testing import wait_for
from kernel_harness import Kernel

from .apiserver import DASK

pytestmark = [pytest.mark.k8s, pytest.mark.kernel]


def kernel_env(k8s, tmp_path) -> dict[str, str]:
    config_dir = tmp_path / "dask"
    config_dir.mkdir()
    (config_dir / "jupyter-elastic.yaml").write_text(yaml.safe_dump({"jupyter-elastic": {
        "backend": "kubernetes", "idle-timeout": "1s", "max-workers": 2,
        "worker": {"gpus": 1, "cpus": 2, "memory": "2GiB"},
        "kubernetes": {"image": "registry.example/elastic-notebook:1.0",
                       "scheduler-service-type": "LoadBalancer", "pending-timeout": "5s",
                       "start-timeout": "90s", "connect-timeout": "5s"},
    }}))
    return {"DASK_CONFIG": str(config_dir), "KUBECONFIG": k8s.kubeconfig,
            "JPY_SESSION_NAME": "/home/alice/vision.ipynb"}


def test_gpu_cell_runs_on_kubernetes_and_the_cluster_goes_away(k8s, tmp_path, no_leaked_processes):
    env = kernel_env(k8s, tmp_path)
    k = Kernel(env=env)
    try:
        run = k.run("%%gpu\nimport os\nprint('pod worker says hi')\nanswer = 6 * 7\nanswer")
        assert run.status == "ok", run.error_text()
        assert run.result["text/plain"] == "42" and "pod worker says hi" in run.stdout
        assert "no GPU found" not in run.stderr  # the worker pods offer GPU=1
        clusters = k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters"))
        assert [c["metadata"]["name"] for c in clusters] == [k.value(
            "get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]['name']")]
        row = k.value("get_ipython().run_line_magic('gpu', 'history --json')[-1]")
        assert row["backend"] == "kubernetes" and row["status"] == "ok" and row["gpus"] == 1.0
        first_name = clusters[0]["metadata"]["name"]
    finally:
        k.shutdown()  # the embedded control plane stops its clusters on the way out
    # a restarted kernel of the same notebook finds... a fresh cluster, since the old
    # kernel stopped its own; with the server extension the cluster would survive
    wait_for(lambda: k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters")) == [],
             timeout=60, what="the DaskCluster to be deleted when the kernel shut down")
    wait_for(lambda: not k8s.operator.live(), timeout=60, what="scheduler and worker processes to stop")
    assert first_name.startswith("nb-vision-")


def test_restarted_kernel_reconnects_to_its_running_cluster(k8s, tmp_path, no_leaked_processes):
    env = kernel_env(k8s, tmp_path)
    first = Kernel(env=env)
    try:
        assert first.run("%%gpu\nx = 1").status == "ok"
        name = first.value("get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]['name']")
        # a kernel killed hard leaves its DaskCluster behind; the next kernel reattaches by name
        first.km.shutdown_kernel(now=True)
    finally:
        first.kc.stop_channels()
    second = Kernel(env=env)
    try:
        run = second.run("%%gpu\ny = 2\ny")
        assert run.status == "ok", run.error_text()
        status = second.value("get_ipython().run_line_magic('gpu', 'status --json')")
        assert [c["name"] for c in status["clusters"]] == [name]
        assert len(k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters"))) == 1
        assert second.run("%gpu stop").status == "ok"
        wait_for(lambda: k8s.server.sync(lambda: k8s.server.list(DASK, "daskclusters")) == [],
                 timeout=60, what="the DaskCluster to be deleted by %gpu stop")
    finally:
        second.shutdown()
    wait_for(lambda: not k8s.operator.live(), timeout=60, what="scheduler and worker processes to stop")
