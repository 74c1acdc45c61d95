"""Output of a running cell on a worker: every ``print``, ``display`` and figure of the
cell's own thread goes back to its kernel as ordered events (``Worker.log_event``).

``sys.stdout``/``sys.stderr`` and IPython's ``display``/``clear_output`` are replaced once
per worker process (:func:`install_worker_hooks`) by routers that look up the running cell
of the *current thread*; other threads' output goes where it always went. Writes are
buffered and sent every ``FLUSH_INTERVAL``; a cell that runs past ``ANNOUNCE_AFTER`` tells
the kernel which worker runs it (for interrupts).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: A cell still running after this long tells the kernel which worker runs it (seconds).
ANNOUNCE_AFTER = 0.03
#: How often buffered output is sent while a cell runs (seconds).
FLUSH_INTERVAL = 0.03


class CellOutput:
    """Buffers one running cell's output and sends it to the kernel as ordered events."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], cell_id: str,
                 worker: str | None = None) -> None:
        self._emit = emit
        self.cell_id = cell_id
        self.worker = worker
        self.seq = 0
        self._buffer: list[tuple[str, str]] = []
        # Events leave in the order of their ``seq``, whichever thread (the cell's, the
        # flusher) sends them: they are numbered and handed on under this lock. Re-entrant:
        # nothing the hand-off does may deadlock a cell that writes.
        self._lock = threading.RLock()
        self._last_flush = 0.0
        self.started_at = time.monotonic()
        self.announced = False

    def write(self, name: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._buffer and self._buffer[-1][0] == name:
                self._buffer[-1] = (name, self._buffer[-1][1] + text)
            else:
                self._buffer.append((name, text))
            due = "\n" in text and time.monotonic() - self._last_flush >= FLUSH_INTERVAL
        if due:
            self.flush()

    def flush(self, announce: bool = False) -> None:
        """Send the buffered output. ``announce``: tell the kernel where the cell runs (for
        interrupts) even if there is none (the flusher, once a cell has run past
        ``ANNOUNCE_AFTER``).

        The ``started`` event goes once, before the cell's first output: a kernel that has
        seen any of it knows the cell's worker, even if the network fails right after. A
        cell that ends within ``ANNOUNCE_AFTER`` without output never sends it: its last
        event says where it ran, and a message just before would hold that one back a
        batching interval.
        """
        self._send(announce)

    def event(self, kind: str, **data: Any) -> None:
        self._send(kind=kind, data=data)

    def _send(self, announce: bool = False, kind: str | None = None,
              data: dict[str, Any] | None = None) -> None:
        """Send, in this order: the ``started`` event (if due and not sent yet), the
        buffered output, then ``kind`` (if given)."""
        with self._lock:
            events: list[dict[str, Any]] = []
            if not self.announced and (announce or self._buffer):
                self.announced = True
                events.append(self._numbered({"kind": "started", "worker": self.worker,
                                              "pid": os.getpid()}))
            pending, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
            for name, text in pending:
                events.append(self._numbered({"kind": "stream", "name": name, "text": text}))
            if kind is not None:
                events.append(self._numbered({"kind": kind, **(data or {})}))
            for event in events:
                self._emit(event)

    def _numbered(self, event: dict[str, Any]) -> dict[str, Any]:
        numbered = {"cell": self.cell_id, "seq": self.seq, **event}
        self.seq += 1
        return numbered


#: Per-thread state: the running cell's output (``thread_state.output``).
thread_state = threading.local()
#: Cells running in this process: cell id -> (its output, its thread's id).
active_cells: dict[str, tuple[CellOutput, int]] = {}
_hooks_lock = threading.Lock()
_hooks_installed = False


def _fresh_locks_in_child() -> None:
    """In a process a cell forked (multiprocessing's default on Linux): the running cells'
    output locks may have been held by another thread (the flusher's send) at the fork, and
    that thread does not exist here; the child's first ``print`` would wait for ever. (What
    the child prints still reaches no notebook: it has no event loop of the worker's to send
    it with. This only keeps it from hanging.)"""
    for output, _ in list(active_cells.values()):
        output._lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_fresh_locks_in_child)


def _current() -> CellOutput | None:
    """The output of the cell this thread works for: the cell's own thread, or a thread
    the cell started, while that cell still runs."""
    output = getattr(thread_state, "output", None)
    if output is not None:
        return output
    inherited = getattr(threading.current_thread(), "_jupyter_elastic_output", None)
    if inherited is not None and inherited.cell_id in active_cells:
        return inherited  # type: ignore[no-any-return]
    return None


def _orphaned() -> CellOutput | None:
    """The ended cell that started this thread, if it did (its output must not reach the
    kernel: it would land in whatever cell runs next)."""
    inherited = getattr(threading.current_thread(), "_jupyter_elastic_output", None)
    if inherited is not None and inherited.cell_id not in active_cells:
        return inherited  # type: ignore[no-any-return]
    return None


