"""What runs on a worker: the cell runner, its output, its inputs, and the Dask preload.

:func:`run_cell` executes a ``%%gpu`` body in a fresh ``__main__``-like namespace, routes
``print``/``display``/matplotlib output of *this cell's thread* back to the kernel as
ordered events (``Worker.log_event``), keeps large unchanged inputs in a per-worker cache
so they are not re-sent, and returns a plain dict: it never raises for the cell's own
errors, so the kernel decides about retries and renders the remote traceback against the
cell's line numbers. :func:`dask_setup` is the workers' Dask preload.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import functools
import io
import linecache
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: Inputs at least this large (bytes, by ``dask.sizeof``) are cached on workers.
CACHE_MIN_BYTES = 1 << 20
#: Results up to this size (pickled) come back with the cell's last event.
INLINE_MAX_BYTES = 64 * 1024
#: A cell still running after this long tells the kernel which worker runs it (seconds).
ANNOUNCE_AFTER = 0.03
#: How often buffered output is sent while a cell runs (seconds).
FLUSH_INTERVAL = 0.03
#: Packages whose versions must agree between kernel and worker (and how strictly).
PARITY = {"python": 2, "dask": 3, "distributed": 3, "cloudpickle": 1, "numpy": 1, "cupy": 1}


class _Cached:
    """Stands in for an input the worker already holds under ``token``."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Cached, (self.token,))


class _CacheIt:
    """Wraps an input the worker should keep under ``token`` for later cells."""

    __slots__ = ("token", "value")

    def __init__(self, token: str, value: Any) -> None:
        self.token, self.value = token, value

    def __reduce__(self) -> tuple[Any, ...]:
        return (_CacheIt, (self.token, self.value))


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


_cache = _InputCache(int(os.environ.get("JUPYTER_ELASTIC_CACHE_BYTES", str(2 << 30))))


class _CellOutput:
    """Buffers one running cell's output and sends it to the kernel as ordered events."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], cell_id: str,
                 worker: str | None = None) -> None:
        self._emit = emit
        self.cell_id = cell_id
        self.worker = worker
        self.seq = 0
        self._buffer: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._last_flush = 0.0
        self.started_at = time.monotonic()
        self.announced = False

    def announce(self) -> None:
        """Tell the kernel where the cell runs (for interrupts), once.

        Not sent for cells that end within ``ANNOUNCE_AFTER``: their last event says it,
        and a message just before it would hold that one back a batching interval.
        """
        if not self.announced:
            self.announced = True
            self.event("started", worker=self.worker, pid=os.getpid())

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

    def flush(self) -> None:
        if self._buffer and not self.announced:
            self.announce()
        with self._lock:
            pending, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
            events = []
            for name, text in pending:
                events.append({"cell": self.cell_id, "seq": self.seq, "kind": "stream",
                               "name": name, "text": text})
                self.seq += 1
        for event in events:
            self._emit(event)

    def event(self, kind: str, **data: Any) -> None:
        self.flush()
        with self._lock:
            event = {"cell": self.cell_id, "seq": self.seq, "kind": kind, **data}
            self.seq += 1
        self._emit(event)


_local = threading.local()
_active: dict[str, tuple[_CellOutput, int]] = {}  # cell id -> (output, thread id)
_hooks_lock = threading.Lock()
_hooks_installed = False


def _current() -> _CellOutput | None:
    return getattr(_local, "output", None)


class _StreamRouter(io.TextIOBase):
    """sys.stdout/sys.stderr on a worker: a cell thread's writes go to its kernel."""

    def __init__(self, name: str, original: Any) -> None:
        self._name, self._original = name, original

    def write(self, text: str) -> int:
        output = _current()
        if output is None:
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
        for output, _ in list(_active.values()):
            try:
                if not output.announced and now - output.started_at >= ANNOUNCE_AFTER:
                    output.announce()
                output.flush()
            except Exception:
                pass


