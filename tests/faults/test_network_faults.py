"""The network between the kernel and its cluster's scheduler cut while a ``%%gpu`` cell runs.

Real processes: a kernel (control plane embedded, local backend), its scheduler and a
worker process, and a TCP proxy (``tcp_proxy.py``) in the test process between the
kernel's Dask client and the scheduler. The kernel is pointed at the proxy where it reads
the scheduler's address, the lease: a plain cell wraps its control plane's ``acquire`` so
the lease names the proxy (the real address goes to a file the proxy reads). Nothing else
in the kernel is changed; TLS and the client's own connection handling are the product's.

Two faults: a *cut*, where the proxy closes both sides of every connection and refuses new
ones (as a dropped VPN or a restarted router with resets does), and a *stall*, where every
connection stays open and nothing moves (a silent partition, as seen by the applications at
both ends). A real silent partition differs in one way: nobody acknowledges what the ends
send, so after ``distributed.comm.timeouts.tcp`` (30 s) their TCP stacks close the
connection; through the proxy they never do, which makes the stall the stricter test of the
kernel's own bounds. Dropping packets for real needs root.
"""

from __future__ import annotations

import time

import psutil
import pytest
from elastic_testing import wait_for
from kernel_harness import Kernel

from jupyter_elastic.protocol import IN_PROCESS_ADDRESS

from . import KERNEL_ENV as ENV
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.kernel


VIA_PROXY = """\
import pathlib as _pathlib
_session = get_ipython().magics_manager.registry['ElasticMagics'].session
_acquire = _session.control_plane.acquire
def _via_proxy(*args, **kwargs):
    lease = dict(_acquire(*args, **kwargs))
    _pathlib.Path({path!r}).write_text(lease['scheduler_address'])
    lease['scheduler_address'] = 'tls://127.0.0.1:{port}'
    # as a kernel beside a remote scheduler: over the network, not in-process
    lease['client'] = {{k: v for k, v in lease['client'].items() if k != {in_process!r}}}
    return lease
_session.control_plane.acquire = _via_proxy
del _session
"""


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def history(kernel):
    return kernel.value("get_ipython().run_line_magic('gpu', 'history --json')")


def kernel_via_proxy(tmp_path):
    """A kernel whose client reaches its scheduler through a proxy, after one cell that
    started the cluster; and the number of history rows by then."""
    address_file = tmp_path / "scheduler-address"

    def target():
        host_port = address_file.read_text().split("://", 1)[1]
        host, port = host_port.rsplit(":", 1)
        return host, int(port)

    proxy = TcpProxy(target)
    kernel = Kernel(env=ENV)
    try:
        setup = kernel.run(VIA_PROXY.format(path=str(address_file), port=proxy.port,
                                             in_process=IN_PROCESS_ADDRESS))
        assert setup.status == "ok", setup.error_text()
        warm = kernel.run("%%gpu\nwarm = 1", timeout=120)
        assert warm.status == "ok", warm.error_text()
        assert proxy.accepted >= 1, "the kernel's client reaches the scheduler through the proxy"
    except BaseException:
        kernel.shutdown()
        proxy.close()
        raise
    return kernel, proxy, len(history(kernel))