#: Where output of a thread that outlived its cell goes: the worker's log (``%gpu logs``).
stray_log = logging.getLogger("distributed.worker.jupyter_elastic")
STRAY_CHARS = 2000


def _log_stray(output: CellOutput, name: str, text: str) -> None:
    text = text.strip()
    if text:
        stray_log.warning("%s of a thread started by cell %s after the cell ended: %s",
                          name, output.cell_id, text[:STRAY_CHARS])


class _StreamRouter(io.TextIOBase):
    """sys.stdout/sys.stderr on a worker: a cell thread's writes go to its kernel."""

    def __init__(self, name: str, original: Any) -> None:
        self._name, self._original = name, original

    def write(self, text: str) -> int:
        output = _current()
        if output is None:
            orphan = _orphaned()
            if orphan is not None:
                _log_stray(orphan, self._name, text)
                return len(text)
            return self._original.write(text)
        output.write(self._name, text)
        return len(text)

    def flush(self) -> None:
        output = _current()
        if output is None:
            self._original.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def fileno(self) -> int:
        return self._original.fileno()


def _flusher() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        now = time.monotonic()
        for output, _ in list(active_cells.values()):
            try:
                output.flush(announce=now - output.started_at >= ANNOUNCE_AFTER)
            except Exception:
                pass


def _mime_bundle(obj: Any, raw: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    if raw and isinstance(obj, dict):
        return obj, {}
    fig_png = _figure_png(obj)
    if fig_png is not None:
        return {"image/png": fig_png, "text/plain": repr(obj)}, {}
    from IPython.core.formatters import DisplayFormatter

    formatter = getattr(thread_state, "formatter", None)
    if formatter is None:
        formatter = thread_state.formatter = DisplayFormatter()
    data, metadata = formatter.format(obj)
    return data, metadata


def _figure_png(obj: Any) -> str | None:
    if type(obj).__module__.split(".")[0] != "matplotlib" or not hasattr(obj, "savefig"):
        return None
    import base64

    buffer = io.BytesIO()
    obj.savefig(buffer, format="png", bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def remote_display(*objs: Any, raw: bool = False, display_id: Any = None, **kwargs: Any) -> None:
    """``display()`` inside a ``%%gpu`` cell: rich output goes back to the notebook."""
    output = _current()
    if output is None and _orphaned() is not None:
        _log_stray(_orphaned(), "display", " ".join(repr(o)[:200] for o in objs))  # type: ignore[arg-type]
        return
    if output is None:
        _original_display(*objs, raw=raw, display_id=display_id, **kwargs)
        return
    for obj in objs:
        data, metadata = _mime_bundle(obj, raw=raw)
        output.event("display", data=data, metadata=metadata)


def remote_clear_output(wait: bool = False) -> None:
    """``clear_output()`` inside a ``%%gpu`` cell."""
    output = _current()
    if output is None:
        _original_clear_output(wait=wait)
        return
    output.event("clear", wait=wait)


def _original_display(*objs: Any, **kwargs: Any) -> None:
    from IPython.core import display_functions

    getattr(display_functions, "_jupyter_elastic_display", print)(*objs, **kwargs)


def _original_clear_output(wait: bool = False) -> None:
    from IPython.core import display_functions

    getattr(display_functions, "_jupyter_elastic_clear_output", lambda wait=False: None)(wait)


def install_worker_hooks() -> None:
    """Route this process's stdout/stderr/display per cell thread (idempotent)."""
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        sys.stdout = _StreamRouter("stdout", sys.stdout)
        sys.stderr = _StreamRouter("stderr", sys.stderr)
        try:
            import IPython.display as ipd
            from IPython.core import display_functions as df

            df._jupyter_elastic_display = df.display  # type: ignore[attr-defined]
            df._jupyter_elastic_clear_output = df.clear_output  # type: ignore[attr-defined]
            df.display = ipd.display = remote_display  # type: ignore[assignment]
            df.clear_output = ipd.clear_output = remote_clear_output  # type: ignore[assignment]
        except ImportError:
            pass
        _inherit_cell_output()
        threading.Thread(target=_flusher, name="jupyter-elastic-flush", daemon=True).start()
        _hooks_installed = True


def _inherit_cell_output() -> None:
    """A thread created while a cell runs, by the cell or a thread of it, writes to that
    cell while the cell runs (and to the worker log after it ended)."""
    original_init = threading.Thread.__init__

    def __init__(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        owner = _current() or _orphaned()
        if owner is not None:
            self._jupyter_elastic_output = owner  # type: ignore[attr-defined]

    threading.Thread.__init__ = __init__  # type: ignore[method-assign]


def flush_figures(output: CellOutput) -> None:
    """Open matplotlib figures become PNG displays, as the inline backend does."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for number in pyplot.get_fignums():
        figure = pyplot.figure(number)
        output.event("display", data={"image/png": _figure_png(figure),
                                       "text/plain": repr(figure)}, metadata={})
    pyplot.close("all")
