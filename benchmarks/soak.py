"""Soak test: N mixed ``%%gpu`` cells through a real kernel, with random faults.

Each cell is one of: ok, error (the cell raises), timeout (``--timeout`` on a cell asleep in
C), interrupt (the stop button on a cell asleep in C), kill (the worker process SIGKILLed
mid-cell). Every outcome is classified:

* correct: an ok cell returned its value and bound it; a faulty cell failed with its one
  expected line (RemoteCellError / CellTimeout / CellCancelled / WorkerLost) and bound nothing;
* failed clearly: some other one-line jupyter-elastic error (no library traceback);
* wrong: anything else (a wrong value, a name bound by a failed cell, a raw traceback,
  a cell re-run without being asked, a hang past the harness limit).

At the end it reports the counts, the stop latency (timeout and interrupt: from the moment
the cell should stop to the kernel's reply, against the ``interrupt-grace`` + 2 s bound) and
what leaked: worker processes beyond the cluster's maximum, the kernel's threads and open
file descriptors (start versus end), and processes still running once the kernel was shut
down. Each cell that was not correct is listed with its first line and, when wrong, the
start of its stderr (what made it wrong).

Usage: ``python benchmarks/soak.py [-n 200] [--seed 1] [--quick]`` (``--quick``: 15 cells).
Exits 1 if any cell was wrong or something leaked.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _var in ("DASK_CONFIG", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR",
             "JUPYTER_CONFIG_DIR", "MPLCONFIGDIR"):
    os.environ.setdefault(_var, tempfile.mkdtemp(prefix="soak-"))

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import psutil  # noqa: E402
from kernel_harness import Kernel  # noqa: E402

ENV = {
    "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "60s",
    "DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1",
    "DASK_JUPYTER_ELASTIC__INTERRUPT_GRACE": "1s",
}
KINDS = ("ok", "ok", "ok", "error", "timeout", "interrupt", "kill")
EXPECTED = {"error": "raised in a %%gpu cell", "timeout": "CellTimeout",
            "interrupt": "CellCancelled", "kill": "WorkerLost"}
GRACE = 1.0


def kernel_state(kernel: Kernel) -> tuple[int, int]:
    """The kernel's thread count and open file descriptors."""
    process = psutil.Process(kernel.pid)
    return process.num_threads(), process.num_fds()


def workers(kernel: Kernel) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(kernel.pid).children(recursive=True):
        try:
            line = " ".join(p.cmdline())
            # the fork server local workers are forked from is the kernel's own child and
            # no worker; the workers are its children (with its command line)
            fork_server = "forkserver import main" in line and p.ppid() == kernel.pid
            if (p.status() != psutil.STATUS_ZOMBIE and "multiprocessing" in line
                    and "resource_tracker" not in line and not fork_server):
                out.append(p)
        except psutil.Error:
            pass
    return out


#: Installed in the kernel (a plain cell) with ``--diagnose``: a thread that, when the
#: trigger file appears, writes what the kernel's schedulers hold and every thread's stack.
DIAGNOSE = r"""
import sys as _s, threading as _t, time as _tm, traceback as _tb, os as _os
def _elastic_dump(trigger, out):
    while not _os.path.exists(trigger):
        _tm.sleep(0.2)
    from distributed import Scheduler
    lines = []
    for sched in list(Scheduler._instances):
        lines.append(f"scheduler {sched.address} status={sched.status}")
        for ws in sched.workers.values():
            lines.append(f"  worker {ws.address} name={ws.name} status={ws.status} nanny={ws.nanny} "
                         f"resources={ws.resources} used={ws.used_resources} "
                         f"processing={[t.key for t in ws.processing]} executing={[t.key for t in ws.executing]}")
        for key, ts in list(sched.tasks.items()):
            lines.append(f"  task {key} state={ts.state} on={getattr(ts.processing_on, 'address', None)} "
                         f"who_wants={len(ts.who_wants or ())} restrictions={ts.resource_restrictions} "
                         f"suspicious={ts.suspicious}")
        lines.append(f"  unrunnable={[t.key for t in sched.unrunnable]} queued={[t.key for t in sched.queued]}")
        lines.append(f"  idle={list(sched.idle)} running={[w.address for w in sched.running]}")
        try:
            for topic, events in sched.get_events().items():
                lines.append(f"  events {topic}: {list(events)[-8:]}")
        except Exception as exc:
            lines.append(f"  events: {exc!r}")
    frames = _s._current_frames()
    for th in _t.enumerate():
        lines.append(f"thread {th.name}")
        lines.extend("    " + l.rstrip() for l in _tb.format_stack(frames.get(th.ident)) if th.ident in frames)
    open(out, "w").write("\n".join(str(l) for l in lines))
_t.Thread(target=_elastic_dump, args=(TRIGGER, OUT), daemon=True, name="soak-diagnose").start()
"""

