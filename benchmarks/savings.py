"""GPU-seconds saved by scaling to zero, replayed through the project's own control plane.

Notebook activity traces (when a user runs a cell, how long it computes) are replayed on an
injected clock — nothing sleeps — through the real ``ElasticClusterManager`` and its
``Reaper`` (leases, metering, ``shutdown-after``) and the real scaling policy of
``backends/scheduling.py`` (``CellActivity``, ``IdleGuard``, ``cell_workers_needed``). The
only stand-in is the backend: a double that starts no process and only models start-up
delays (``--cluster-start`` for a scheduler, ``--worker-start`` for a GPU worker), stepping
its autoscaler once a second as Dask's ``Adaptive`` does.

Compared per trace, one GPU per worker, one cluster per notebook:

* always-on: one worker per notebook from the trace's start to its end;
* fixed idle cullers: the whole cluster is stopped after 20 minutes (Coiled's default) or
  60 minutes (zero-to-jupyterhub's ``cull.timeout`` default) without a cell, and the next
  cell waits for a cluster and a worker (computed from the same trace, not simulated);
* jupyter-elastic at ``--idle-timeouts`` (the summary lines: its default idle-timeout).

Trace families (seeded; parameters in :data:`FAMILIES`): ``bursty`` exploration, long
``training`` cells, a ``class`` of 30 users hitting run-all together, ``overnight`` idle.
``--history FILE`` replays ``%gpu history --json`` output instead (or as well).

Usage: ``python benchmarks/savings.py [--quick] [--history FILE] [--plot docs/savings.png]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import random
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from jupyter_elastic.backends.base import ClusterHandle, ElasticBackend
from jupyter_elastic.backends.scheduling import CellActivity, IdleGuard, cell_workers_needed
from jupyter_elastic.config import Settings
from jupyter_elastic.controlplane.manager import ElasticClusterManager
from jupyter_elastic.models import WorkerDetail, new_id
from jupyter_elastic.protocol import CELL_PREFIX, GPU_RESOURCE

STEP = 1.0  # seconds between autoscaler/reaper steps (Dask's Adaptive interval is 1 s)

#: Documented trace families: every parameter that shapes them.
FAMILIES: dict[str, dict[str, Any]] = {
    # One user exploring for a working day: bursts of short cells with think time between,
    # long breaks between bursts (reading, meetings).
    "bursty": {"users": 1, "hours": 8, "burst_cells": (5, 30), "think_mean_s": 40,
               "cell_median_s": 5, "cell_sigma": 1.0, "break_mean_min": 25},
    # One user training: long cells, with inspection pauses between them.
    "training": {"users": 1, "hours": 8, "cell_min": (20, 90), "pause_min": (5, 40)},
    # A class of 30: everyone hits run-all (10 cells back to back) at 10, 40 and 70 min,
    # within 30 s of each other; a few cells of their own in between; 2 hours.
    "class": {"users": 30, "hours": 2, "run_all_at_min": (10, 40, 70), "run_all_cells": 10,
              "cell_s": (2, 10), "jitter_s": 30, "own_cells": 6},
    # One user: an evening session, the notebook left open overnight, a morning session.
    "overnight": {"users": 1, "hours": 16, "evening_cells": 20, "morning_at_h": 15,
                  "morning_cells": 10, "think_mean_s": 60, "cell_median_s": 8},
}


@dataclass
class Trace:
    name: str
    end: float  # seconds
    #: per notebook: (time the user runs the cell, compute seconds), in order
    notebooks: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def make_trace(family: str, seed: int) -> Trace:
    p, rng = FAMILIES[family], random.Random(seed)
    end = p["hours"] * 3600.0
    trace = Trace(family, end)
    if family == "bursty":
        t, cells = rng.expovariate(1 / 600), []
        while t < end:
            for _ in range(rng.randint(*p["burst_cells"])):
                d = min(_lognormal(rng, p["cell_median_s"], p["cell_sigma"]), 600)
                cells.append((t, d))
                t += d + rng.expovariate(1 / p["think_mean_s"])
            t += rng.expovariate(1 / (p["break_mean_min"] * 60))
        trace.notebooks["nb0"] = [c for c in cells if c[0] < end]
    elif family == "training":
        t, cells = rng.uniform(60, 900), []
        while t < end:
            d = rng.uniform(*p["cell_min"]) * 60
            cells.append((t, d))
            t += d + rng.uniform(*p["pause_min"]) * 60
        trace.notebooks["nb0"] = cells
    elif family == "class":
        for u in range(p["users"]):
            cells = []
            for at in p["run_all_at_min"]:
                t = at * 60 + rng.uniform(0, p["jitter_s"])
                for _ in range(p["run_all_cells"]):
                    cells.append((t, rng.uniform(*p["cell_s"])))
                    t += 0.0  # run-all: the next cell is queued at once
            for _ in range(p["own_cells"]):
                cells.append((rng.uniform(0, end - 600), rng.uniform(*p["cell_s"])))
            trace.notebooks[f"student{u:02d}"] = sorted(cells)
    elif family == "overnight":
        cells, t = [], rng.uniform(0, 600)
        for _ in range(p["evening_cells"]):
            d = _lognormal(rng, p["cell_median_s"], 1.0)
            cells.append((t, d))
            t += d + rng.expovariate(1 / p["think_mean_s"])
        t = p["morning_at_h"] * 3600.0
        for _ in range(p["morning_cells"]):
            d = _lognormal(rng, p["cell_median_s"], 1.0)
            cells.append((t, d))
            t += d + rng.expovariate(1 / p["think_mean_s"])
        trace.notebooks["nb0"] = cells
        trace.end = max(end, t + 60)
    return trace


def history_trace(path: str) -> Trace:
    """A trace from ``%gpu history --json`` rows: each notebook's cells at their start
    times, computing for their ``compute_seconds``."""
    with open(path) as f:
        rows = json.load(f)
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected the JSON list that `%gpu history --json` writes")
    starts = [dt.datetime.fromisoformat(r["started"]).timestamp() for r in rows]
    t0 = min(starts, default=0.0)
    trace = Trace(os.path.basename(path), 0.0)
    for row, start in zip(rows, starts, strict=False):
        nb = row.get("notebook") or "notebook"
        cell = (start - t0, float(row.get("compute_seconds") or row.get("seconds") or 0.0))
        trace.notebooks.setdefault(nb, []).append(cell)
        trace.end = max(trace.end, cell[0] + cell[1] + 60)
    for cells in trace.notebooks.values():
        cells.sort()
    return trace


# ------------------------------------------------------------------------- the backend double
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SimCluster:
    """What a Dask cluster looks like to the policy: scheduler tasks, workers, an adaptive."""

    def __init__(self, clock: Clock) -> None:
        self.scheduler = SimpleNamespace(tasks={})
        self.activity = CellActivity(clock)
        self.guard: IdleGuard | None = None
        self.bounds = (0, 0)
        self.fixed: int | None = None
        self.ready: list[str] = []
        self.joined: dict[str, float] = {}  # worker -> when it joined
        self.pending: list[float] = []  # ready-at times of starting workers
        self.busy: set[str] = set()  # workers running a cell
        self.cold_starts = 0


class SimBackend(ElasticBackend):
    """Starts nothing: models a scheduler's and a worker's start-up delay in clock time."""

    name = "local"

    def __init__(self, settings: Settings, clock: Clock, cluster_start: float,
                 worker_start: float) -> None:
        super().__init__(settings)
        self.clock, self.cluster_start, self.worker_start = clock, cluster_start, worker_start
        self.clusters: list[SimCluster] = []

    async def start(self, spec: Any, progress: Any) -> ClusterHandle:
        cluster = SimCluster(self.clock)
        self.clusters.append(cluster)
        progress("scheduler", "simulated")
        return ClusterHandle(spec.name or new_id(), "sim://", has_gpu=True, cluster=cluster,
                             extra={"max_workers": spec.max_workers})

    async def scale(self, handle: ClusterHandle, n: int) -> None:
        handle.cluster.fixed = n

    async def adapt(self, handle: ClusterHandle, minimum: int, maximum: int,
                    idle_timeout: float) -> None:
        c = handle.cluster
        c.fixed, c.bounds = None, (minimum, maximum)
        c.guard = IdleGuard(c.activity, idle_timeout)

    async def wake(self, handle: ClusterHandle) -> None:
        c = handle.cluster
        if not c.ready and not c.pending:
            self._start_worker(c)

    def _start_worker(self, c: SimCluster) -> None:
        c.pending.append(self.clock() + self.worker_start)
        c.cold_starts += 1

    async def close(self, handle: ClusterHandle) -> None:
        handle.cluster.ready, handle.cluster.pending = [], []

    async def workers(self, handle: ClusterHandle) -> list[WorkerDetail]:
        return [WorkerDetail(name=w, gpus=1.0, memory=0) for w in handle.cluster.ready]

    def step(self, c: SimCluster) -> None:
        """Workers that finished starting join; then one step of the adaptive policy (the
        target covers the cells' GPU demand; nobody retires before the idle guard says)."""
        now = self.clock()
        for at in [a for a in c.pending if a <= now]:
            c.pending.remove(at)
            worker = new_id("w-")
            c.ready.append(worker)
            c.joined[worker] = at
        if c.fixed is not None:
            target = c.fixed
        else:
            low, high = c.bounds
            target = min(high, max(low, cell_workers_needed(c.scheduler, GPU_RESOURCE, 1.0)))
        live = len(c.ready) + len(c.pending)
        if target > live:
            for _ in range(target - live):
                self._start_worker(c)
        elif live > target and c.fixed is None and c.guard is not None and c.guard.may_retire():
            idle = [w for w in c.ready if w not in c.busy]
            for w in idle[: live - target]:
                c.ready.remove(w)


# ------------------------------------------------------------------------- replay
@dataclass
class Outcome:
    policy: str
    gpu_seconds: float
    idle_gpu_seconds: float
    cold_starts: int
    latencies: list[float]
    series: list[tuple[float, float]]  # (time, cumulative GPU-seconds)

    def p(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def replay_elastic(trace: Trace, idle_timeout: float, args: argparse.Namespace) -> Outcome:
    """The trace through the real manager, reaper and scaling policy on an injected clock."""
    clock = Clock()
    settings = Settings(idle_timeout=idle_timeout, shutdown_after=args.shutdown_after,
                        lease_ttl=120.0, max_workers=4)
    manager = ElasticClusterManager(settings, owner="sim", clock=clock)
    backend = SimBackend(settings, clock, args.cluster_start, args.worker_start)
    manager._backends["local"] = backend  # the double in place of processes
    queues = {nb: list(cells) for nb, cells in trace.notebooks.items()}
    state: dict[str, dict[str, Any]] = {nb: {"lease": None, "cell": None, "free_at": 0.0}
                                        for nb in queues}
    latencies: list[float] = []
    series: list[tuple[float, float]] = []
    sample_every = max(STEP, trace.end / 400)
    next_sample = 0.0
    cluster_ready: dict[str, float] = {}
    while clock.now <= trace.end:
        for nb, st in state.items():
            cell = st["cell"]
            if cell is not None and cell.get("end") is not None and clock.now >= cell["end"]:
                c = cell["cluster"]
                c.scheduler.tasks.pop(cell["key"], None)
                c.busy.discard(cell["worker"])
                c.activity.transition(cell["key"], "processing", "memory")
                manager.cell_finished(cell["lease_id"], cell["lease_secret"], {
                    "id": new_id("cell-"), "cell": None, "started": "2026-01-01T00:00:00+00:00",
                    "backend": "local", "cluster_id": cell["cluster_id"], "worker": cell["worker"],
                    "device": "gpu", "seconds": clock.now - cell["submitted"],
                    "compute_seconds": cell["duration"], "gpus": 1.0, "cpus": 0.0,
                    "status": "ok", "error": None, "source": "", "notebook": nb,
                    "cached_inputs": []})
                st["cell"], st["free_at"] = None, cell["end"]
            queue = queues[nb]
            if st["cell"] is None and queue and queue[0][0] <= clock.now:
                submitted, duration = queue.pop(0)
                lease = st["lease"]
                if lease is None or manager._clusters.get(lease["cluster_id"]) is None:
                    lease = st["lease"] = await manager.acquire(nb, backend="local")
                    cluster_ready[lease["cluster_id"]] = clock.now + args.cluster_start
                record = manager._clusters[lease["cluster_id"]]
                c = record.handle.cluster
                key = f"{CELL_PREFIX}-{new_id('c')}"
                c.scheduler.tasks[key] = SimpleNamespace(state="no-worker",
                                                         resource_restrictions={GPU_RESOURCE: 1.0})
                c.activity.transition(key, "released", "no-worker")
                manager.cell_started(lease["lease_id"], lease["lease_secret"])
                await asyncio.sleep(0)  # the manager's wake() runs, as on its loop
                # Added latency counts from when the cell could have started on an always-on
                # worker: its submission, or the end of the notebook's previous cell.
                st["cell"] = {"key": key, "cluster": c, "cluster_id": record.id, "worker": None,
                              "lease_id": lease["lease_id"], "lease_secret": lease["lease_secret"],
                              "submitted": max(submitted, st["free_at"]), "duration": duration,
                              "end": None}
        # The autoscalers' step, then cells that found a worker start computing.
        for record in manager.records():
            if record.handle is None or clock.now < cluster_ready.get(record.id, 0.0):
                continue
            backend.step(record.handle.cluster)
        for st in state.values():
            cell = st["cell"]
            if cell is None or cell["end"] is not None:
                continue
            c = cell["cluster"]
            free = [w for w in c.ready if w not in c.busy]
            if free:
                cell["worker"] = free[0]
                c.busy.add(free[0])
                c.scheduler.tasks[cell["key"]].state = "processing"
                start = max(cell["submitted"], c.joined.get(free[0], 0.0))
                cell["end"] = start + cell["duration"]
                latencies.append(max(0.0, start - cell["submitted"]))
        for lease_state in state.values():
            if lease_state["lease"] is not None:
                manager.heartbeat(lease_state["lease"]["lease_id"], lease_state["lease"]["lease_secret"])
        await manager.reap_once()
        if clock.now >= next_sample:
            series.append((clock.now, manager.usage()["clusters"]["gpu_seconds"]))
            next_sample += sample_every
        # The next step: one STEP on, or sooner when a cell is run or ends before that (so
        # a cell is submitted, and wakes a worker, at its own time).
        upcoming = [q[0][0] for q in queues.values() if q and q[0][0] > clock.now]
        upcoming += [st["cell"]["end"] for st in state.values()
                     if st["cell"] is not None and st["cell"]["end"] is not None
                     and st["cell"]["end"] > clock.now]
        clock.now = min([clock.now + STEP, *upcoming])
    usage = manager.usage()["clusters"]
    cold = sum(c.cold_starts for c in backend.clusters)
    await manager.close_all("end of trace")
    series.append((clock.now, manager.usage()["clusters"]["gpu_seconds"]))
    return Outcome(f"elastic {idle_timeout:g}s", usage["gpu_seconds"], usage["idle_seconds"],
                   cold, latencies, series)


def replay_culler(trace: Trace, timeout: float, args: argparse.Namespace) -> Outcome:
    """A fixed idle culler: the whole cluster stops ``timeout`` after the last cell ended;
    the next cell waits for a cluster and a worker. One worker per notebook while up."""
    cold_delay = args.cluster_start + args.worker_start
    intervals, latencies, cold = [], [], 0
    for cells in trace.notebooks.values():
        up_since, up_until, free_at = None, -math.inf, 0.0
        for submitted, duration in cells:
            start = ready = max(submitted, free_at)
            if start > up_until:  # culled (or never started): a cold start
                if up_since is not None:
                    intervals.append((up_since, up_until))
                cold += 1
                up_since = start
                start += cold_delay
            latencies.append(start - ready)
            free_at = start + duration
            up_until = free_at + timeout
        if up_since is not None:
            intervals.append((up_since, min(up_until, trace.end)))
    return _from_intervals(f"culler {timeout / 60:g} min", intervals, latencies, cold, trace)


def replay_always_on(trace: Trace) -> Outcome:
    intervals = [(0.0, trace.end) for _ in trace.notebooks]
    busy = [0.0]
    latencies = []
    for cells in trace.notebooks.values():
        free_at = 0.0
        for submitted, duration in cells:
            start = max(submitted, free_at)
            latencies.append(0.0)  # the worker is always there
            free_at = start + duration
            busy[0] += duration
    return _from_intervals("always-on", intervals, latencies, 0, trace)


def _from_intervals(name: str, intervals: list[tuple[float, float]], latencies: list[float],
                    cold: int, trace: Trace) -> Outcome:
    total = sum(max(0.0, b - a) for a, b in intervals)
    busy = sum(min(d, trace.end - s) for cells in trace.notebooks.values() for s, d in cells)
    points = sorted({0.0, trace.end, *[a for a, _ in intervals], *[b for _, b in intervals]})
    series = [(t, sum(max(0.0, min(b, t) - a) for a, b in intervals)) for t in points]
    return Outcome(name, total, max(0.0, total - busy), cold, latencies, series)


# ------------------------------------------------------------------------- report
def run_trace(trace: Trace, args: argparse.Namespace) -> list[Outcome]:
    outcomes = [replay_always_on(trace)]
    outcomes += [replay_culler(trace, m * 60, args) for m in (20, 60)]
    for timeout in args.idle_timeouts:
        outcomes.append(asyncio.run(replay_elastic(trace, timeout, args)))
    return outcomes


def print_table(trace: Trace, outcomes: list[Outcome]) -> None:
    base = outcomes[0].gpu_seconds
    cells = sum(len(c) for c in trace.notebooks.values())
    print(f"## {trace.name}: {len(trace.notebooks)} notebook(s), {cells} cells, "
          f"{trace.end / 3600:.1f} h")
    print(f"| {'policy':16} | {'GPU-s':>9} | {'saved':>6} | {'idle GPU-s':>10} | {'cold':>5} | "
          f"{'p50 added s':>11} | {'p95 added s':>11} |")
    print(f"|{'-' * 18}|{'-' * 11}|{'-' * 8}|{'-' * 12}|{'-' * 7}|{'-' * 13}|{'-' * 13}|")
    for o in outcomes:
        saved = 100 * (1 - o.gpu_seconds / base) if base else 0.0
        print(f"| {o.policy:16} | {o.gpu_seconds:9.0f} | {saved:5.1f}% | {o.idle_gpu_seconds:10.0f} | "
              f"{o.cold_starts:5d} | {o.p(0.5):11.2f} | {o.p(0.95):11.2f} |")
    print()


def plot(results: list[tuple[Trace, list[Outcome]]], path: str) -> None:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, (trace, outcomes) in zip(axes[0], results, strict=False):
        for o in outcomes:
            xs = [t / 3600 for t, _ in o.series]
            # cumulative GPU-seconds are linear between the sampled points
            ax.plot(xs, [g / 3600 for _, g in o.series], label=o.policy,
                    linestyle="--" if not o.policy.startswith("elastic") else "-")
        ax.set_title(trace.name)
        ax.set_xlabel("hours")
        ax.set_ylabel("GPU-hours billed (cumulative)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--history", action="append", default=[],
                        help="replay a `%%gpu history --json` file (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker-start", type=float, default=30.0,
                        help="seconds for a GPU worker to join (pod on a warm node, image cached)")
    parser.add_argument("--cluster-start", type=float, default=10.0,
                        help="seconds for a scheduler to start")
    parser.add_argument("--shutdown-after", type=float, default=1200.0)
    parser.add_argument("--idle-timeouts", default="30,60,90,300,600",
                        help="jupyter-elastic idle-timeouts to compare (seconds)")
    parser.add_argument("--headline", type=float, default=Settings().idle_timeout,
                        help="the idle-timeout the summary lines report (default: the default)")
    parser.add_argument("--plot", default=None, help="write the PNG here (e.g. docs/savings.png)")
    parser.add_argument("--quick", action="store_true", help="short traces: checks that it runs")
    args = parser.parse_args(argv)
    args.idle_timeouts = [float(x) for x in args.idle_timeouts.split(",") if x.strip()]
    if args.headline not in args.idle_timeouts:
        args.idle_timeouts.append(args.headline)
    traces = []
    for family in [f for f in args.families.split(",") if f]:
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}; pick from {', '.join(FAMILIES)}")
        trace = make_trace(family, args.seed)
        if args.quick:  # the first hour (class: the first run-all), a tenth of the users
            cut = 3600.0 if family != "class" else 1500.0
            trace.notebooks = {nb: [c for c in cells if c[0] < cut]
                               for nb, cells in list(trace.notebooks.items())[:3]}
            trace.end = cut
        traces.append(trace)
    traces += [history_trace(path) for path in args.history]
    results = []
    for trace in traces:
        outcomes = run_trace(trace, args)
        results.append((trace, outcomes))
        print_table(trace, outcomes)
    for trace, outcomes in results:
        base = outcomes[0].gpu_seconds
        head = next(o for o in outcomes if o.policy == f"elastic {args.headline:g}s")
        saved = 100 * (1 - head.gpu_seconds / base) if base else 0.0
        print(f"{trace.name}: saved {saved:.1f}% GPU-seconds vs always-on, p95 added latency "
              f"{head.p(0.95):.1f} s, {head.cold_starts} cold starts")
    if args.plot:
        plot(results, args.plot)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
