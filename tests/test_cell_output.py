"""The events a running cell sends its kernel, in the order the kernel must see them
(``execution/output.py``; no worker needed: the events are collected as sent)."""

from __future__ import annotations

import os
import signal
import threading
import time

from jupyter_elastic.execution.output import CellOutput, active_cells


def collecting() -> tuple[list[dict], CellOutput]:
    sent: list[dict] = []
    return sent, CellOutput(sent.append, "c1", "tls://127.0.0.1:4000")


def test_the_worker_is_announced_before_the_first_output():
    """A kernel that saw any of a cell's output knows where it runs: if the network fails
    right after the first ``print``, a stop can still kill that worker by its pid."""
    sent, output = collecting()
    output.write("stdout", "pid=1\n")  # the first line is sent at once
    assert [e["kind"] for e in sent] == ["started", "stream"], sent
    assert sent[0]["worker"] == "tls://127.0.0.1:4000" and sent[0]["pid"] == os.getpid()
    assert [e["seq"] for e in sent] == [0, 1]
    output.flush(announce=True)  # once only
    output.event("end", status="ok")
    assert [e["kind"] for e in sent] == ["started", "stream", "end"], sent
    assert [e["seq"] for e in sent] == [0, 1, 2]


def test_a_quick_cell_without_output_sends_only_its_end():
    sent, output = collecting()
    output.event("end", status="ok")
    assert [(e["kind"], e["seq"]) for e in sent] == [("end", 0)]


def test_output_written_then_an_event_keeps_its_order():
    sent, output = collecting()
    output.write("stdout", "a")  # no newline: buffered
    output.write("stderr", "b")
    output.event("display", data={"text/plain": "1"}, metadata={})
    output.event("end", status="ok")
    assert [(e["kind"], e.get("name")) for e in sent] == [
        ("started", None), ("stream", "stdout"), ("stream", "stderr"), ("display", None),
        ("end", None)]


def test_events_leave_in_seq_order_whichever_thread_sends_them():
    """The cell's thread and the flusher thread both send: the kernel gets the cell's
    output in the order it was written, with no number skipped or repeated."""
    sent, output = collecting()
    go = threading.Event()

    def cell() -> None:
        go.wait()
        for i in range(2000):
            output.write("stdout", f"{i}\n")

    def flusher() -> None:
        go.wait()
        for _ in range(2000):
            output.flush()

    threads = [threading.Thread(target=cell, daemon=True),
               threading.Thread(target=flusher, daemon=True)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a thread is stuck on the output lock"
    output.flush()
    assert [e["seq"] for e in sent] == list(range(len(sent)))
    assert sent[0]["kind"] == "started" and sum(e["kind"] == "started" for e in sent) == 1
    text = "".join(e["text"] for e in sent if e["kind"] == "stream")
    assert text == "".join(f"{i}\n" for i in range(2000))


def test_a_process_forked_while_another_thread_holds_the_output_lock_can_still_print():
    """A cell that forks (multiprocessing's default on Linux) while the flusher thread is
    sending its output: the child inherits the lock held, and its first ``print`` would
    wait for ever on a thread that does not exist in it."""
    sent, output = collecting()
    active_cells["forking"] = (output, threading.get_ident())
    held, release = threading.Event(), threading.Event()

    def flusher() -> None:
        with output._lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=flusher, daemon=True)
    thread.start()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: print through the cell's output, then leave at once
            try:
                output.write("stdout", "from the child\n")
                os._exit(0)
            finally:
                os._exit(1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child blocked on the inherited output lock")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        thread.join(10)
        active_cells.pop("forking", None)
