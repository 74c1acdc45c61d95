"""Kernels of a Jupyter server share its control plane: a %%gpu cell's cluster lives in the
server, and when the kernel is killed (-9) the server stops the cluster after lease-ttl."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import dask
import psutil
import pytest
from kernel_harness import Kernel

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.kernel




@pytest.fixture
def elastic_config():
    """A short lease-ttl, one CPU worker at most."""
    with dask.config.set({"jupyter-elastic.lease-ttl": "2s", "jupyter-elastic.idle-timeout": "30s",
                          "jupyter-elastic.worker.gpus": 0, "jupyter-elastic.max-workers": 1}):
        yield


_pool = None


async def in_thread(fn, *args):
    """Run blocking kernel calls off the server's loop, on one thread with its own loop
    (jupyter_client's sync wrappers would otherwise find the server's running loop)."""
    global _pool
    import concurrent.futures

    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(1, initializer=lambda: asyncio.set_event_loop(asyncio.new_event_loop()))
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)


async def clusters(jp_fetch) -> list[dict]:
    response = await jp_fetch("jupyter-elastic", "api", "clusters")
    return json.loads(response.body)["clusters"]


async def test_killed_kernels_cluster_stops_after_lease_ttl(jp_serverapp, jp_fetch, no_leaked_processes):
    assert os.environ.get("JUPYTER_ELASTIC_SERVER_URL"), "the extension tells kernels where it is"
    kernel = await in_thread(Kernel)
    try:
        run = await in_thread(kernel.run, "%%gpu\nimport os\nworker_pid = os.getpid()\nworker_pid")
        assert run.status == "ok", run.error_text()
        worker_pid = int(run.result["text/plain"])
        listed = await clusters(jp_fetch)
        assert len(listed) == 1 and listed[0]["cells"] == 1, "the server hosts the notebook's cluster"
        os.kill(kernel.pid, signal.SIGKILL)
        for _ in range(200):  # lease-ttl 2 s, plus the reaper's pass and the close
            if not await clusters(jp_fetch):
                break
            await asyncio.sleep(0.1)
        assert await clusters(jp_fetch) == [], "the server stopped the dead kernel's cluster"
        assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        await in_thread(kernel.kc.stop_channels)
        await in_thread(kernel.km.cleanup_resources)
