"""The local backend's cluster (backends/local.py) when its workers are killed and restarted."""
from __future__ import annotations

import asyncio
import logging
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import time

import dask.config
from elastic_testing import async_wait_for

from jupyter_elastic.backends.local import ElasticLocalCluster, _ForkedNanny
from jupyter_elastic.controlplane.cells import kill_local
from jupyter_elastic.models import client_address
from jupyter_elastic.protocol import IN_PROCESS_ADDRESS


def _named(cluster, name):
    return [a for a, ws in cluster.scheduler.workers.items() if ws.name == name]


def test_a_healed_loss_does_not_close_the_nanny_of_a_later_restart(no_leaked_processes):
    # A stop kills the cell's worker and tells the scheduler to drop it; the nanny restarts
    # it under the same name. Dask's cluster closed a worker's nanny when a worker of that
    # name was absent lost-worker-timeout after *any* earlier loss, though one had come back
    # in between: with two stops a few seconds apart, the first loss's timer closed the
    # nanny in the middle of the second restart (killing the worker just given the next
    # cell) and a new nanny was refused by the scheduler ("name taken"). The fork server is
    # held still during the second restart so that the first timer fires in that window.
    timeout = 8.0

    async def main():
        with dask.config.set({"distributed.deploy.lost-worker-timeout": f"{timeout}s"}):
            cluster = await ElasticLocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, asynchronous=True, silence_logs=logging.ERROR,
                worker_class=_ForkedNanny,
            )
            fork_server = None
            try:
                nanny = cluster.workers[0]

                async def lose_worker():
                    (address,) = await async_wait_for(lambda: _named(cluster, 0), "worker 0")
                    os.kill(nanny.process.process.pid, signal.SIGKILL)
                    await cluster.scheduler.remove_worker(address, stimulus_id="test-kill",
                                                          close=False)
                    return address

                first = await lose_worker()
                lost_at = time.monotonic()
                await async_wait_for(lambda: [a for a in _named(cluster, 0) if a != first],
                                     "the restarted worker", timeout=timeout - 1.0)
                await asyncio.sleep(max(0.0, lost_at + timeout - 0.5 - time.monotonic()))
                fork_server = multiprocessing.forkserver._forkserver._forkserver_pid
                assert fork_server
                os.kill(fork_server, signal.SIGSTOP)  # the next restart waits for its fork
                await lose_worker()
                # the first loss's timer fires about `timeout` after the scheduler's remove
                # message arrives (a little after lost_at), the second's not before
                # lost_at + 2 * timeout - 0.5: release the restart between the two, with
                # several seconds for it to finish before the second
                await asyncio.sleep(max(0.0, lost_at + timeout + 1.5 - time.monotonic()))
                assert not _named(cluster, 0)  # still restarting when the first timer fired
                os.kill(fork_server, signal.SIGCONT)
                fork_server = None
                await async_wait_for(lambda: _named(cluster, 0), "the worker back", timeout=20)
                assert cluster.workers.get(0) is nanny, "the nanny was closed mid-restart"
                from distributed import Client

                async with Client(cluster, asynchronous=True) as client:
                    assert await client.submit(lambda: 41 + 1) == 42
            finally:
                if fork_server:
                    os.kill(fork_server, signal.SIGCONT)
                await cluster.close()

    asyncio.run(main())


def test_a_forked_worker_is_killed_by_pid_and_nothing_else_is(no_leaked_processes):
    # A stop whose cell does not stop kills its worker by pid when the worker is on this
    # machine, without asking the scheduler (which a silent network does not answer). The
    # pid is checked first: it must be the process listening on the worker's address.
    # Workers forked from the fork server were always refused (their /proc environment is
    # the fork server's), so every kill needed the scheduler.
    async def main():
        cluster = await ElasticLocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None, asynchronous=True, silence_logs=logging.ERROR,
            worker_class=_ForkedNanny,
        )
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            (address,) = await async_wait_for(lambda: _named(cluster, 0), "worker 0")
            pid = cluster.workers[0].process.process.pid
            other_port = address.rsplit(":", 1)[0] + ":1"
            assert kill_local(address, bystander.pid) is False  # not the worker there
            assert kill_local(other_port, pid) is False  # the worker, not at that address
            assert kill_local("tls://10.1.2.3:" + address.rsplit(":", 1)[1], pid) is False
            assert bystander.poll() is None and cluster.workers[0].process.process.is_alive()
            assert kill_local(address, pid) is True
            await async_wait_for(lambda: [a for a in _named(cluster, 0) if a != address],
                                 "the nanny's new worker", timeout=30)
        finally:
            bystander.kill()
            bystander.wait()
            await cluster.close()

    asyncio.run(main())


def test_the_in_process_address_is_used_only_in_the_process_it_names():
    tls = "tls://127.0.0.1:4001"
    here = f"inproc://192.0.2.2/{os.getpid()}/3"
    lease = {"scheduler_address": tls, "client": {"tls_ca": "...", IN_PROCESS_ADDRESS: here}}
    assert client_address(lease) == here
    # a lease handed to another process (a server-hosted control plane's kernel), a
    # malformed address, or none at all: the scheduler's network address
    for other in (f"inproc://192.0.2.2/{os.getpid() + 1}/3", f"inproc://{os.getpid()}",
                  f"tcp://127.0.0.1/{os.getpid()}/3", None, 7):
        assert client_address({**lease, "client": {IN_PROCESS_ADDRESS: other}}) == tls, other
    assert client_address({"scheduler_address": tls, "client": None}) == tls
