"""Where a warm ``%%gpu`` cell's time goes, hop by hop, through a real kernel.

A front end (this script, as in ``dispatch.py``) drives a real ipykernel over ZeroMQ and
runs a plain cell ``_w = 1`` (the floor) and ``%%gpu`` ``_w = 1`` in turn. Inside the kernel,
the scheduler and the worker, timestamps (``time.monotonic()``, one clock: one machine) are
taken where the cell passes:

* the front end sends ``execute_request`` / has both the reply and ``status: idle``;
* the kernel starts and ends running the cell (IPython's ``pre_run_cell`` / ``post_run_cell``);
* ``%%gpu`` calls ``client.submit``; the client's thread hands the graph to its batched send
  (so "the graph on the wire" includes serialising it and the batching interval);
* the scheduler has the task (a scheduler plugin's ``update_graph``) and hands it to the
  worker (``processing``);
* the worker starts it (a worker plugin: ``executing``);
* the cell's last event reaches the scheduler (``log_event``), then the kernel's client
  thread (the session's event queue) and the kernel's main thread (the dispatcher reads it).

Nothing of the product changes for this: the stamps come from Dask's own plugin hooks and
from wrapping, in the benchmark's kernel only, the session's client and event queue. The
table gives each segment's median over the rounds, and which part is Dask's own round
trip, which is the kernel's work and which any cell pays.

Two side-by-side comparisons, each interleaved round by round in the same run:

* embedded: a warm ``%%gpu`` cell in a kernel whose client reaches its scheduler in-process
  (the product) and in a second kernel whose client goes over TLS on loopback (its lease's
  in-process address dropped in that kernel only);
* server-hosted: a warm ``%%gpu`` cell with and without the kernel's two cell reports to the
  server (``cells/start``, ``cells/finish``), in one kernel (the reports dropped in it only,
  as an experiment).

Usage: ``python benchmarks/hops.py [--rounds 100] [--runs 3] [--mode embedded|server|both]
[--compare-rounds 40] [--quick] [--ipc]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from jupyter_elastic.protocol import IN_PROCESS_ADDRESS

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
    _hops.setdefault(cell, {}).setdefault(point, _t.monotonic())
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
_hc_submit, _hc_send = _hc.submit, _hc._send_to_scheduler_safe
def _submit(fn, payload, *args, **kwargs):
    _now["cell"] = payload["cell_id"]
    _stamp(payload["cell_id"], "submit")
    return _hc_submit(fn, payload, *args, **kwargs)
def _send(msg):  # on the client's own thread: the graph goes to its batched send
    try:
        cell = _now.get("cell")
        if cell is not None and msg.get("op") == "update-graph":
            _stamp(cell, "sent")
    except Exception:  # a stamp must never keep the graph from the scheduler
        pass
    return _hc_send(msg)
_hc.submit, _hc._send_to_scheduler_safe = _submit, _send
class _SchedulerHops(_SP):
    name = "elastic-hops"
    def __init__(self):
        self.stamps = {}
    def _at(self, cell, point):
        if cell:
            self.stamps.setdefault(cell, {}).setdefault(point, _t.monotonic())
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
        cell = _cell_of(key)
        if finish == "executing" and cell:
            self.stamps.setdefault(cell, {})["worker_runs_it"] = _t.monotonic()
_hc.register_plugin(_WorkerHops(), name="elastic-hops")
_ip = get_ipython()
def _pre(info):
    _now["pre"], _now["source"] = _t.monotonic(), info.raw_cell
def _post(result):
    cell = _now.pop("cell", None)
    if cell is not None:
        _hops[cell]["pre"], _hops[cell]["post"] = _now.get("pre"), _t.monotonic()
    elif _now.get("source") == __FLOOR__:  # a floor cell
        _floor.append((_now.get("pre"), _t.monotonic()))
_ip.events.register("pre_run_cell", _pre)
_ip.events.register("post_run_cell", _post)
'''.replace("__FLOOR__", repr(harness.FLOOR))

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
del _hc.submit, _hc._send_to_scheduler_safe  # the class's own methods again
_hc.unregister_worker_plugin("elastic-hops")
_hc.run_on_scheduler(lambda dask_scheduler: dask_scheduler.remove_plugin(name="elastic-hops"))
'''

#: (from, to, what it is, whose). Whose: "any cell" (the floor pays it too), "kernel"
#: (jupyter-elastic's own work in the kernel), "Dask" (Dask's round trip, the worker's
#: run of the cell included).
SEGMENTS = [
    ("send", "pre", "front end -> the kernel runs the cell", "any cell"),
    ("pre", "submit", "%%gpu: options, names, lease, inputs", "kernel"),
    ("submit", "sent", "client.submit packs the graph, its thread sends it", "Dask"),
    ("sent", "scheduler_has_it", "the graph on the wire -> scheduler has the task", "Dask"),
    ("scheduler_has_it", "scheduler_sent_it", "scheduler picks the worker", "Dask"),
    ("scheduler_sent_it", "worker_runs_it", "scheduler -> worker runs it", "Dask"),
    ("worker_runs_it", "scheduler_has_end", "cell runs; its last event -> scheduler", "Dask"),
    ("scheduler_has_end", "client_thread", "scheduler -> kernel's client thread", "Dask"),
    ("client_thread", "main_thread", "client thread -> kernel's main thread", "kernel"),
    ("main_thread", "post", "result read and bound, row reported", "kernel"),
    ("post", "reply", "the kernel replies and goes idle", "any cell"),
]


@contextlib.contextmanager
def warm_kernel(fe: harness.FrontEnd, setup: str = "") -> Iterator[None]:
    """The extension loaded, ``setup`` run, and a cluster warm (worker started, imports
    done); torn down at the end, without hiding an error that came first."""
    try:
        fe.execute("%load_ext jupyter_elastic")
        if setup:
            fe.execute(setup)
        for _ in range(5):
            fe.execute(harness.GPU)
        yield
    except BaseException:
        try:
            fe.execute(harness.TEARDOWN, timeout=60)
        except Exception as exc:
            print(f"hops: could not tear the kernel's cluster down: {str(exc)[:200]}",
                  file=sys.stderr)
        raise
    fe.execute(harness.TEARDOWN, timeout=60)


def measure(fe: harness.FrontEnd, rounds: int) -> dict[str, Any]:
    floor_sends: list[tuple[float, float]] = []
    gpu_sends: list[tuple[float, float]] = []
    with warm_kernel(fe):
        try:
            fe.execute(TRACE)
            for _ in range(rounds):
                t = time.monotonic()
                fe.execute(harness.FLOOR)
                floor_sends.append((t, time.monotonic()))
                t = time.monotonic()
                fe.execute(harness.GPU)
                gpu_sends.append((t, time.monotonic()))
            fe.execute(COLLECT)
            stamps = fe.value("_hops")
            floor = fe.value("_floor")
        finally:
            try:
                fe.execute(UNTRACE, timeout=60)
            except Exception as exc:  # a TRACE that failed part-way: the first error stands
                print(f"hops: could not undo the tracing: {str(exc)[:200]}", file=sys.stderr)
    cells = sorted((c for c, s in stamps.items() if "post" in s and "submit" in s),
                   key=lambda c: stamps[c]["submit"])
    if len(cells) != rounds or len(floor) != rounds:
        raise RuntimeError(f"stamps for {len(cells)} %%gpu and {len(floor)} plain cells, "
                           f"not {rounds} each")
    segments: dict[str, list[float]] = {}
    for (sent, replied), cell in zip(gpu_sends, cells, strict=True):
        points = dict(stamps[cell], send=sent, reply=replied)
        missing = {point for a, b, *_ in SEGMENTS for point in (a, b)} - points.keys()
        if missing:  # a hook that did not fire: every median is over all the rounds
            raise RuntimeError(f"cell {cell} has no stamp for {', '.join(sorted(missing))}")
        for start, end, *_ in SEGMENTS:
            segments.setdefault(f"{start}>{end}", []).append((points[end] - points[start]) * 1e3)
    floor_in = [(pre - sent) * 1e3 for (sent, _), (pre, _) in zip(floor_sends, floor, strict=True)]
    floor_out = [(replied - post) * 1e3
                 for (_, replied), (_, post) in zip(floor_sends, floor, strict=True)]
    return {"segments": segments, "floor_in": floor_in, "floor_out": floor_out,
            "floor_total": [(b - a) * 1e3 for a, b in floor_sends],
            "gpu_total": [(b - a) * 1e3 for a, b in gpu_sends]}


def interleaved(first: Callable[[], float], second: Callable[[], float],
                rounds: int) -> tuple[list[float], list[float]]:
    """``rounds`` timings of each, taking turns at going first; ms."""
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        if i % 2:
            b.append(second() * 1e3)
            a.append(first() * 1e3)
        else:
            a.append(first() * 1e3)
            b.append(second() * 1e3)
    return a, b


#: Embedded: the kernel's client over TLS on loopback, as before the in-process connection
#: (its leases' in-process address dropped, in this kernel only; run before its first cell).
OVER_TLS = f'''
from jupyter_elastic.kernel.magics import _magics as _m
_tls_acquire = _m.session.control_plane.acquire
def _over_tls(*args, **kwargs):
    lease = dict(_tls_acquire(*args, **kwargs))
    lease["client"] = {{k: v for k, v in lease["client"].items() if k != {IN_PROCESS_ADDRESS!r}}}
    return lease
_m.session.control_plane.acquire = _over_tls
'''
CLIENT_ADDRESS = "str(_m.session.client.scheduler.address)"


def in_process_gain(rounds: int) -> tuple[list[float], list[float]]:
    """Embedded: a warm ``%%gpu`` cell in a kernel whose client is in-process (the product)
    and in one whose client goes over TLS, side by side, interleaved; ms."""
    with harness.EmbeddedKernel() as inproc, harness.EmbeddedKernel() as tls:
        with warm_kernel(inproc), warm_kernel(tls, setup=OVER_TLS):
            for fe, scheme in ((inproc, "inproc://"), (tls, "tls://")):
                fe.execute("from jupyter_elastic.kernel.magics import _magics as _m")
                address = fe.value(CLIENT_ADDRESS)
                if not address.startswith(scheme):  # the comparison's premise, checked
                    raise RuntimeError(f"a kernel's client is on {address}, not {scheme}")
            return interleaved(lambda: inproc.execute(harness.GPU)[0],
                               lambda: tls.execute(harness.GPU)[0], rounds)


#: Server-hosted only: the kernel's cell reports (``cells/start``, ``cells/finish``) dropped
#: in this benchmark's kernel, or put back; each time after what was queued has been sent,
#: so no report of one cell is still in flight during the next.
REPORTS_SETUP = r'''
from jupyter_elastic.kernel.magics import _magics as _m
_reporting = _m.session.control_plane
_reporting_post = _reporting._post_later
'''
NO_REPORTS = "_reporting.flush(); _reporting._post_later = lambda *args, **kwargs: None"
REPORTS = "_reporting.flush(); _reporting._post_later = _reporting_post"


def reports_cost(fe: harness.FrontEnd, rounds: int) -> tuple[list[float], list[float]]:
    """Server-hosted: a warm ``%%gpu`` cell with the kernel's two cell reports to the
    server, and without them (an experiment: they keep the server's idle clock and history
    exact), interleaved round by round in one kernel; ms."""

    def timed(setup: str) -> float:
        fe.execute(setup)
        return fe.execute(harness.GPU)[0]

    with warm_kernel(fe):
        fe.execute(REPORTS_SETUP)
        try:
            return interleaved(lambda: timed(REPORTS), lambda: timed(NO_REPORTS), rounds)
        finally:
            try:
                fe.execute(REPORTS)
            except Exception as exc:  # the first error stands
                print(f"hops: could not put the cell reports back: {str(exc)[:200]}",
                      file=sys.stderr)


p = statistics.median


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


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=_count(1), default=100)
    parser.add_argument("--runs", type=_count(1), default=3, help="runs, each in a fresh kernel")
    parser.add_argument("--mode", choices=("embedded", "server", "both"),
                        help="where the control plane runs (default: both; --quick: embedded)")
    parser.add_argument("--compare-rounds", type=_count(0), default=40,
                        help="interleaved rounds of the side-by-side comparisons: embedded, the "
                             "client in-process and over TLS; server-hosted, with and without "
                             "the kernel's cell reports (0: skip them)")
    parser.add_argument("--quick", action="store_true",
                        help="a few rounds, one run (embedded unless --mode says otherwise)")
    parser.add_argument("--ipc", action="store_true", help=harness.IPC_HELP)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.runs, args.compare_rounds = 3, 1, 3
    args.mode = args.mode or ("embedded" if args.quick else "both")
    if args.ipc:
        harness.use_unix_sockets()
    try:
        if args.mode in ("embedded", "both"):
            runs = []
            for _ in range(args.runs):
                with harness.EmbeddedKernel() as fe:
                    runs.append(measure(fe, args.rounds))
            report("embedded", runs, args.rounds)
            if args.compare_rounds:
                inproc, tls = in_process_gain(args.compare_rounds)
                print(f"\nembedded: warm `%%gpu` p50 {p(inproc):.2f} ms with the kernel's client "
                      f"in-process, {p(tls):.2f} ms with it over TLS ({args.compare_rounds} "
                      "interleaved rounds, two kernels side by side)")
        if args.mode in ("server", "both"):
            runs = []
            with harness.JupyterServer() as server:
                for _ in range(args.runs):
                    with server.kernel() as fe:
                        runs.append(measure(fe, args.rounds))
                report("server-hosted", runs, args.rounds)
                if args.compare_rounds:
                    with server.kernel() as fe:
                        with_reports, without = reports_cost(fe, args.compare_rounds)
                    print(f"\nserver-hosted: warm `%%gpu` p50 {p(with_reports):.2f} ms with the "
                          f"kernel's cell reports, {p(without):.2f} ms without them "
                          f"({args.compare_rounds} interleaved rounds, one kernel; the reports "
                          "dropped in it only)")
    finally:
        shutil.rmtree(harness._TMP, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
