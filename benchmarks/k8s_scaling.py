"""Scaling with the real Dask operator: start -> first worker, idle -> zero, zero -> cell.

The real dask-kubernetes operator (kopf running ``dask_kubernetes.operator.controller``)
reconciles the project's DaskCluster and DaskAutoscaler on the tests' API server double,
with the process kubelet running each pod as a local process (``tests/k8s/realop.py``);
the project's ``KubernetesBackend`` drives it through ``ElasticClusterManager``, as a
notebook's control plane does. Per run it measures:

* **start -> first worker**: ``acquire`` of a new cluster until the scheduler and the first
  worker are up (the backend waits for that worker);
* **first cell**: a ``GPU=1`` task on that worker, submit to result;
* **idle -> zero**: from the end of the last cell until the operator's autoscaler has
  deleted the idle worker (``idle-timeout`` is part of it: the preload keeps the worker that
  long; the rest is the operator's 5 s timer and the retirement);
* **zero -> cell running**: a cell on the empty cluster, from ``cell_started`` until its
  result, with the project's ``wake`` (the worker group set to 1 replica at once), and
  ``--compare`` also without it (the operator's autoscaler alone, which sets a 15 s
  cooldown on every change it makes, the scale-down to zero included).

Usage: ``python benchmarks/k8s_scaling.py [--runs 3] [--idle-timeout 2] [--compare] [--quick]``
(``--quick``: one run, no comparison). Skips (exit 0, with a line) when kopf is missing.
Images, pulls and node start-up are not part of it: the kubelet starts local processes.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("DASK_CONFIG", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR",
             "JUPYTER_CONFIG_DIR", "MPLCONFIGDIR"):
    os.environ.setdefault(_var, tempfile.mkdtemp(prefix="k8s-scaling-"))
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.k8s.realop import KOPF, RealOperator  # noqa: E402


def settings(idle_timeout: float) -> Any:
    from jupyter_elastic.config import load_settings

    return load_settings({
        "backend": "kubernetes", "idle-timeout": f"{idle_timeout:g}s", "shutdown-after": "20m",
        "lease-ttl": "5m", "max-workers": 1, "worker": {"gpus": 1, "cpus": 1, "memory": "2GiB"},
        "kubernetes": {"image": "registry.example/elastic-notebook:1.0", "namespace": "jhub",
                       "scheduler-service-type": "LoadBalancer", "start-timeout": "240s",
                       "connect-timeout": "10s"},
    })


async def one_run(run: int, idle_timeout: float, compare: bool) -> dict[str, float]:
    from distributed import Client

    from jupyter_elastic.controlplane.manager import ElasticClusterManager
    from jupyter_elastic.models import client_security
    from jupyter_elastic.protocol import CELL_PREFIX

    manager = ElasticClusterManager(settings(idle_timeout), owner="bench", tick=0.2)
    await manager.start()
    found: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        lease = await manager.acquire(f"bench-{run}", backend="kubernetes")
        found["start -> first worker"] = time.monotonic() - t0
        lid, secret = lease["lease_id"], lease["lease_secret"]
        async with Client(lease["scheduler_address"], asynchronous=True,
                          security=client_security(lease["client"])) as client:

            async def workers() -> int:
                return len((await client.scheduler.identity())["workers"])

            async def cell(key: str) -> float:  # keyed as %%gpu cells are: the preload counts them
                t = time.monotonic()
                manager.cell_started(lid, secret)
                assert await client.submit(operator.mul, 6, 7, key=key, resources={"GPU": 1}) == 42
                manager.cell_finished(lid, secret, {
                    "id": key, "cell": 1, "started": "2026-01-01T00:00:00+00:00",
                    "backend": "kubernetes", "cluster_id": lease["cluster_id"], "worker": None,
                    "device": "gpu", "seconds": 0.0, "compute_seconds": 0.0, "gpus": 1.0,
                    "status": "ok"})
                return time.monotonic() - t

            async def to_zero() -> float:
                t = time.monotonic()
                while await workers():
                    if time.monotonic() - t > 180:
                        raise RuntimeError("the operator did not scale to zero within 180 s")
                    await asyncio.sleep(0.1)
                return time.monotonic() - t

            found["first cell"] = await cell(f"{CELL_PREFIX}-{run}-1")
            found["idle -> zero"] = await to_zero()
            found["zero -> cell (wake)"] = await cell(f"{CELL_PREFIX}-{run}-2")
            if compare:
                record = manager.find(lease["cluster_id"])
                backend = manager.backend(record.backend)
                await to_zero()
                wake = backend.wake

                async def no_wake(handle: Any) -> None:
                    return None

                backend.wake = no_wake  # type: ignore[method-assign]
                try:
                    found["zero -> cell (autoscaler only)"] = await cell(f"{CELL_PREFIX}-{run}-3")
                finally:
                    backend.wake = wake  # type: ignore[method-assign]
    finally:
        await manager.close_all("benchmark over")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-timeout", type=float, default=2.0)
    parser.add_argument("--compare", action="store_true",
                        help="also measure zero -> cell without wake (the autoscaler alone)")
    parser.add_argument("--quick", action="store_true", help="one run, no comparison")
    args = parser.parse_args()
    if not KOPF:
        print("kopf is not installed (pip install kopf): the real operator cannot run; skipped")
        return 0
    runs = 1 if args.quick else args.runs
    compare = args.compare and not args.quick
    op = RealOperator()
    t0 = time.monotonic()
    op.start()
    started = time.monotonic() - t0
    os.environ["KUBECONFIG"] = op.kubeconfig
    from tests.k8s.kubelet import install_resolver

    results: list[dict[str, float]] = []
    try:
        with install_resolver(op.kubelet):
            for run in range(runs):
                results.append(asyncio.run(one_run(run, args.idle_timeout, compare)))
                print(f"run {run + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in results[-1].items()),
                      flush=True)
    except BaseException:
        print("the operator's last log lines:\n" + op.log()[-4000:], file=sys.stderr)
        raise
    finally:
        op.stop()
    print(f"\nreal Dask operator (kopf, dask-kubernetes), {runs} run(s), idle-timeout "
          f"{args.idle_timeout:g}s; kopf started watching in {started:.1f}s\n")
    print("| what | " + " | ".join(f"run {i + 1}" for i in range(runs)) + " | median | spread |")
    print("|---|" + "---:|" * (runs + 2))
    for what in results[0]:
        values = [r[what] for r in results]
        print(f"| {what} | " + " | ".join(f"{v:.1f}" for v in values)
              + f" | {statistics.median(values):.1f} | {max(values) - min(values):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
