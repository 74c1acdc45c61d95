"""Notebooks of one Jupyter server: what a kernel's shutdown, restart and settings do to the
clusters the server hosts, and whose history each notebook sees.

lease-ttl is an hour here, so a cluster that stops did so because its kernel said goodbye.
"""

from __future__ import annotations

import asyncio
import json

import dask
import pytest
from kernel_harness import Kernel
from test_server_kernels import clusters, in_thread

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.kernel


@pytest.fixture(autouse=True)
def _resource_tracker():
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # Python's helper lives as long as pytest: not a leak


@pytest.fixture
def jp_server_config():
    with dask.config.set({"jupyter-elastic.lease-ttl": "1h", "jupyter-elastic.idle-timeout": "30s",
                          "jupyter-elastic.shutdown-after": "1h", "jupyter-elastic.worker.gpus": 0,
                          "jupyter-elastic.max-workers": 1}):
        yield {"ServerApp": {"jpserver_extensions": {"jupyter_elastic": True},
                             "allow_unauthenticated_access": False}}


def start_kernel(notebook: str) -> Kernel:
    return Kernel(env={"JPY_SESSION_NAME": notebook})


def ok(run):
    assert run.status == "ok", run.error_text()
    return run


async def stop_kernel(kernel: Kernel) -> None:
    await in_thread(kernel.shutdown)


async def wait_for_clusters(jp_fetch, predicate, what: str) -> list[dict]:
    for _ in range(300):
        listed = await clusters(jp_fetch)
        if predicate(listed):
            return listed
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}; clusters: {[c['name'] for c in listed]}")


async def test_closing_a_notebook_stops_its_cluster_and_a_restart_keeps_it(jp_fetch, no_leaked_processes):
    closed = await in_thread(start_kernel, "closed.ipynb")
    kept = await in_thread(start_kernel, "restarted.ipynb")
    try:
        ok(await in_thread(closed.run, "%%gpu\nx = 1"))
        ok(await in_thread(kept.run, "%%gpu\ny = 2"))
        before = {c["name"]: c["id"] for c in await clusters(jp_fetch)}
        assert len(before) == 2

        # A restart keeps the notebook's cluster; the restarted kernel leases it again by name.
        await in_thread(lambda: kept.km.restart_kernel(now=False))
        await in_thread(kept.kc.wait_for_ready, 60)
        ok(await in_thread(kept.run, "%load_ext jupyter_elastic"))
        ok(await in_thread(kept.run, "%%gpu\ny = 3"))
        after_restart = {c["name"]: c["id"] for c in await clusters(jp_fetch)}
        assert after_restart == before, "the restart reused its cluster and the other notebook's stayed"

        # Closing a notebook (a clean shutdown) releases its lease: its cluster stops now,
        # not after lease-ttl (an hour here).
        await stop_kernel(closed)
        listed = await wait_for_clusters(jp_fetch, lambda cs: len(cs) == 1,
                                         "the closed notebook's cluster kept running")
        assert listed[0]["id"] == after_restart[next(n for n in before if n.startswith("nb-restarted"))]
    finally:
        await stop_kernel(closed)
        await stop_kernel(kept)
    await wait_for_clusters(jp_fetch, lambda cs: cs == [], "the restarted notebook's cluster kept running")


async def test_history_shows_this_notebooks_cells_and_all_with_all(jp_fetch, no_leaked_processes):
    first = await in_thread(start_kernel, "first.ipynb")
    second = await in_thread(start_kernel, "second.ipynb")
    try:
        ok(await in_thread(first.run, "%%gpu\na = 'from-first'"))
        ok(await in_thread(second.run, "%%gpu\nb = 'from-second'"))
        ok(await in_thread(second.run, "%%gpu\nc = 'second-again'"))

        async def rows(kernel: Kernel, flags: str = "") -> list[dict]:
            run = ok(await in_thread(kernel.run, f"_h = %gpu history --json {flags}\nprint(__import__('json').dumps(_h))"))
            return json.loads(run.stdout)

        mine = await rows(first)
        assert [r["notebook"] for r in mine] == ["first.ipynb"]
        assert "from-first" in mine[0]["source"]
        theirs = await rows(second)
        assert [r["notebook"] for r in theirs] == ["second.ipynb", "second.ipynb"]
        everything = await rows(first, "--all")
        assert sorted(r["notebook"] for r in everything) == ["first.ipynb", "second.ipynb", "second.ipynb"]
        text = ok(await in_thread(first.run, "%gpu history")).stdout
        assert "total cost of 1 cell(s)" in text
        text = ok(await in_thread(first.run, "%gpu history --all")).stdout
        assert "total cost of 3 cell(s)" in text
    finally:
        await stop_kernel(first)
        await stop_kernel(second)
    await wait_for_clusters(jp_fetch, lambda cs: cs == [], "a closed notebook's cluster kept running")


async def test_config_refuses_what_only_the_server_sets_and_applies_the_rest(jp_fetch, no_leaked_processes):
    kernel = await in_thread(start_kernel, "config.ipynb")
    try:
        ok(await in_thread(kernel.run, "%%gpu\nx = 1"))
        before = ok(await in_thread(kernel.run, "%gpu config")).stdout
        bad = await in_thread(kernel.run, "%gpu config idle-timeout=40s max-workers=1 worker.cpus=1")
        assert bad.status == "error"
        text = bad.error_text()
        assert "%gpu config max-workers: clusters here are started by the Jupyter server" in text
        assert "jupyter-elastic.max-workers" in text and "DASK_JUPYTER_ELASTIC__MAX_WORKERS" in text
        assert len(text.strip().splitlines()) == 1
        listed = ok(await in_thread(kernel.run, "%gpu config")).stdout
        assert listed == before, "refused as a whole: nothing was set"
        assert "only backend, idle-timeout, interrupt-grace, sync-packages apply" in listed
        ok(await in_thread(kernel.run, "%gpu config idle-timeout=40s interrupt-grace=3s"))
        (cluster,) = await clusters(jp_fetch)
        assert cluster["idle_timeout"] == 40.0, "idle-timeout reaches this notebook's cluster"
        # --memory is checked against the server's workers, not this kernel's configuration.
        bad = await in_thread(kernel.run, "%%gpu --memory 999GiB\nz = 1")
        assert bad.status == "error" and "is more than a worker of cluster" in bad.error_text()
        assert "%gpu config worker.memory" not in bad.error_text()
    finally:
        await stop_kernel(kernel)
    await wait_for_clusters(jp_fetch, lambda cs: cs == [], "a closed notebook's cluster kept running")
