"""Detached cells under a real Jupyter server: the job runs on its supervisor's own
cluster, not the server's (so it outlives the killed kernel, whose lease lapses and whose
cluster stops, and a server restart: ``test_jobs_restart.py``), and the REST API lists,
reads and cancels jobs."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest
import tornado.httpclient
from kernel_harness import Kernel
from test_server_kernels import elastic_config, in_thread  # noqa: F401  (the server set-up)

from jupyter_elastic.controlplane.jobs import JobRegistry

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.kernel


@pytest.fixture(autouse=True)
def _resource_tracker():
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


async def api(jp_fetch, *path, method="GET"):
    response = await jp_fetch("jupyter-elastic", "api", *path, method=method)
    return json.loads(response.body)


async def until(predicate, what, tries=600):
    import asyncio

    for _ in range(tries):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def test_server_holds_the_jobs_lease_and_serves_jobs(jp_serverapp, jp_fetch, tmp_path,
                                                           no_leaked_processes):
    manager = jp_serverapp.web_app.settings["jupyter_elastic_manager"]
    gate = tmp_path / "gate"
    kernel = await in_thread(Kernel, {"JPY_SESSION_NAME": "long.ipynb"})
    try:
        run = await in_thread(kernel.run, "%%gpu\nimport numpy as np\nx = np.arange(4.0)")
        assert run.status == "ok", run.error_text()
        run = await in_thread(kernel.run, (
            "%%gpu --detach --name nightly --ttl 1h\n"
            "import os, time\n"
            f"while not os.path.exists({str(gate)!r}):\n"
            "    time.sleep(0.02)\n"
            "y = x + 1"))
        assert run.status == "ok", run.error_text()
        job_id = run.stdout.split()[1]

        async def running():
            job = await api(jp_fetch, "jobs", job_id)
            return job if job["state"] == "running" else None

        job = await until(running, "the job to run")
        assert job["name"] == "nightly" and job["notebook"] == "long.ipynb"
        assert job["control_plane"] == "supervisor"
        (kernel_cluster,) = [c["id"] for c in (await api(jp_fetch, "clusters"))["clusters"]]
        assert job["cluster_id"] != kernel_cluster, "the job's cluster is its supervisor's"
        os.kill(kernel.pid, signal.SIGKILL)

        async def kernel_cluster_stopped():  # the dead kernel's lease lapses after lease-ttl
            return not manager.leases_of(kernel_cluster) and kernel_cluster not in [
                c["id"] for c in (await api(jp_fetch, "clusters"))["clusters"]]

        await until(kernel_cluster_stopped, "the dead kernel's cluster to stop")
        assert (await api(jp_fetch, "jobs", job_id))["state"] == "running"
        gate.write_text("go")

        async def done():
            job = await api(jp_fetch, "jobs", "nightly")
            return job if job["state"] in ("done", "failed", "lost") else None

        job = await until(done, "the job to finish")
        assert job["state"] == "done", job["error"]
        assert job["names"] == ["y"] and job["expires"] - job["ended"] == 3600
        results = await api(jp_fetch, "jobs", job_id, "results")
        assert results["complete"] and results["names"]["y"]["format"] == "npy"
        assert results["names"]["y"]["shape"] == [4]
        assert [j["id"] for j in (await api(jp_fetch, "jobs"))["jobs"]] == [job_id]
        assert (await api(jp_fetch, "jobs", job_id, method="DELETE"))["state"] == "done"
        with pytest.raises(tornado.httpclient.HTTPClientError) as missing:
            await api(jp_fetch, "jobs", "no-such-job")
        assert missing.value.code == 404
        pid = JobRegistry().get(job_id)["pid"]

        async def supervisor_gone():
            return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

        await until(supervisor_gone, "the supervisor to exit (its cluster stops with it)")
    finally:
        await in_thread(kernel.kc.stop_channels)
        await in_thread(kernel.km.cleanup_resources)
