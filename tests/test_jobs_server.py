"""Detached cells under a real Jupyter server: the job's lease is held by the server (the
cluster outlives the killed kernel's lease), and the REST API lists, reads and cancels jobs."""

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
        assert job["control_plane"] == "server"
        cluster_id = job["cluster_id"]
        os.kill(kernel.pid, signal.SIGKILL)

        async def only_the_job_holds_it():
            return {lease.session for lease in manager.leases_of(cluster_id)} == {f"job-{job_id}"}

        await until(only_the_job_holds_it, "the dead kernel's lease to lapse")
        listed = [c["id"] for c in (await api(jp_fetch, "clusters"))["clusters"]]
        assert cluster_id in listed, "the server keeps the cluster for the job's lease"
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

        await until(supervisor_gone, "the supervisor to exit")

        async def cluster_stopped():  # no lease left on it: the server stops it after lease-ttl
            return cluster_id not in [c["id"] for c in (await api(jp_fetch, "clusters"))["clusters"]]

        await until(cluster_stopped, "the cluster to stop once the job released it")
    finally:
        await in_thread(kernel.kc.stop_channels)
        await in_thread(kernel.km.cleanup_resources)
