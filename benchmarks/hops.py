"""Where a warm ``%%gpu`` cell's time goes, hop by hop, through a real kernel.

A front end (this script, as in ``dispatch.py``) drives a real ipykernel over ZeroMQ and
runs a plain cell ``_w = 1`` (the floor) and ``%%gpu`` ``_w = 1`` in turn. Inside the kernel,
the scheduler and the worker, timestamps (``time.time()``, one clock: one machine) are
taken where the cell passes:

* the front end sends ``execute_request`` / has both the reply and ``status: idle``;
* the kernel starts and ends running the cell (IPython's ``pre_run_cell`` / ``post_run_cell``);
* ``%%gpu`` calls ``client.submit`` and it returns;
* the scheduler has the task (a scheduler plugin's ``update_graph``) and hands it to the
  worker (``processing``);
* the worker starts it (a worker plugin: ``executing``);
* the cell's last event reaches the scheduler (``log_event``), then the kernel's client
  thread (the session's event queue) and the kernel's main thread (the dispatcher reads it).

Nothing of the product changes for this: the stamps come from Dask's own plugin hooks and
from wrapping, in the benchmark's kernel only, the session's client and event queue. The
table gives each segment's median (and 90th percentile) over the rounds, and which part
is Dask's own round trip, which is the kernel's work and which any cell pays.

Server-hosted, it also times a warm ``%%gpu`` cell with and without the kernel's two cell
reports to the server (``cells/start``, ``cells/finish``), interleaved in one kernel: the
reports are dropped in that kernel only, as an experiment.

Usage: ``python benchmarks/hops.py [--rounds 100] [--runs 3] [--mode embedded|server|both]
[--report-rounds 40] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dispatch as harness  # noqa: E402  (sets up private Jupyter/Dask dirs first)

#: Run in the kernel once its cluster is warm: stamps into ``_hops`` (cell id -> point -> t).
TRACE = r'''
import time as _t
from distributed.diagnostics.plugin import SchedulerPlugin as _SP, WorkerPlugin as _WP
from jupyter_elastic.kernel.magics import _magics as _m
from jupyter_elastic.protocol import CELL_PREFIX as _PREFIX
_hs = _m.session
_hops, _floor, _now = {}, [], {}
def _stamp(cell, point):
    _hops.setdefault(cell, {}).setdefault(point, _t.time())
def _cell_of(key):
    key = str(key)
    return key[len(_PREFIX) + 1:] if key.startswith(_PREFIX + "-") else None
_hq = _hs.events
_hq_put, _hq_get = _hq.put, _hq.get
def _put(item, *args, **kwargs):
    if isinstance(item, dict) and item.get("kind") == "end":
        _stamp(item["cell"], "client_thread")
    return _hq_put(item, *args, **kwargs)
def _get(*args, **kwargs):
    item = _hq_get(*args, **kwargs)
    if isinstance(item, dict) and item.get("kind") == "end":
        _stamp(item["cell"], "main_thread")
    return item
_hq.put, _hq.get = _put, _get
_hc = _hs.client
_hc_submit = _hc.submit
def _submit(fn, payload, *args, **kwargs):
    cell = payload["cell_id"]
    _now["cell"] = cell
    _stamp(cell, "submit")
    future = _hc_submit(fn, payload, *args, **kwargs)
    _stamp(cell, "submitted")
    return future
_hc.submit = _submit
class _SchedulerHops(_SP):
    name = "elastic-hops"
    def __init__(self):
        self.stamps = {}
    def _at(self, cell, point):
        if cell:
            self.stamps.setdefault(cell, {}).setdefault(point, _t.time())
    def update_graph(self, scheduler, *, keys=(), **kwargs):
        for key in keys:
            self._at(_cell_of(key), "scheduler_has_it")
    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            self._at(_cell_of(key), "scheduler_sent_it")
    def log_event(self, topic, msg):
        if isinstance(msg, dict) and msg.get("kind") == "end":
            self._at(msg.get("cell"), "scheduler_has_end")
def _add_plugin(dask_scheduler, plugin):
    dask_scheduler.add_plugin(plugin, name=plugin.name, idempotent=False)
_hc.run_on_scheduler(_add_plugin, plugin=_SchedulerHops())
class _WorkerHops(_WP):
    name = "elastic-hops"
    def setup(self, worker):
        self.stamps = {}
    def transition(self, key, start, finish, **kwargs):
        key = str(key)
        if finish == "executing" and key.startswith(_PREFIX + "-"):
            self.stamps.setdefault(key[len(_PREFIX) + 1:], {})["worker_runs_it"] = _t.time()
_hc.register_plugin(_WorkerHops(), name="elastic-hops")
_ip = get_ipython()
def _pre(info):
    _now["pre"], _now["source"] = _t.time(), info.raw_cell
def _post(result):
    cell = _now.pop("cell", None)
    if cell is not None:
        _hops[cell]["pre"], _hops[cell]["post"] = _now.get("pre"), _t.time()
    elif _now.get("source") == "_w = 1":  # a floor cell
        _floor.append((_now.get("pre"), _t.time()))
_ip.events.register("pre_run_cell", _pre)
_ip.events.register("post_run_cell", _post)
'''

COLLECT = r'''
for _cell, _points in _hc.run_on_scheduler(
        lambda dask_scheduler: dask_scheduler.plugins["elastic-hops"].stamps).items():
    _hops.setdefault(_cell, {}).update(_points)
for _stamps in _hc.run(lambda dask_worker: dask_worker.plugins["elastic-hops"].stamps).values():
    for _cell, _points in _stamps.items():
        _hops.setdefault(_cell, {}).update(_points)
'''

UNTRACE = r'''
_ip.events.unregister("pre_run_cell", _pre)
_ip.events.unregister("post_run_cell", _post)
_hq.put, _hq.get = _hq_put, _hq_get
_hc.submit = _hc_submit
_hc.unregister_worker_plugin("elastic-hops")
_hc.run_on_scheduler(lambda dask_scheduler: dask_scheduler.remove_plugin(name="elastic-hops"))
'''

#: (from, to, what it is, whose). Whose: "any cell" (the floor pays it too), "kernel"
#: (jupyter-elastic's own work in the kernel), "Dask" (Dask's round trip, the worker's
#: run of the cell included).
SEGMENTS = [
    ("send", "pre", "front end -> the kernel runs the cell", "any cell"),
    ("pre", "submit", "%%gpu: options, names, lease, inputs", "kernel"),
    ("submit", "submitted", "client.submit (the graph packed)", "kernel"),
    ("submitted", "scheduler_has_it", "client thread -> scheduler has the task", "Dask"),
    ("scheduler_has_it", "scheduler_sent_it", "scheduler picks the worker", "Dask"),
    ("scheduler_sent_it", "worker_runs_it", "scheduler -> worker runs it", "Dask"),
    ("worker_runs_it", "scheduler_has_end", "cell runs; its last event -> scheduler", "Dask"),
    ("scheduler_has_end", "client_thread", "scheduler -> kernel's client thread", "Dask"),
    ("client_thread", "main_thread", "client thread -> kernel's main thread", "kernel"),
    ("main_thread", "post", "result read and bound, row reported", "kernel"),
    ("post", "reply", "the kernel replies and goes idle", "any cell"),
]


def measure(fe: harness.FrontEnd, rounds: int) -> dict[str, Any]:
    fe.execute("%load_ext jupyter_elastic")
    for _ in range(5):  # warm: cluster, worker, imports
        fe.execute(harness.GPU)
    floor_sends: list[tuple[float, float]] = []
    gpu_sends: list[tuple[float, float]] = []
    try:
        fe.execute(TRACE)
        for _ in range(rounds):
            t = time.time()
            fe.execute(harness.FLOOR)
            floor_sends.append((t, time.time()))
            t = time.time()
            fe.execute(harness.GPU)
            gpu_sends.append((t, time.time()))
        fe.execute(COLLECT)
        stamps = fe.value("_hops")
        floor = fe.value("_floor")
    finally:
        try:
            fe.execute(UNTRACE, timeout=60)
        except Exception as exc:  # a TRACE that failed part-way: the first error stands
            print(f"hops: could not undo the tracing: {str(exc)[:200]}", file=sys.stderr)
        fe.execute(harness.TEARDOWN, timeout=60)
    cells = sorted((c for c, s in stamps.items() if "post" in s and "submit" in s),
                   key=lambda c: stamps[c]["submit"])
    if len(cells) != rounds or len(floor) != rounds:
        raise RuntimeError(f"stamps for {len(cells)} %%gpu and {len(floor)} plain cells, "
                           f"not {rounds} each")
    segments: dict[str, list[float]] = {}
    for (sent, replied), cell in zip(gpu_sends, cells, strict=True):
        points = dict(stamps[cell], send=sent, reply=replied)
        for start, end, *_ in SEGMENTS:
            if start in points and end in points:
                segments.setdefault(f"{start}>{end}", []).append((points[end] - points[start]) * 1e3)
    floor_in = [(pre - sent) * 1e3 for (sent, _), (pre, _) in zip(floor_sends, floor, strict=True)]
    floor_out = [(replied - post) * 1e3
                 for (_, replied), (_, post) in zip(floor_sends, floor, strict=True)]
    return {"segments": segments, "floor_in": floor_in, "floor_out": floor_out,
            "floor_total": [(b - a) * 1e3 for a, b in floor_sends],
            "gpu_total": [(b - a) * 1e3 for a, b in gpu_sends]}


#: Server-hosted only: the kernel's cell reports (``cells/start``, ``cells/finish``) dropped
#: in this benchmark's kernel, and put back.
NO_REPORTS = r'''
from jupyter_elastic.kernel.magics import _magics as _m
_reporting = _m.session.control_plane
_reporting_post = _reporting._post_later
_reporting._post_later = lambda *args, **kwargs: None
'''
REPORTS = "_reporting._post_later = _reporting_post"


def reports_cost(fe: harness.FrontEnd, rounds: int) -> tuple[list[float], list[float]]:
    """Server-hosted: a warm ``%%gpu`` cell with the kernel's two cell reports to the
    server, and without them (an experiment: they keep the server's idle clock and history
    exact), interleaved round by round in one kernel; ms."""
    fe.execute("%load_ext jupyter_elastic")
    for _ in range(5):
        fe.execute(harness.GPU)
    with_reports: list[float] = []
    without: list[float] = []
    try:
        for _ in range(rounds):
            with_reports.append(fe.execute(harness.GPU)[0] * 1e3)
            fe.execute(NO_REPORTS)
            try:
                without.append(fe.execute(harness.GPU)[0] * 1e3)
            finally:
                fe.execute(REPORTS)
    finally:
        fe.execute(harness.TEARDOWN, timeout=60)
    return with_reports, without


def p(samples: list[float], q: float = 0.5) -> float:
    if q == 0.5:
        return statistics.median(samples)
    return harness.percentile(samples, q)


def report(mode: str, runs: list[dict[str, Any]], rounds: int) -> None:
    """One table per mode: each segment's p50 in every run, and the spread of those."""
    names = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    print(f"\n## {mode}: a warm `%%gpu` `_w = 1`, hop by hop "
          f"(p50 ms of {rounds} rounds in each of {len(runs)} runs; fresh kernel each run)")
    print(f"| segment | whose | {names} | spread | plain cell (run 1) |")
    print("|---|---|" + "---:|" * (len(runs) + 2))

    def row(label: str, who: str, values: list[float], floor: str = "") -> None:
        cells = " | ".join(f"{v:.2f}" for v in values)
        print(f"| {label} | {who} | {cells} | {max(values) - min(values):.2f} | {floor} |")

    for start, end, what, who in SEGMENTS:
        key = f"{start}>{end}"
        values = [p(run["segments"][key]) for run in runs]
        floor = ""
        if start == "send":
            floor = f"{p(runs[0]['floor_in']):.2f}"
        elif end == "reply":
            floor = f"{p(runs[0]['floor_out']):.2f}"
        row(what, who, values, floor)
    row("**whole cell (front end's round trip)**", "", [p(run["gpu_total"]) for run in runs],
        f"{p(runs[0]['floor_total']):.2f}")
    for i, run in enumerate(runs):
        seg = run["segments"]
        part = {who: sum(p(seg[f"{a}>{b}"]) for a, b, _, w in SEGMENTS if w == who)
                for who in ("Dask", "kernel")}
        after = p(seg["post>reply"]) - p(run["floor_out"])
        print(f"{mode} run {i + 1}: {p(run['gpu_total']) - p(run['floor_total']):.2f} ms above "
              f"the plain cell; Dask's round trip {part['Dask']:.2f} ms, the kernel's own work "
              f"{part['kernel']:.2f} ms, the kernel's reply after it {after:+.2f} ms against a "
              "plain cell's (segment medians: they need not add up to the whole's median)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="runs, each in a fresh kernel")
    parser.add_argument("--mode", choices=("embedded", "server", "both"),
                        help="where the control plane runs (default: both; --quick: embedded)")
    parser.add_argument("--report-rounds", type=int, default=40,
                        help="server-hosted: interleaved rounds with and without the kernel's "
                             "cell reports (0: skip)")
    parser.add_argument("--quick", action="store_true",
                        help="a few rounds, one run (embedded unless --mode says otherwise)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.runs, args.report_rounds = 3, 1, 3
    args.mode = args.mode or ("embedded" if args.quick else "both")
    try:
        if args.mode in ("embedded", "both"):
            runs = []
            for _ in range(args.runs):
                with harness.EmbeddedKernel() as fe:
                    runs.append(measure(fe, args.rounds))
            report("embedded", runs, args.rounds)
        if args.mode in ("server", "both"):
            runs = []
            with harness.JupyterServer() as server:
                for _ in range(args.runs):
                    with server.kernel() as fe:
                        runs.append(measure(fe, args.rounds))
                cost = None
                if args.report_rounds > 0:
                    with server.kernel() as fe:
                        cost = reports_cost(fe, args.report_rounds)
            report("server-hosted", runs, args.rounds)
            if cost is not None:
                with_reports, without = cost
                print(f"\nserver-hosted: warm `%%gpu` p50 {p(with_reports):.2f} ms with the kernel's "
                      f"cell reports, {p(without):.2f} ms without them ({args.report_rounds} "
                      "interleaved rounds, one kernel; the reports dropped in it only)")
    finally:
        shutil.rmtree(harness._TMP, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