#: The first line each wrong or failed-clearly cell showed (for the report).
DETAILS: dict[int, str] = {}


def run_one(kernel: Kernel, i: int, kind: str, latencies: list[float],
            timeout_latencies: list[float]) -> str:
    name = f"soak_{i}"
    if kind == "ok":
        run = kernel.run(f"%%gpu\n{name} = {i} * 2\n{name}", timeout=120)
        if run.status == "ok" and kernel.value(name) == i * 2:
            return "correct"
        DETAILS[i] = (run.status + ": " + " ".join(run.error_text().split()))[:200]
        if run.status != "ok" and _one_line(run):
            return "failed-clearly"
        DETAILS[i] += " | stderr: " + " ".join(run.stderr.split())[:300]
        return "wrong"
    if kind == "error":
        code = f"%%gpu\n{name} = 1\nraise ValueError('soak {i}')"
        run = kernel.run(code, timeout=120)
    elif kind == "timeout":
        sent = time.monotonic()
        run = kernel.run(f"%%gpu --timeout 1s\nimport time\n{name} = 1\ntime.sleep(600)", timeout=120)
        if run.messages:  # from the deadline (1 s after the cell was sent) to its error line
            timeout_latencies.append(run.messages[-1]["t"] - sent - 1.0)
    else:
        stopped: list[float] = []

        def act(msg: dict) -> None:
            if not stopped and msg["msg_type"] == "stream" and "pid=" in msg["content"]["text"]:
                stopped.append(time.monotonic())
                if kind == "interrupt":
                    kernel.km.interrupt_kernel()
                else:
                    pid = int(msg["content"]["text"].split("pid=")[1].split()[0])
                    os.kill(pid, signal.SIGKILL)

        code = (f"%%gpu\nimport os, time\n{name} = 1\nprint(f'pid={{os.getpid()}}', flush=True)\n"
                "time.sleep(600)")
        run = kernel.collect(kernel.submit(code), timeout=120, on_message=act)
        if kind == "interrupt" and stopped:
            latencies.append(run.messages[-1]["t"] - stopped[0])
    text = run.error_text()
    DETAILS[i] = (run.status + ": " + " ".join(text.split()))[:200]
    if run.status == "ok" or kernel.value(f"'{name}' in globals()"):
        return "wrong"
    if EXPECTED[kind] in text and (kind == "error" or _one_line(run)):
        return "correct"
    if _one_line(run):
        return "failed-clearly"
    DETAILS[i] += " | stderr: " + " ".join(run.stderr.split())[:300]
    return "wrong"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _one_line(run) -> bool:  # type: ignore[no-untyped-def]
    error = run.error
    return (error is not None and len(error["traceback"]) == 1
            and "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.error_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="15 cells, every kind at least twice")
    parser.add_argument("--faults", action="store_true",
                        help="faulty cells only (error, timeout, interrupt, kill) between ok ones")
    parser.add_argument("--diagnose", metavar="DIR",
                        help="on a cell that does not finish, write the kernel's scheduler state "
                             "and thread stacks to DIR/hang.txt, then stop")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    if args.quick:
        kinds = ["ok", "error", "timeout", "interrupt", "kill"] * 2 + ["ok"] * 5
        rng.shuffle(kinds)
    elif args.faults:
        kinds = [k for _ in range(args.n // 2) for k in ("ok", rng.choice(KINDS[3:]))]
    else:
        kinds = [rng.choice(KINDS) for _ in range(args.n)]
    kernel = Kernel(env=ENV)
    counts = {"correct": 0, "failed-clearly": 0, "wrong": 0}
    wrong: list[str] = []
    stop_latency: list[float] = []
    timeout_latency: list[float] = []
    left_running: list[str] = []
    t0 = time.monotonic()
    try:
        if args.diagnose:
            os.makedirs(args.diagnose, exist_ok=True)
            trigger = os.path.join(args.diagnose, "trigger")
            out = os.path.join(args.diagnose, "hang.txt")
            code = f"TRIGGER, OUT = {trigger!r}, {out!r}\n" + DIAGNOSE
            assert kernel.run(code, timeout=60).status == "ok"
        assert kernel.run("%%gpu\nwarm = 1", timeout=120).status == "ok"
        threads0, fds0 = kernel_state(kernel)
        for i, kind in enumerate(kinds):
            try:
                verdict = run_one(kernel, i, kind, stop_latency, timeout_latency)
            except TimeoutError:
                verdict = "wrong"
                DETAILS[i] = "did not finish within the harness limit"
                if args.diagnose:
                    Path(args.diagnose, "trigger").touch()
                    time.sleep(5)
                    counts[verdict] += 1
                    wrong.append(f"cell {i} ({kind}, {verdict}): hang; see {args.diagnose}/hang.txt")
                    break
            counts[verdict] += 1
            if verdict != "correct":
                wrong.append(f"cell {i} ({kind}, {verdict}): {DETAILS.get(i, '')}")
        # settle: the killed workers' replacements are up and idle again
        settled = kernel.run("%%gpu\nsettled = 1", timeout=120)
        assert settled.status == "ok", settled.error_text()
        time.sleep(1.0)
        threads1, fds1 = kernel_state(kernel)
        extra_workers = max(0, len(workers(kernel)) - 1)
    finally:
        tree = psutil.Process(kernel.pid).children(recursive=True) + [psutil.Process(kernel.pid)]
        kernel.shutdown()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.2)
        left_running = [" ".join(p.cmdline())[:80] for p in tree if _alive(p)]
    elapsed = time.monotonic() - t0
    print(f"soak: {len(kinds)} cells in {elapsed:.0f}s (seed {args.seed}): "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print("  kinds: " + ", ".join(f"{k} {kinds.count(k)}" for k in sorted(set(kinds))))
    if stop_latency:
        print(f"  stop button (cell asleep in C, interrupt-grace {GRACE:g}s): reply after "
              f"median {statistics.median(stop_latency):.2f}s, max {max(stop_latency):.2f}s")
    if timeout_latency:
        print(f"  --timeout 1s (cell asleep in C, interrupt-grace {GRACE:g}s): error line after the "
              f"deadline median {statistics.median(timeout_latency):.2f}s, "
              f"max {max(timeout_latency):.2f}s")
    print(f"  kernel threads {threads0} -> {threads1}, open fds {fds0} -> {fds1}, "
          f"worker processes beyond the maximum: {extra_workers}, "
          f"processes left after the kernel's shutdown: {len(left_running)} {left_running}")
    if wrong:
        print("  not correct:\n    " + "\n    ".join(wrong))
    # a few descriptors and threads come and go with the worker's connections
    leaked = (threads1 > threads0 + 4 or fds1 > fds0 + 16 or extra_workers > 0
              or bool(left_running))
    return 1 if counts["wrong"] or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
