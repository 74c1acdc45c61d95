"""``%%gpu --backend gateway`` through a real kernel: the kernel's embedded control plane
asks the dask-gateway-server for a cluster, the cell runs on a gateway worker reached
through the gateway's TLS proxy, and a restarted kernel of the same notebook finds the
cluster again by name."""

from __future__ import annotations

import pytest
import yaml
from elastic_testing import wait_for
from kernel_harness import Kernel

from .conftest import PASSWORD, USER

pytestmark = [pytest.mark.gateway, pytest.mark.kernel]


def kernel_env(gateway_server, tmp_path) -> dict[str, str]:
    config_dir = tmp_path / "dask"
    config_dir.mkdir()
    # backend stays "local": the cell asks for the gateway with --backend
    (config_dir / "jupyter-elastic.yaml").write_text(yaml.safe_dump({"jupyter-elastic": {
        "idle-timeout": "2s", "max-workers": 2, "worker": {"gpus": 1, "cpus": 1, "memory": "1GiB"},
        "gateway": {"auth": "simple", "username": USER, "start-timeout": "60s"},
    }}))
    return {"DASK_CONFIG": str(config_dir),
            "DASK_JUPYTER_ELASTIC__GATEWAY__ADDRESS": gateway_server.address,
            "DASK_JUPYTER_ELASTIC__GATEWAY__PASSWORD": PASSWORD,
            "JPY_SESSION_NAME": "/home/alice/analysis.ipynb"}


def test_gpu_cell_runs_on_the_gateway_and_a_restarted_kernel_reconnects(
        gateway_server, tmp_path, no_leaked_processes):
    env = kernel_env(gateway_server, tmp_path)
    first = Kernel(env=env)
    try:
        run = first.run("%%gpu --backend gateway\nprint('gateway worker says hi')\nanswer = 6 * 7\nanswer")
        assert run.status == "ok", run.error_text()
        assert run.result["text/plain"] == "42" and "gateway worker says hi" in run.stdout
        assert "no GPU found" in run.stderr  # these gateway workers offer CELL, not GPU
        assert first.value("answer") == 42
        # this gateway's admin did not set allowed-failures 0: the kernel's client did
        assert first.value("__import__('jupyter_elastic.kernel.magics', fromlist=['_'])._magics.session"
                           ".client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)") == 0
        status = first.value("get_ipython().run_line_magic('gpu', 'status --json')")
        [cluster] = status["clusters"]
        assert cluster["backend"] == "gateway" and cluster["name"].startswith("nb-analysis-")
        assert cluster["scheduler_address"].startswith("gateway://127.0.0.1:")
        row = first.value("get_ipython().run_line_magic('gpu', 'history --json')[-1]")
        assert row["backend"] == "gateway" and row["status"] == "ok" and row["device"] == "cpu"
        [gateway_name] = gateway_server.clusters()
        # a kernel killed hard leaves its gateway cluster running
        first.km.shutdown_kernel(now=True)
    finally:
        first.kc.stop_channels()
    assert gateway_server.clusters() == [gateway_name]

    second = Kernel(env=env)
    try:
        run = second.run("%%gpu --backend gateway\n'found it'")
        assert run.status == "ok", run.error_text()
        assert run.result["text/plain"] == "'found it'"
        status = second.value("get_ipython().run_line_magic('gpu', 'status --json')")
        assert [c["name"] for c in status["clusters"]] == [cluster["name"]]
        assert gateway_server.clusters() == [gateway_name]
        assert second.run("%gpu stop").status == "ok"
        wait_for(lambda: gateway_server.clusters() == [], timeout=30,
                 what="the gateway cluster to stop after %gpu stop")
    finally:
        second.shutdown()


def test_detached_cell_runs_on_the_gateway_and_its_cluster_stops(gateway_server, tmp_path,
                                                                 no_leaked_processes):
    """``%%gpu --detach --backend gateway``: the supervisor's own gateway cluster runs the
    cell, the gateway worker writes the results to a network store (FTP, as object storage
    would be), the kernel binds them from there, and the cluster is stopped once it ends."""
    from ftp_store import ftp_store

    from jupyter_elastic.controlplane.jobs import FINAL, JobRegistry

    with ftp_store(tmp_path / "ftp") as store:
        env = dict(kernel_env(gateway_server, tmp_path), DASK_JUPYTER_ELASTIC__JOBS__STORE=store)
        kernel = Kernel(env=env)
        try:
            assert kernel.run("import numpy as np\nx = np.arange(3)").status == "ok"
            run = kernel.run("%%gpu --detach --backend gateway --name gw-job\n"
                             "import os\nprint('gateway job in', os.getpid())\ny = x * 10")
            assert run.status == "ok" and run.stdout.startswith("job "), run.error_text()
            job_id = run.stdout.split()[1]
            job = wait_for(lambda: (j := JobRegistry().get(job_id))["state"] in FINAL and j,
                           timeout=180, interval=0.2, what="the gateway job to end")
            assert job["state"] == "done", job["error"]
            assert job["backend"] == "gateway" and job["control_plane"] == "supervisor"
            stored = tmp_path / "ftp" / "jobs" / job_id
            assert (stored / "manifest.json").is_file() and (stored / "values" / "y.npy").is_file()
            run = kernel.run("%gpu attach gw-job")
            assert run.status == "ok", run.error_text()
            assert "gateway job in" in run.stdout
            assert kernel.value("y.tolist()") == [0, 10, 20]
            wait_for(lambda: gateway_server.clusters() == [], timeout=60,
                     what="the job's gateway cluster to stop")
            wait_for(lambda: supervisor_gone(JobRegistry().get(job_id)["pid"]),
                     what="the job's supervisor to exit")
        finally:
            kernel.shutdown()


def supervisor_gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
