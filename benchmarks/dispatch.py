"""Dispatch latency of ``%%gpu`` against bare Dask and ipyparallel, measured in one run.

Prints a table: warm round trip of a trivial cell (p50, p99) for

* ``%%gpu`` on the local backend (one CPU worker),
* bare ``client.submit(f).result()`` on a ``LocalCluster`` with one worker process,
* ipyparallel's ``%%px --block`` on one engine,

plus cold start from nothing to the first result, from zero workers (scheduler up) to the
first result, and the time from the last cell to zero workers beyond ``idle-timeout``.
All three run in this process's IPython shell, so each pays the same ``run_cell`` cost.

Usage: ``python benchmarks/dispatch.py [--rounds 300]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("DASK_CONFIG", tempfile.mkdtemp())
os.environ.setdefault("IPYTHONDIR", tempfile.mkdtemp())
os.environ.setdefault("JUPYTER_RUNTIME_DIR", tempfile.mkdtemp())
os.environ.setdefault("JUPYTER_DATA_DIR", tempfile.mkdtemp())
os.environ.setdefault("JUPYTER_CONFIG_DIR", tempfile.mkdtemp())
os.environ["DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT"] = "2s"
os.environ["DASK_JUPYTER_ELASTIC__MAX_WORKERS"] = "1"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return p50 * 1e3, p99 * 1e3


def time_cells(shell, cell: str, rounds: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        result = shell.run_cell(cell, silent=True)
        result.raise_error()
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        shell.run_cell(cell, silent=True)
        samples.append(time.perf_counter() - t)
    return samples


def bench_bare_dask(rounds: int) -> list[float]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:

        def inc(x: int) -> int:
            return x + 1

        for i in range(20):
            client.submit(inc, i, pure=False).result()
        samples = []
        for i in range(rounds):
            t = time.perf_counter()
            client.submit(inc, i, pure=False).result()
            samples.append(time.perf_counter() - t)
        return samples


def bench_ipyparallel(shell, rounds: int) -> list[float] | str:
    try:
        import ipyparallel as ipp
    except ImportError:
        return "ipyparallel not installed"
    cluster = ipp.Cluster(n=1, log_level=40)
    rc = cluster.start_and_connect_sync()
    try:
        rc.wait_for_engines(1, timeout=60)
        rc[:].activate()
        return time_cells(shell, "%%px --block\ny = 1\n", rounds)
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def bench_elastic(shell, rounds: int) -> tuple[list[float], float, float, float]:
    from jupyter_elastic.kernel.magics import _magics

    t = time.perf_counter()
    shell.run_cell("%%gpu\nfirst = 1\n", silent=True).raise_error()
    cold_from_nothing = time.perf_counter() - t
    samples = time_cells(shell, "%%gpu\ny = 1\n", rounds)
    session = _magics.session
    cp, cluster_id = session.control_plane, session.lease["cluster_id"]
    # Idle: time from the last cell to zero workers.
    last = time.perf_counter()
    while cp.cluster(cluster_id)["workers"] > 0:
        time.sleep(0.05)
    to_zero = time.perf_counter() - last
    t = time.perf_counter()
    shell.run_cell("%%gpu\nagain = 1\n", silent=True).raise_error()
    cold_from_zero = time.perf_counter() - t
    return samples, cold_from_nothing, cold_from_zero, to_zero


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()

    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "jupyter_elastic")
    import contextlib
    import io

    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
        elastic, cold_nothing, cold_zero, to_zero = bench_elastic(shell, args.rounds)
        bare = bench_bare_dask(args.rounds)
        px = bench_ipyparallel(shell, args.rounds)
    shell.run_line_magic("gpu", "stop --all")

    rows = [("%%gpu (jupyter-elastic, local backend)", elastic),
            ("client.submit(f).result() (bare Dask)", bare)]
    if isinstance(px, list):
        rows.append(("%%px --block (ipyparallel, 1 engine)", px))
    print(f"warm round trip of a trivial cell, {args.rounds} rounds, {os.cpu_count()} cores")
    print(f"{'what':42} {'p50 ms':>8} {'p99 ms':>8}")
    for name, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"{name:42} {p50:8.2f} {p99:8.2f}")
    if not isinstance(px, list):
        print(f"{'%%px --block':42} skipped: {px}")
    print()
    print(f"{'cold start, nothing running -> first result':52} {cold_nothing:6.2f} s")
    print(f"{'cold start, scheduler up, zero workers -> result':52} {cold_zero:6.2f} s")
    print(f"{'last cell -> zero workers (idle-timeout 2 s)':52} {to_zero:6.2f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
