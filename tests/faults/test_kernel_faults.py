"""Faults of the kernel itself: stopped (SIGSTOP) past its lease's time to live; and its
plain shutdown, which stops every process the kernel started."""

from __future__ import annotations

import os
import signal
import time

import pytest
from kernel_harness import Kernel

pytestmark = pytest.mark.kernel


def test_a_kernel_stopped_past_its_lease_ttl_carries_on_after_sigcont(no_leaked_processes):
    kernel = Kernel(env={"DASK_JUPYTER_ELASTIC__LEASE_TTL": "2s",
                         "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "60s",
                         "DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1"})
    try:
        run = kernel.run("%%gpu\nkept = 5", timeout=90)
        assert run.status == "ok", run.error_text()
        os.kill(kernel.pid, signal.SIGSTOP)
        try:
            time.sleep(4)  # twice the lease's time to live
        finally:
            os.kill(kernel.pid, signal.SIGCONT)
        after = kernel.run("%%gpu\nafter_stop = kept + 1", timeout=120)
        assert after.status == "ok", after.error_text()
        assert "Traceback" not in after.stderr and "distributed." not in after.stderr, after.stderr
        assert kernel.value("(kept, after_stop)") == (5, 6)
        rows = kernel.value("[r['status'] for r in get_ipython().run_line_magic('gpu', 'history --json')]")
        assert rows == ["ok", "ok"], rows
    finally:
        kernel.shutdown()


def test_a_shut_down_kernel_closes_its_cluster_before_its_processes_are_stopped(tmp_path,
                                                                              no_leaked_processes):
    # ipykernel stops every child process of the kernel while it handles the shutdown
    # request, before the interpreter's exit: the local workers and their fork server. The
    # cluster used to be closed only at the exit, after that: its nannies tried to restart
    # killed workers (tracebacks in the kernel's log, which a Jupyter server keeps), and the
    # kernel waited on its fork server and resource tracker for 29 s. Jupyter's own
    # shutdown (shutdown_kernel, as here) sends the process group SIGTERM when the kernel
    # has not exited by half its shutdown_wait_time: the kernel must have exited by itself.
    log = tmp_path / "kernel.log"
    with open(log, "w") as stderr:
        kernel = Kernel(env={"DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1"}, stderr=stderr)
        process = kernel.km.provisioner.process
        try:
            run = kernel.run("%%gpu\nx = 1", timeout=90)
            assert run.status == "ok", run.error_text()
            kernel.kc.stop_channels()
            # Jupyter's default wait (5 s, SIGTERM at half of it) made generous, so that a
            # loaded machine's slower close is not mistaken for the 29 s wait this is about
            kernel.km.shutdown_wait_time = 30.0
            kernel.km.shutdown_kernel(now=False)
        finally:
            if kernel.km.is_alive():
                kernel.km.shutdown_kernel(now=True)
            kernel.km.cleanup_resources()
    assert process.wait(timeout=10) == 0, "the kernel was signalled: it had not exited by itself"
    text = log.read_text()
    for noise in ("Traceback", "EOFError", "Failed to restart worker", "ERROR", "CRITICAL"):
        assert noise not in text, text[-3000:]
