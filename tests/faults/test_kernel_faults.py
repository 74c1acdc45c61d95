"""Faults of the kernel itself: stopped (SIGSTOP) past its lease's time to live."""

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
