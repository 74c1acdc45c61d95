"""What runs on a worker: the Dask preload, output routing, the input cache, interrupts.

:func:`run_cell` is the task of every ``%%gpu`` cell: it runs the body through the one
runner (``runner.py``), routes ``print``/``display``/matplotlib output of *this cell's
thread* back to the kernel as ordered events (``Worker.log_event``), keeps large unchanged
inputs in a per-worker cache so they are not re-sent, and returns a plain dict: it never
raises for the cell's own errors, so the kernel decides about retries and renders the
remote traceback against the cell's line numbers. :func:`dask_setup` is the workers' Dask
preload (``--preload jupyter_elastic.execution.worker``). Nothing here imports the kernel,
the control plane, the server or a backend: this module runs on workers.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..protocol import (
    CACHE_BYTES_ENV,
    INTERACTIVE_INTERVAL,
    QUIET_STDIO_ENV,
    RETIRED_LOG_LINES,
    RETIRED_LOGS_TOPIC,
)
from . import runner
from .output import (
    CellOutput,
    active_cells,
    flush_figures,
    install_worker_hooks,
    remote_display,
    thread_state,
)
from .payload import (
    INLINE_MAX_BYTES,
    Cached,
    CacheIt,
    changed,
    missing_modules,
    parity_problems,
    versions,
)


class _InputCache:
    """Per-process LRU of large inputs, bounded in bytes; Dask does not see it, so it
    never keeps a worker from retiring when idle."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[bool, Any]:
        with self._lock:
            if token not in self._items:
                return False, None
            self._items.move_to_end(token)
            return True, self._items[token][0]

    def put(self, token: str, value: Any) -> None:
        from dask.sizeof import sizeof

        size = int(sizeof(value))
        if size > self.limit:
            return
        with self._lock:
            if token in self._items:
                return
            self._items[token] = (value, size)
            self._bytes += size
            while self._bytes > self.limit and self._items:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def drop(self, token: str) -> None:
        with self._lock:
            item = self._items.pop(token, None)
            if item is not None:
                self._bytes -= item[1]

    def tokens(self) -> list[str]:
        with self._lock:
            return list(self._items)


_cache = _InputCache(int(os.environ.get(CACHE_BYTES_ENV, str(2 << 30))))


def dask_setup(worker: Any) -> None:
    """Dask preload: install the output hooks and shorten the worker's batching window.

    Local workers share the kernel's process group, and Jupyter's stop button sends
    SIGINT to the whole group: workers ignore it, and the kernel interrupts the cell
    itself (``interrupt_cell``), restarting the worker if it does not stop.
    """
    os.environ.setdefault("MPLBACKEND", "agg")
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread of the worker process
        pass
    if os.environ.get(QUIET_STDIO_ENV) == "1":
        # A local worker started by a kernel shares the kernel's stdout/stderr, which the
        # kernel forwards into whatever cell runs: Dask's log lines and stray prints would
        # land there. Cell output travels as events; Dask's logs stay in ``%gpu logs``.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    install_worker_hooks()
    try:
        worker.batched_stream.interval = INTERACTIVE_INTERVAL
    except AttributeError:
        pass


def dask_teardown(worker: Any) -> None:
    """Dask preload teardown (the worker is closing, e.g. retired by scale to zero): leave
    its last log lines with the scheduler, for ``%gpu logs`` once it is gone."""
    try:
        entries = worker.get_logs(n=RETIRED_LOG_LINES)  # newest first
        logs = [[str(level)[:16], str(message)[:2000]] for level, message in reversed(entries)]
        worker.log_event(RETIRED_LOGS_TOPIC, {"worker": str(worker.name), "address": worker.address,
                                              "logs": logs})
    except Exception:  # a closing worker must close; its logs are a courtesy
        pass


def _emit_via(worker: Any, topic: str) -> Callable[[dict[str, Any]], None]:
    if worker is None:
        return lambda event: None

    def emit(event: dict[str, Any]) -> None:
        worker.loop.add_callback(worker.log_event, topic, event)

    return emit


def _recording(emit: Callable[[dict[str, Any]], None],
               record: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    def both(event: dict[str, Any]) -> None:
        record.append(event)
        emit(event)

    return both


def _to_host(value: Any) -> Any:
    """Device values become host values, also inside lists, tuples, namedtuples and dicts.

    CuPy arrays and cupyx sparse matrices (``.get()``), and Dask arrays with device chunks
    (each chunk brought to NumPy lazily, when the Dask array is computed).
    """
    from .._arrays.namespace import is_dask, is_device, meta_namespace, to_numpy

    if type(value).__module__.split(".")[0] in ("cupy", "cupyx") and hasattr(value, "get"):
        return value.get()
    if is_device(value) or is_dask(value) and meta_namespace(value).__name__ != "numpy":
        return to_numpy(value)
    if isinstance(value, list):
        return [_to_host(v) for v in value]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(_to_host(v) for v in value))
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(_to_host(v) for v in value)
    if isinstance(value, dict) and type(value) is dict:
        return {k: _to_host(v) for k, v in value.items()}
    return value


