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
