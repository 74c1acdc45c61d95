"""Faults while a ``%%gpu`` cell runs, through a real kernel with real worker processes.

Each test asserts what the user sees (one clear line, the namespace untouched, history
consistent, nothing left running) and that the next cell works. Timings are not asserted:
``benchmarks/soak.py`` measures how long stops take.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from elastic_testing import wait_for
from kernel_harness import Kernel

from . import KERNEL_ENV

pytestmark = pytest.mark.kernel

ENV = {
    **KERNEL_ENV,
    # a worker spills what it holds past 25% of its memory (100 MiB) to its scratch directory
    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "0.25",
}


@pytest.fixture(scope="module")
def kernel():
    k = Kernel(env=ENV)
    try:
        ok(k.run("%%gpu\nwarm = 1", timeout=90))  # a worker is up: --timeout 1s covers the cell only
        yield k
    finally:
        k.shutdown()


def ok(run):
    assert run.status == "ok", run.error_text()
    return run


def history(kernel):
    return kernel.value("get_ipython().run_line_magic('gpu', 'history --json')")


def worker_pid(run):
    """The worker pid a cell printed as ``pid=N``."""
    for word in run.stdout.split():
        if word.startswith("pid="):
            return int(word[4:])
    raise AssertionError(f"the cell did not print its pid: {run.stdout!r}")


def act_on(kernel, code, marker, action, timeout=60):
    """Run ``code``; call ``action(text)`` once the cell has printed ``marker``."""
    done = []

    def on_message(msg):
        if not done and msg["msg_type"] == "stream" and marker in msg["content"]["text"]:
            done.append(1)
            action(msg["content"]["text"])

    return kernel.collect(kernel.submit(code), timeout=timeout, on_message=on_message)


def one_line(run, ename):
    """The cell failed with exactly one ``ename`` line and no library traceback."""
    assert run.status == "error"
    text = run.error_text()
    assert ename in text, text
    assert len(run.error["traceback"]) == 1, text
    for noise in ("Traceback", "KeyboardInterrupt", "distributed.", "CommClosedError"):
        assert noise not in text and noise not in run.stderr, (noise, text, run.stderr)
    return text


def next_cell_works(kernel, name="after"):
    ok(kernel.run(f"%%gpu --timeout 60\n{name} = 41 + 1", timeout=90))
    ok(kernel.run("%%gpu\nwarm = 1", timeout=90))  # and the worker is up for the next test
    assert kernel.value(name) == 42


def last_row(kernel):
    return history(kernel)[-1]


# ----------------------------------------------------------------- defect 3: stops that stop
def test_timeout_on_a_cell_asleep_in_c_kills_its_worker_and_bills_the_time(kernel):
    run = kernel.run("%%gpu --timeout 1s\nimport os, time\nprint(f'pid={os.getpid()}', flush=True)\n"
                     "time.sleep(600)\nslept = 1", timeout=30)
    text = one_line(run, "CellTimeout")
    assert "--timeout 1s" in text and "worker was restarted to free the GPU" in text
    wait_for(lambda: not psutil.pid_exists(worker_pid(run)), timeout=10, what="the worker killed")
    row = last_row(kernel)
    assert row["status"] == "timeout"
    assert row["compute_seconds"] > 0, "the seconds the worker was held are billed"
    assert kernel.value("'slept' in globals()") is False
    next_cell_works(kernel, "after_sleep")


def test_timeout_on_a_cell_holding_the_gil_kills_its_worker(kernel):
    # sum() over a range runs in C without releasing the GIL: the worker cannot even answer.
    run = kernel.run("%%gpu --timeout 1s\nimport os, time\nprint(f'pid={os.getpid()}', flush=True)\n"
                     "time.sleep(0.3)\ntotal = sum(range(10**13))", timeout=30)
    text = one_line(run, "CellTimeout")
    assert "worker was restarted to free the GPU" in text
    wait_for(lambda: not psutil.pid_exists(worker_pid(run)), timeout=10, what="the worker killed")
    assert last_row(kernel)["compute_seconds"] > 0
    assert kernel.value("'total' in globals()") is False
    next_cell_works(kernel, "after_gil")


def test_a_second_stop_during_the_stop_is_one_clean_line(kernel):
    def press_twice(_):
        kernel.km.interrupt_kernel()
        time.sleep(0.3)
        kernel.km.interrupt_kernel()

    run = act_on(kernel, "%%gpu\nimport time\nprint('sleeping', flush=True)\ntime.sleep(600)",
                 "sleeping", press_twice, timeout=30)
    text = one_line(run, "CellCancelled")
    assert "interrupted" in text
    row = last_row(kernel)
    assert row["status"] == "cancelled" and row["compute_seconds"] > 0
    next_cell_works(kernel, "after_double")


# ----------------------------------------------------------------- defect 4: no silent re-runs
SIDE_EFFECT = (
    "%%gpu{flags}\nimport os, pathlib, time\np = pathlib.Path({path!r})\n"
    "p.write_text(p.read_text() + 'run\\n' if p.exists() else 'run\\n')\n"
    "runs = p.read_text().count('run')\n"
    "if runs == 1:\n    print(f'pid={{os.getpid()}}', flush=True)\n    time.sleep(600)\n"
    "survivor = runs\n"
)


def test_a_worker_killed_mid_cell_is_one_line_and_the_cell_is_not_rerun(kernel, tmp_path):
    path = tmp_path / "side-effects"
    ok(kernel.run("survivor = 'before'"))
    rows_before = len(history(kernel))
    run = act_on(kernel, SIDE_EFFECT.format(flags="", path=str(path)), "pid=",
                 lambda text: os.kill(int(text.split("pid=")[1].split()[0]), signal.SIGKILL))
    text = one_line(run, "WorkerLost")
    assert "died" in text and "killed or crashed" in text and "not re-run" in text
    assert "--retries" in text
    time.sleep(1.0)  # a silent re-run would write its line now
    assert path.read_text().count("run") == 1, "the cell ran again without being asked"
    assert kernel.value("survivor") == "before"
    rows = history(kernel)[rows_before:]
    assert [r["status"] for r in rows] == ["error"] and "WorkerLost" in rows[0]["error"]
    next_cell_works(kernel, "after_kill")


def test_retries_rerun_a_cell_whose_worker_died_and_say_so(kernel, tmp_path):
    path = tmp_path / "side-effects"
    rows_before = len(history(kernel))
    run = act_on(kernel, SIDE_EFFECT.format(flags=" --retries 1", path=str(path)), "pid=",
                 lambda text: os.kill(int(text.split("pid=")[1].split()[0]), signal.SIGKILL),
                 timeout=90)
    ok(run)
    assert "attempt 1 of 2 failed" in run.stderr and "died" in run.stderr, run.stderr
    assert kernel.value("survivor") == 2 and path.read_text().count("run") == 2
    rows = history(kernel)[rows_before:]
    assert [r["status"] for r in rows] == ["error", "ok"], rows
    assert rows[0]["error"].startswith("attempt 1 of 2: WorkerLost")


def test_retry_notes_show_the_exception_message(kernel, tmp_path):
    marker = tmp_path / "flaky"
    run = ok(kernel.run(
        "%%gpu --retries 2\nimport pathlib\n"
        f"p = pathlib.Path({str(marker)!r})\nn = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\nif n == 0:\n    raise RuntimeError('disk\\nnot ready ' + 'x' * 500)\n"
        "flaky_ok = n"))
    notes = [line for line in run.stderr.splitlines() if "retrying" in line]
    assert len(notes) == 1, run.stderr
    assert "attempt 1 of 3 failed (RuntimeError: disk not ready xxx" in notes[0]
    assert len(notes[0]) < 300, "the note is one bounded line"
    assert kernel.value("flaky_ok") == 1


def test_a_worker_out_of_memory_is_one_line_naming_the_limit(kernel):
    run = kernel.run("%%gpu\nimport time\nblocks = []\nfor _ in range(40):\n"
                     "    blocks.append(bytearray(50 * 2**20))\n    time.sleep(0.05)\n"
                     "time.sleep(30)\noom_done = 1", timeout=60)
    text = one_line(run, "WorkerLost")
    assert "out of memory" in text and "400.00 MiB memory limit" in text, text
    assert kernel.value("'oom_done' in globals()") is False
    next_cell_works(kernel, "after_oom")


# ----------------------------------------------------------------- disk full
def test_a_large_result_the_worker_cannot_write_to_disk_still_arrives(kernel):
    """Disk full for the result of a large cell.

    What the product writes to disk for a large ``%%gpu`` result is the worker's spill file:
    a task result past the worker's memory target (here 25% of 400 MiB) goes straight to the
    worker's scratch directory. A full disk is made, without root or a small file system, by
    a file-size limit (``RLIMIT_FSIZE``, 1 MiB) set on the running worker process: every
    write past it fails with ``OSError`` (EFBIG; Python ignores SIGXFSZ), as a write to a
    full disk fails with ENOSPC, through the same error path in Dask's spill code. The
    result stays in the worker's memory and reaches the notebook; the cell says nothing of
    Dask's spill error, which goes to the worker's log.
    """
    # The worker keeps Dask's spill log lines (they go to its log file, not %gpu logs) on
    # a handler the next cell reads: proof that the write really failed.
    pid = worker_pid(ok(kernel.run(
        "%%gpu\nimport logging, os\nspill_log = logging.getLogger('distributed.spill')\n"
        "class Keep(logging.Handler):\n    def emit(self, record):\n        self.lines.append(record.getMessage())\n"
        "keep = Keep()\nkeep.lines = []\nkeep.name = 'test-keep'\nspill_log.addHandler(keep)\n"
        "print(f'pid={os.getpid()}')\ndel keep, Keep, spill_log")))
    worker = psutil.Process(pid)
    soft, hard = worker.rlimit(psutil.RLIMIT_FSIZE)
    worker.rlimit(psutil.RLIMIT_FSIZE, (2**20, hard))
    try:
        run = ok(kernel.run("%%gpu\nimport numpy as np\nbig = np.arange(16 * 2**20, dtype='float64')",
                            timeout=90))
        failures = kernel.value(
            "get_ipython().run_cell_magic('gpu', '', \"import logging\\n[h.lines for h in "
            "logging.getLogger('distributed.spill').handlers if h.name == 'test-keep'][0]\")")
    finally:
        if psutil.pid_exists(pid):
            worker.rlimit(psutil.RLIMIT_FSIZE, (soft, hard))
    assert psutil.pid_exists(pid), "the worker survived"
    assert any("Spill to disk failed" in line for line in failures), failures
    for noise in ("distributed.", "Spill", "Traceback", "OSError"):
        assert noise not in run.stdout + run.stderr, (noise, run.stderr)
    assert kernel.value("(big.shape, float(big[-1]))") == ((16 * 2**20,), 16 * 2**20 - 1.0)
    assert last_row(kernel)["status"] == "ok"
    next_cell_works(kernel, "after_disk_full")


# ----------------------------------------------------------------- defect 6: output and logs
def test_output_of_a_thread_that_outlives_its_cell_stays_out_of_the_next_cell(kernel):
    run = ok(kernel.run(
        "%%gpu\nimport threading, time\n"
        "def chatter():\n    print('thread inside the cell', flush=True)\n    time.sleep(1.0)\n"
        "    print('LATE-THREAD-OUTPUT', flush=True)\n"
        "t = threading.Thread(target=chatter, daemon=True)\nt.start()\ntime.sleep(0.3)\ndel t\n"))
    assert "thread inside the cell" in run.stdout, "a cell's own thread writes to the cell"
    after = ok(kernel.run("%%gpu\nimport time\ntime.sleep(2.0)\nprint('next cell')"))
    plain = ok(kernel.run("import time\ntime.sleep(0.5)"))
    for later in (after, plain):
        assert "LATE-THREAD-OUTPUT" not in later.stdout + later.stderr
    logs = ok(kernel.run("%gpu logs"))
    assert "LATE-THREAD-OUTPUT" in logs.stdout, "it is kept in the worker log"


def test_dask_log_lines_never_reach_a_cell(kernel):
    # after %gpu stop the client's heartbeat and the nannies log connection errors
    ok(kernel.run("%%gpu\nbefore_stop = 1"))
    stop = ok(kernel.run("%gpu stop"))
    after = ok(kernel.run("%%gpu\nafter_stop = 1"))
    plain = ok(kernel.run("import time\ntime.sleep(1.0)"))
    for run in (stop, after, plain):
        for noise in ("distributed.", "CommClosedError", "Traceback"):
            assert noise not in run.stderr + run.stdout, (noise, run.stderr)