def _interrupt_thread(thread_id: int) -> bool:
    """Raise KeyboardInterrupt in another thread at its next bytecode."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(KeyboardInterrupt)
    )
    return done == 1


_active_lock = threading.Lock()
#: Cells whose task runs here but whose body has not begun (inputs, parity checks): cell id
#: -> thread id. A stop must see them as running, or their body would run on after the stop.
_starting: dict[str, int] = {}
#: Cells a stop reached before their body began here: their body never runs (bounded).
_stopped: OrderedDict[str, None] = OrderedDict()
#: Cells whose body ran here and ended (bounded): a stop that comes after says so.
_finished: OrderedDict[str, None] = OrderedDict()
#: How many cell ids each of the two records keeps (the oldest go first).
_CELL_IDS_KEPT = 1024


def interrupt_cell(cell_id: str) -> str:
    """Run on a worker (``client.run``): interrupt the cell if it is still running there.

    A cell whose body has not begun yet (its task was handed to this worker, or is loading
    its inputs) is marked so that its body never runs; that also covers a task the worker
    starts only after the stop (the cancel and this call travel separately). Returns
    ``interrupted`` (its body was running: interrupted), ``ended`` (its body ran here and
    has ended) or ``never`` (its body has not begun here and now never will)."""
    with _active_lock:  # the cell cannot end between the check and the interrupt
        item = active_cells.get(cell_id)
        if item is not None:
            return "interrupted" if _interrupt_thread(item[1]) else "ended"
        if cell_id in _finished:
            return "ended"
        _stopped[cell_id] = None
        while len(_stopped) > _CELL_IDS_KEPT:
            _stopped.popitem(last=False)
        return "never"


def _clear_interrupt(thread_id: int) -> None:
    """Drop an interrupt aimed at a cell that ended first, so it never hits the next task."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


def kill_worker_process(dask_worker: Any) -> int | None:
    """Run on a nanny (``client.run(..., nanny=True)``): SIGKILL its worker process now, for
    a cell that did not stop within the grace period (stuck in C, or holding the GIL so
    that the worker cannot answer). The nanny starts a new worker process; nobody waits.
    Returns the killed pid (None if there was no process)."""
    import signal

    process = getattr(getattr(dask_worker, "process", None), "process", None)
    pid = getattr(process, "pid", None)
    if not pid:
        return None
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return None
    return int(pid)


def cell_running(cell_id: str) -> bool:
    """Run on a worker (``client.run``): whether the cell still runs (or starts) there."""
    return cell_id in active_cells or cell_id in _starting