def _mime_bundle(obj: Any, raw: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    if raw and isinstance(obj, dict):
        return obj, {}
    fig_png = _figure_png(obj)
    if fig_png is not None:
        return {"image/png": fig_png, "text/plain": repr(obj)}, {}
    from IPython.core.formatters import DisplayFormatter

    formatter = getattr(_local, "formatter", None)
    if formatter is None:
        formatter = _local.formatter = DisplayFormatter()
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
        threading.Thread(target=_flusher, name="jupyter-elastic-flush", daemon=True).start()
        _hooks_installed = True


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
    install_worker_hooks()
    try:
        worker.batched_stream.interval = 0.0005
    except AttributeError:
        pass


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str | None], ...]:
    return tuple(_read_versions().items())


def versions() -> dict[str, str | None]:
    """Versions of the packages whose mismatch breaks cells (None when absent); cached."""
    return dict(_versions())


def _read_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in PARITY:
        if package == "python":
            continue
        names = [package] if package != "cupy" else ["cupy", "cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x"]
        found[package] = None
        for name in names:
            try:
                found[package] = version(name)
                break
            except PackageNotFoundError:
                continue
    return found


def parity_problems(kernel: dict[str, str | None], worker: dict[str, str | None]) -> list[str]:
    """The critical differences between two ``versions()`` dicts, as readable lines."""
    problems = []
    for package, depth in PARITY.items():
        a, b = kernel.get(package), worker.get(package)
        if a is None or b is None:
            continue  # cupy on one side only is fine: the worker picks its own array library
        if a.split(".")[:depth] != b.split(".")[:depth]:
            problems.append(f"{package} {a} in the kernel but {b} on the worker")
    return problems


def _emit_via(worker: Any, topic: str) -> Callable[[dict[str, Any]], None]:
    if worker is None:
        return lambda event: None

    def emit(event: dict[str, Any]) -> None:
        worker.loop.add_callback(worker.log_event, topic, event)

    return emit


def _to_host(value: Any) -> Any:
    """Device values become host values, also inside lists, tuples, namedtuples and dicts.

    CuPy arrays and cupyx sparse matrices (``.get()``), and Dask arrays with device chunks
    (each chunk brought to NumPy lazily, when the Dask array is computed).
    """
    from ._array import is_dask, is_device, meta_namespace, to_numpy

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


def _format_traceback(exc: BaseException, filename: str) -> list[str]:
    """The traceback from the first frame in the cell on (runner frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return [line.rstrip("\n") for line in "".join(lines).splitlines()]


def _interrupt_thread(thread_id: int) -> bool:
    """Raise KeyboardInterrupt in another thread at its next bytecode."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(KeyboardInterrupt)
    )
    return done == 1


_active_lock = threading.Lock()


def interrupt_cell(cell_id: str) -> bool:
    """Run on a worker (``client.run``): interrupt the cell if it is still running there."""
    with _active_lock:  # the cell cannot end between the check and the interrupt
        item = _active.get(cell_id)
        if item is None:
            return False
        return _interrupt_thread(item[1])


