"""Detached cells (``%%gpu --detach``), measured in one run on this machine.

Prints:

* how long a ``%%gpu --detach`` cell takes to return in a real kernel (p50 over a few),
* submit to ``done`` for a trivial detached cell (supervisor start, its embedded local
  cluster from nothing, one CPU worker, the store write, the cluster stopped),
* ``%gpu attach`` of a finished job holding one float64 array of ``--mb`` MB (read back
  from the default directory store and bound),
* the result store's own write and read rate for that array (``.npy``, in this process).

Usage: ``python benchmarks/jobs.py [--mb 200] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

for _var in ("DASK_CONFIG", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR"):
    os.environ.setdefault(_var, tempfile.mkdtemp())
os.environ["DASK_JUPYTER_ELASTIC__MAX_WORKERS"] = "1"
os.environ["DASK_JUPYTER_ELASTIC__WORKER__GPUS"] = "0"
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    from kernel_harness import Kernel

    from jupyter_elastic.controlplane.jobs import FINAL, JobRegistry
    from jupyter_elastic.execution.store import ResultStore

    def wait_final(job_id: str) -> None:
        while JobRegistry().get(job_id)["state"] not in FINAL:
            time.sleep(0.02)

    kernel = Kernel()
    try:
        returns, to_done, ids = [], [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            run = kernel.run("%%gpu --detach\ny = 1")
            returns.append(time.perf_counter() - t0)
            job_id = run.stdout.split()[1]
            wait_final(job_id)
            to_done.append(time.perf_counter() - t0)
            ids.append(job_id)
        n = args.mb * 2**20 // 8
        run = kernel.run(f"%%gpu --detach --name big\nimport numpy as np\nbig = np.arange({n}, dtype=np.float64)")
        wait_final(run.stdout.split()[1])
        t0 = time.perf_counter()
        attach = kernel.run("%gpu attach big")
        attach_s = time.perf_counter() - t0
        assert attach.status == "ok", attach.error_text()
    finally:
        kernel.shutdown()

    store = ResultStore(tempfile.mkdtemp())
    array = np.arange(n, dtype=np.float64)
    t0 = time.perf_counter()
    store.write_results("jbench", state="done", outputs={"a": array}, deleted=[], value=None, events=[], row={})
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.load("jbench", allow_pickle=False)
    read_s = time.perf_counter() - t0

    print(f"%%gpu --detach returns        p50 {statistics.median(returns) * 1e3:8.1f} ms  "
          f"(max {max(returns) * 1e3:.1f} ms, {args.rounds} rounds)")
    print(f"submit -> done (trivial cell)  p50 {statistics.median(to_done):8.2f} s   (max {max(to_done):.2f} s)")
    print(f"%gpu attach, {args.mb} MB array   {attach_s:8.2f} s")
    print(f"store .npy write {args.mb} MB        {write_s:8.2f} s  ({args.mb / write_s:.0f} MB/s)")
    print(f"store .npy read  {args.mb} MB        {read_s:8.2f} s  ({args.mb / read_s:.0f} MB/s)")


if __name__ == "__main__":
    main()