def test_network_to_the_scheduler_cut_mid_cell(tmp_path, no_leaked_processes):
    kernel, proxy, rows_before = kernel_via_proxy(tmp_path)
    try:

        cut = []

        def on_message(msg):
            if not cut and msg["msg_type"] == "stream" and "pid=" in msg["content"]["text"]:
                cut.append(1)
                proxy.cut()

        # Nothing but the cut ends this cell: its own bound is far past the harness's.
        run = kernel.collect(kernel.submit(
            "%%gpu\nimport os, time\nprint(f'pid={os.getpid()}', flush=True)\n"
            "time.sleep(600)\nnever = 1"), timeout=120, on_message=on_message)
        assert cut, run.stdout
        text = run.error_text()
        assert run.status == "error", text
        assert len(run.error["traceback"]) == 1 and "WorkerLost" in text, text
        assert "lost the connection to the cluster's scheduler while the cell ran" in text, text
        assert "outcome is unknown" in text and "not re-run" in text, text
        for noise in ("Traceback", "distributed.", "CommClosedError", "KeyboardInterrupt"):
            assert noise not in text and noise not in run.stderr, (noise, text, run.stderr)
        assert kernel.value("'never' in globals()") is False
        rows = history(kernel)[rows_before:]
        assert [r["status"] for r in rows] == ["error"], rows
        assert "lost the connection" in rows[0]["error"], rows

        # The cell still runs on its worker (Dask cannot stop a thread, and the kernel could
        # not reach the worker to stop it) and holds the only worker's slot.
        orphan = psutil.Process(int(run.stdout.split("pid=")[1].split()[0]))
        assert orphan.is_running()

        # The network comes back: the next cell on the same cluster first stops the lost
        # cell (it sleeps in C: its worker is restarted after interrupt-grace), then runs.
        proxy.restore()
        after = kernel.run("%%gpu\nafter = 41 + 1", timeout=120)
        assert after.status == "ok", after.error_text()
        assert "whose connection to the scheduler was lost, was still running" in after.stderr
        assert "worker was restarted" in after.stderr, after.stderr
        wait_for(lambda: not orphan.is_running(), timeout=10, what="the lost cell's worker to exit")
        for noise in ("Traceback", "distributed.", "CommClosedError"):
            assert noise not in after.stderr + after.stdout, (noise, after.stderr)
        assert kernel.value("after") == 42
        assert [r["status"] for r in history(kernel)[rows_before:]] == ["error", "ok"]
    finally:
        kernel.shutdown()
        proxy.close()


def test_network_to_the_scheduler_silent_mid_cell(tmp_path, no_leaked_processes):
    """Nothing reaches the scheduler and nothing comes back, and no connection breaks:
    ``--timeout`` still ends the cell with one line, the worker is freed
    (killed by pid: this machine), and once the network moves again the next cell runs."""
    kernel, proxy, rows_before = kernel_via_proxy(tmp_path)
    try:
        stalled = []

        def on_message(msg):
            if not stalled and msg["msg_type"] == "stream" and "pid=" in msg["content"]["text"]:
                stalled.append(time.monotonic())
                proxy.stall()

        began = time.monotonic()
        run = kernel.collect(kernel.submit(
            "%%gpu --timeout 8s\nimport os, time\nprint(f'pid={os.getpid()}', flush=True)\n"
            "time.sleep(600)\nnever = 1"), timeout=120, on_message=on_message)
        assert stalled, run.stdout
        # a precondition, not a measure: the network went silent before --timeout ran out,
        # so the whole stop met it (how long a stop takes is the soak's figure, not a test's)
        assert stalled[0] - began < 8 - 0.5, stalled[0] - began
        text = run.error_text()
        assert run.status == "error", text
        assert len(run.error["traceback"]) == 1 and "--timeout 8s" in text, text
        for noise in ("Traceback", "distributed.", "CommClosedError", "KeyboardInterrupt"):
            assert noise not in text and noise not in run.stderr, (noise, text, run.stderr)
        assert kernel.value("'never' in globals()") is False
        # the scheduler could not be asked: the worker was killed by its pid
        pid = int(run.stdout.split("pid=")[1].split()[0])
        wait_for(lambda: gone(pid), timeout=10, what=f"the stopped cell's worker to exit ({text})")
        assert "its worker was restarted to free the GPU" in text, text

        proxy.resume()
        after = kernel.run("%%gpu\nafter = 41 + 1", timeout=120)
        assert after.status == "ok", after.error_text()
        for noise in ("Traceback", "distributed.", "CommClosedError"):
            assert noise not in after.stderr + after.stdout, (noise, after.stderr)
        assert kernel.value("after") == 42
        rows = history(kernel)[rows_before:]
        assert [r["status"] for r in rows] == ["timeout", "ok"], rows
    finally:
        kernel.shutdown()
        proxy.close()