def run_cell(payload: dict[str, Any], record: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Execute one cell body; return ``{"status": ..., ...}`` (never raises for cell errors).

    Statuses: ``ok`` (``outputs``, ``deleted``, ``value``), ``error`` (``ename``,
    ``evalue``, ``traceback``), ``cache-miss`` (``missing`` tokens: re-send them),
    ``mismatch`` (``problems``: package versions differ; ``missing``: modules the cell
    imports that this worker cannot import), ``cancelled`` (a stop reached the cell before
    its body began: the body did not run). ``record`` (a list) also keeps every output
    event sent (detached cells store them with their results).
    """
    cell_id = str(payload.get("cell_id"))
    with _active_lock:
        _starting[cell_id] = threading.get_ident()
    try:
        return _run_cell(payload, record)
    finally:
        with _active_lock:
            _starting.pop(cell_id, None)


def _run_cell(payload: dict[str, Any], record: list[dict[str, Any]] | None) -> dict[str, Any]:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        worker = None
    if worker is not None:
        install_worker_hooks()
    problems = parity_problems(payload.get("versions") or {}, versions())
    if problems:
        return {"status": "mismatch", "problems": problems, "versions": versions()}
    missing = missing_modules(list(payload.get("modules") or ()))
    if missing:  # before the cell runs: it would fail on its import, far from the cause
        return {"status": "mismatch", "problems": [], "missing": missing, "versions": versions()}

    # Inputs: cached ones from the worker's cache, new large ones into it.
    namespace: dict[str, Any] = {}
    missing, used_tokens, from_cache = [], [], []
    scattered = payload.get("scattered") or {}  # name -> token: sent ahead of the task
    for name, value in payload["inputs"].items():
        if name in scattered:
            _cache.put(scattered[name], value)
            namespace[name] = value
            used_tokens.append((scattered[name], name))
        elif isinstance(value, Cached):
            hit, cached = _cache.get(value.token)
            if not hit:
                missing.append(value.token)
                continue
            namespace[name] = cached
            used_tokens.append((value.token, name))
            from_cache.append(name)
        elif isinstance(value, CacheIt):
            _cache.put(value.token, value.value)
            namespace[name] = value.value
            used_tokens.append((value.token, name))
        else:
            namespace[name] = value
    if missing:
        return {"status": "cache-miss", "missing": missing}

    cell_id = payload["cell_id"]
    filename = payload["filename"]
    address = getattr(worker, "address", None)
    emit = _emit_via(worker, payload["topic"])
    if record is not None:
        emit = _recording(emit, record)
    output = CellOutput(emit, cell_id, address)
    convert = (lambda value: value) if payload.get("keep_on_device", False) else _to_host
    globals_ = runner.fresh_globals(namespace, remote_display)
    with _active_lock:  # from starting to running, or not at all if a stop came first
        _starting.pop(cell_id, None)
        if cell_id in _stopped:
            return {"status": "cancelled"}
        active_cells[cell_id] = (output, threading.get_ident())
    thread_state.output = output
    started = time.perf_counter()
    result: dict[str, Any]
    with runner.cell_source(filename, payload["source"], payload["line_offset"]):
        try:
            value = runner.execute(payload["source"], payload["line_offset"], filename, globals_)
            flush_figures(output)
            outputs, deleted = runner.collect(globals_, payload["outputs"], namespace, convert)
            value = convert(value)
            result = {"status": "ok", "outputs": outputs, "deleted": deleted, "value": value}
        except BaseException as exc:  # the cell's own error, KeyboardInterrupt from an interrupt
            result = {
                "status": "error",
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": runner.format_traceback(exc, filename),
            }
        finally:
            compute = time.perf_counter() - started
            with _active_lock:
                active_cells.pop(cell_id, None)
                _clear_interrupt(threading.get_ident())
                _finished[cell_id] = None
                while len(_finished) > _CELL_IDS_KEPT:
                    _finished.popitem(last=False)
            thread_state.output = None
    # An input the cell changed in place must not be served to the next cell.
    for token, name in used_tokens:
        if changed(namespace[name], token):
            _cache.drop(token)
    release_device_memory()
    result.update(
        compute_seconds=compute,
        worker=address,
        device="gpu" if _on_gpu() else "cpu",
        cached_inputs=from_cache,
    )
    # A small result rides on the last event, so the kernel need not fetch it from the
    # worker in a second round trip; the task's own return value is the fallback. Sizing
    # it is also the check that it can be sent: only when that fails are the outputs
    # pickled one by one, to name the one that cannot travel.
    inline, sendable = _inline(result)
    if not sendable and result["status"] == "ok":
        unsendable = _unsendable(result["outputs"], result["value"])
        if unsendable:
            kept = {k: result[k] for k in ("compute_seconds", "worker", "device", "cached_inputs")}
            result = {"status": "error", "ename": "OutputNotSerializable", "evalue": unsendable,
                      "traceback": [], **kept}
            inline, sendable = _inline(result)
    output.flush()  # what is still buffered (and the announcement it may bring) goes first
    result["events"] = output.seq + 1  # every event of the cell, this last one included
    output.event("end", status=result["status"], inline=inline)
    return result


def _inline(result: dict[str, Any]) -> tuple[bytes | None, bool]:
    """The result pickled in-band when it is small; None for a large one, which then
    travels as the task's return value (Dask sends its buffers out-of-band, uncopied).

    Sized first with out-of-band buffers, which pickles no array data: a large result is
    never copied just to learn that it is too large to inline. Also returns whether the
    result pickles at all.
    """
    import cloudpickle

    buffers: list[Any] = []
    try:
        head = cloudpickle.dumps(result, protocol=5, buffer_callback=buffers.append)
    except Exception:
        return None, False
    size = len(head) + sum(memoryview(b).nbytes for b in buffers)
    if size > INLINE_MAX_BYTES:
        return None, True
    try:
        data = cloudpickle.dumps(result, protocol=5) if buffers else head
    except Exception:
        return None, True
    return (data if len(data) <= INLINE_MAX_BYTES else None), True


def _unsendable(outputs: dict[str, Any], value: Any) -> str:
    import cloudpickle

    for name, obj in list(outputs.items()) + [("the cell's last expression", value)]:
        try:
            cloudpickle.dumps(obj, protocol=5, buffer_callback=lambda b: None)
        except Exception as exc:
            label = name if name.startswith("the ") else f"`{name}`"
            return (
                f"{label} cannot be sent back to the notebook ({type(exc).__name__}: {exc}); "
                f"delete it at the end of the cell (del {name}) or list the names to return "
                "with --out"
                if not name.startswith("the ")
                else f"{label} cannot be sent back ({type(exc).__name__}: {exc}); end the cell "
                "with a statement instead"
            )
    return ""


def release_device_memory() -> bool:
    """Hand CuPy's cached blocks back to the driver after a cell (what its pools hold unused).

    CuPy keeps freed device memory in its pools for reuse; on a shared worker that memory
    would stay unavailable to the next cell's other libraries. Does nothing unless CuPy is
    already imported and a GPU is usable. Returns whether the pools were released.
    """
    cp = sys.modules.get("cupy")
    if cp is None:
        return False
    try:
        from .._arrays.namespace import gpu_available

        if not gpu_available():
            return False
        cp.get_default_memory_pool().free_all_blocks()
        cp.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:
        return False
    return True


def _on_gpu() -> bool:
    if "cupy" not in sys.modules and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False
    try:
        from .._arrays.namespace import gpu_available
    except ImportError:
        return False
    return bool(gpu_available())
