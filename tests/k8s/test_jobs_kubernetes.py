"""``%%gpu --detach --backend kubernetes`` on the real Dask operator (kopf + dask-kubernetes'
controller, API server double, process kubelet): the supervisor's own DaskCluster runs the
cell, the worker Pod writes the results to a network store (FTP, as object storage would
be), the kernel binds them from there, and the DaskCluster and its Pods are gone after."""

from __future__ import annotations

from typing import Any

import psutil
import pytest
import yaml
from elastic_testing import wait_for
from ftp_store import ftp_store
from kernel_harness import Kernel

from jupyter_elastic.controlplane.jobs import FINAL, JobRegistry

from .apiserver import DASK

pytestmark = [pytest.mark.k8s, pytest.mark.kernel, pytest.mark.timeout(300)]


def daskclusters(op: Any) -> list[str]:
    return sorted(c["metadata"]["name"] for c in op.server.sync(lambda: op.server.list(DASK, "daskclusters")))


def supervisor_log(job_id: str) -> str:
    from jupyter_elastic.controlplane.jobs import job_dir

    try:
        with open(f"{job_dir(job_id)}/supervisor.log", errors="replace") as f:
            return f.read()[-3000:]
    except OSError:
        return ""


def supervisor_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_detached_cell_on_the_real_operator(real_k8s, tmp_path, no_leaked_processes):
    op = real_k8s
    config_dir = tmp_path / "dask"
    config_dir.mkdir()
    before, pods_before = daskclusters(op), set(op.kubelet.live())
    with ftp_store(tmp_path / "ftp") as store:
        (config_dir / "jupyter-elastic.yaml").write_text(yaml.safe_dump({"jupyter-elastic": {
            "backend": "kubernetes", "idle-timeout": "1s", "max-workers": 1,
            "worker": {"gpus": 1, "cpus": 1, "memory": "1GiB"}, "jobs": {"store": store},
            "kubernetes": {"image": "registry.example/elastic-notebook:1.0", "namespace": "jhub",
                           "scheduler-service-type": "LoadBalancer", "pending-timeout": "30s",
                           "start-timeout": "120s", "connect-timeout": "10s"},
        }}))
        kernel = Kernel(env={"DASK_CONFIG": str(config_dir), "KUBECONFIG": op.kubeconfig,
                             "JPY_SESSION_NAME": "/home/alice/vision.ipynb"})
        try:
            assert kernel.run("import numpy as np\nx = np.arange(4.0)").status == "ok"
            run = kernel.run("%%gpu --detach --name k8s-job\n"
                             "import os\nprint('pod', os.environ.get('K8S_DOUBLE_POD_NAME'))\ny = x ** 2")
            assert run.status == "ok" and run.stdout.startswith("job "), run.error_text()
            job_id = run.stdout.split()[1]
            job = wait_for(lambda: (j := JobRegistry().get(job_id))["state"] in FINAL and j,
                           timeout=240, interval=0.2, what="the Kubernetes job to end")
            assert job["state"] == "done", (job["error"], supervisor_log(job_id), op.log()[-3000:])
            assert job["backend"] == "kubernetes" and job["control_plane"] == "supervisor"
            stored = tmp_path / "ftp" / "jobs" / job_id
            assert (stored / "manifest.json").is_file() and (stored / "values" / "y.npy").is_file()
            run = kernel.run("%gpu attach k8s-job")
            assert run.status == "ok", run.error_text()
            assert f"pod job-{job_id}-1-" in run.stdout, run.stdout  # printed in a worker Pod
            assert kernel.value("y.tolist()") == [0.0, 1.0, 4.0, 9.0]
            wait_for(lambda: supervisor_gone(job["pid"]), timeout=60, what="the supervisor to exit")
            wait_for(lambda: daskclusters(op) == before, timeout=60,
                     what="the job's DaskCluster to be deleted")
            wait_for(lambda: set(op.kubelet.live()) <= pods_before, timeout=60,
                     what="the job's Pods to stop")
        finally:
            kernel.shutdown()