def _clear_interrupt(thread_id: int) -> None:
    """Drop an interrupt aimed at a cell that ended first, so it never hits the next task."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


def cell_running(cell_id: str) -> bool:
    """Run on a worker (``client.run``): whether the cell still runs there."""
    return cell_id in _active


def run_cell(payload: dict[str, Any]) -> dict[str, Any]:
    """Execute one cell body; return ``{"status": ..., ...}`` (never raises for cell errors).

    Statuses: ``ok`` (``outputs``, ``deleted``, ``value``), ``error`` (``ename``,
    ``evalue``, ``traceback``), ``cache-miss`` (``missing`` tokens: re-send them),
    ``mismatch`` (``problems``: package versions differ).
    """
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

    # Inputs: cached ones from the worker's cache, new large ones into it.
    namespace: dict[str, Any] = {}
    missing, used_tokens, from_cache = [], [], []
    for name, value in payload["inputs"].items():
        if isinstance(value, _Cached):
            hit, cached = _cache.get(value.token)
            if not hit:
                missing.append(value.token)
                continue
            namespace[name] = cached
            used_tokens.append((value.token, name))
            from_cache.append(name)
        elif isinstance(value, _CacheIt):
            _cache.put(value.token, value.value)
            namespace[name] = value.value
            used_tokens.append((value.token, name))
        else:
            namespace[name] = value
    if missing:
        return {"status": "cache-miss", "missing": missing}

    cell_id = payload["cell_id"]
    filename = payload["filename"]
    source = payload["source"]
    address = getattr(worker, "address", None)
    output = _CellOutput(_emit_via(worker, payload["topic"]), cell_id, address)
    keep_on_device = payload.get("keep_on_device", False)
    linecache.cache[filename] = (len(source), None, ["\n"] * payload["line_offset"] + source.splitlines(True), filename)
    globals_: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "display": remote_display,
        **namespace,
    }
    _local.output = output
    _active[cell_id] = (output, threading.get_ident())
    started = time.perf_counter()
    result: dict[str, Any]
    try:
        tree = ast.parse(source, filename=filename)
        ast.increment_lineno(tree, payload["line_offset"])
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), globals_)
        value = eval(compile(last, filename, "eval"), globals_) if last is not None else None
        _flush_figures(output)
        outputs, deleted = {}, []
        for name in payload["outputs"]:
            if name in globals_:
                outputs[name] = globals_[name] if keep_on_device else _to_host(globals_[name])
            elif name in namespace:
                deleted.append(name)
        value = value if keep_on_device else _to_host(value)
        unsendable = _unsendable(outputs, value)
        if unsendable:
            result = {"status": "error", "ename": "OutputNotSerializable", "evalue": unsendable,
                      "traceback": []}
        else:
            result = {"status": "ok", "outputs": outputs, "deleted": deleted, "value": value}
    except BaseException as exc:  # the cell's own error, KeyboardInterrupt from an interrupt
        result = {
            "status": "error",
            "ename": type(exc).__name__,
            "evalue": str(exc),
            "traceback": _format_traceback(exc, filename),
        }
    finally:
        compute = time.perf_counter() - started
        with _active_lock:
            _active.pop(cell_id, None)
            _clear_interrupt(threading.get_ident())
        _local.output = None
        linecache.cache.pop(filename, None)
    # An input the cell changed in place must not be served to the next cell.
    for token, name in used_tokens:
        if _changed(namespace[name], token):
            _cache.drop(token)
    release_device_memory()
    result.update(
        compute_seconds=compute,
        worker=address,
        device="gpu" if _on_gpu() else "cpu",
        cached_inputs=from_cache,
    )
    # A small result rides on the last event, so the kernel need not fetch it from the
    # worker in a second round trip; the task's own return value is the fallback.
    inline = _inline(result)
    result["events"] = output.seq + 1
    output.event("end", status=result["status"], inline=inline)
    return result


def _inline(result: dict[str, Any]) -> bytes | None:
    import cloudpickle

    try:
        data = cloudpickle.dumps(result, protocol=5)
    except Exception:
        return None
    return data if len(data) <= INLINE_MAX_BYTES else None


def _changed(value: Any, token: str) -> bool:
    from dask.base import tokenize

    from ._array import register_device_tokens

    try:
        register_device_tokens()  # a CuPy input is hashed on the GPU, not copied to the host
        return tokenize(value) != token
    except Exception:
        return True


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


def _flush_figures(output: _CellOutput) -> None:
    """Open matplotlib figures become PNG displays, as the inline backend does."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for number in pyplot.get_fignums():
        figure = pyplot.figure(number)
        output.event("display", data={"image/png": _figure_png(figure),
                                       "text/plain": repr(figure)}, metadata={})
    pyplot.close("all")


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
        from ._array import gpu_available

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
        from ._array import gpu_available
    except ImportError:
        return False
    return bool(gpu_available())
