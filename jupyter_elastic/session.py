"""This kernel's side of elastic compute: its lease, its Dask client, and cell dispatch.

One :class:`ElasticSession` per kernel. It asks the control plane for a cluster (showing
start-up phases while one starts), keeps the lease alive from a heartbeat thread, and runs
each cell as one Dask task straight on the scheduler. While the task runs, the *cell's own
thread* drains the output events the worker sends (ipykernel drops output written from
other threads), so ``print`` appears as it happens. Interrupts and ``--timeout`` cancel
the task, interrupt the cell's thread on the worker, and restart the worker after a grace
period if the cell still runs, so the GPU is really free.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import queue
import sys
import threading
import time
import types
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from . import remote
from . import worker as runner
from .config import Settings, load_settings
from .controlplane import ControlPlane, connect_control_plane
from .errors import (
    CellCancelled,
    CellTimeout,
    ConfigError,
    ElasticError,
    EnvironmentMismatch,
    NoGPUError,
)
from .metering import cell_charge
from .models import new_id, utcnow_iso
from .remote import CellPlan
from .worker import CACHE_MIN_BYTES

_DONE = object()
#: How long to wait for a worker's last output events after its result arrived (seconds).
EVENT_GRACE = 2.0


class InputNotSerializable(ElasticError):
    """A name the cell reads cannot be sent to a worker."""

    status_code = 400


class RemoteCellError(Exception):
    """The cell raised on the worker; shown as the remote traceback, cell line numbers."""

    def __init__(self, ename: str, evalue: str, traceback_lines: list[str], worker: str | None):
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue = ename, evalue
        self.traceback_lines, self.worker = traceback_lines, worker

    def _render_traceback_(self) -> list[str]:
        where = f" on worker {self.worker}" if self.worker else ""
        header = f"\x1b[0;31m{self.ename}\x1b[0m raised in a %%gpu cell{where}:"
        body = self.traceback_lines or [f"{self.ename}: {self.evalue}"]
        return [header, *body]


@dataclass
class CellOptions:
    """The ``%%gpu`` flags that matter once the cell is parsed."""

    gpus: float = 1.0
    backend: str | None = None
    timeout: float | None = None
    retries: int = 0
    keep_on_device: bool = False
    require_gpu: bool = False
    local: bool = False
    gpu_type: str | None = None
    cpus: int | None = None


@dataclass
class CellResult:
    """What came back from a successful cell."""

    value: Any
    outputs: dict[str, Any]
    deleted: list[str]
    row: dict[str, Any] = field(default_factory=dict)


class PhaseDisplay:
    """One updating line in the cell while a cluster or worker starts (never for warm cells)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self._handle: Any = None
        self.phase = ""
        self.shown = False

    def show(self, phase: str, detail: str = "") -> None:
        from IPython.display import display

        self.phase = phase
        elapsed = time.monotonic() - self.start
        steps = ["queued", "scheduler", "workers", "ready"]
        marks = []
        for step in steps:
            if step == phase:
                marks.append(f"[{step}]")
            else:
                marks.append(step)
        text = f"jupyter-elastic: {' → '.join(marks)}  {elapsed:.1f} s" + (f"  ({detail})" if detail else "")
        bundle = {"text/plain": text}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        self.shown = True


class ElasticSession:
    """A kernel's lease on a cluster, its Dask client, and the cell dispatcher."""

    def __init__(self, control_plane: ControlPlane | None = None, session_id: str | None = None):
        self.id = session_id or _kernel_id()
        self._control_plane = control_plane
        self.lease: dict[str, Any] | None = None
        self.client: Any = None
        self._events: queue.Queue[Any] = queue.Queue()
        self._sent_tokens: set[str] = set()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._no_gpu_said = False
        self._cell_counter = 0
        self._pricing = load_settings().pricing  # the running cell's prices (set per cell)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- plumbing
    @property
    def control_plane(self) -> ControlPlane:
        if self._control_plane is None:
            self._control_plane = connect_control_plane()
        return self._control_plane

    @property
    def settings(self) -> Settings:
        return load_settings()

    def ensure_cluster(self, backend: str | None = None, gpu_type: str | None = None,
                       phases: PhaseDisplay | None = None, name: str | None = None) -> dict[str, Any]:
        """The lease of this session's cluster, starting one (with phases shown) if needed."""
        backend = backend or self.settings.backend
        name = name or session_cluster_name(backend)
        if self.lease is not None and self.lease["backend"] == backend and (name is None or self.lease["name"] == name):
            return self.lease
        progress: queue.Queue[tuple[str, str]] = queue.Queue()
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jupyter-elastic-start")
        future = pool.submit(
            self.control_plane.acquire, self.id, backend=backend, name=name, gpu_type=gpu_type,
            progress=lambda phase, detail: progress.put((phase, detail)),
        )
        try:
            while True:
                try:
                    phase, detail = progress.get(timeout=0.1)
                    if phases is not None and phase != "ready":
                        phases.show(phase, detail)
                except queue.Empty:
                    if future.done():
                        break
                    if phases is not None and phases.shown:
                        phases.show(phases.phase)
        except KeyboardInterrupt:
            # The start goes on in the background; the next cell picks the cluster up.
            raise CellCancelled(
                "interrupted while the cluster was starting; it keeps starting, and the next "
                "%%gpu cell uses it (%gpu stop to stop it)"
            ) from None
        finally:
            pool.shutdown(wait=False)
        lease = future.result()
        self._connect(lease)
        return lease

    def _connect(self, lease: dict[str, Any]) -> None:
        from distributed import Client

        self._disconnect()
        kwargs: dict[str, Any] = {}
        if lease.get("client"):  # e.g. a gateway's TLS credentials
            from .backends import backend_class

            kwargs = backend_class(lease["backend"]).client_kwargs(lease["client"])  # type: ignore[attr-defined]
        client = Client(lease["scheduler_address"], set_as_default=False, timeout="30s", **kwargs)
        try:
            client.scheduler_comm.interval = 0.0005  # cells are rare: send at once
        except AttributeError:
            pass
        self._topic = f"jupyter-elastic-{self.id}-{uuid.uuid4().hex[:6]}"
        client.subscribe_topic(self._topic, lambda event: self._events.put(event[1]))
        self.client, self.lease = client, lease
        self._sent_tokens.clear()
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="jupyter-elastic-heartbeat", daemon=True)
            self._heartbeat.start()

    def _disconnect(self) -> None:
        client, self.client, self.lease = self.client, None, None
        if client is not None:
            try:
                client.close(timeout=5)
            except Exception:
                pass

    def _beat(self) -> None:
        while not self._stop.is_set():
            lease = self.lease
            ttl = float(lease["lease_ttl"]) if lease else 30.0
            if self._stop.wait(max(0.2, min(ttl / 4, 10.0))):
                return
            lease = self.lease
            if lease is None:
                continue
            try:
                alive = self.control_plane.heartbeat(lease["lease_id"])
            except Exception:
                continue
            if not alive and self.lease is lease:
                self._disconnect()  # the cluster is gone; the next cell starts a new one

    def forget_cluster(self, cluster_id: str | None = None) -> None:
        """Drop the client after the session's cluster was stopped."""
        if self.lease is not None and (cluster_id is None or self.lease["cluster_id"] == cluster_id):
            self._disconnect()

    def close(self) -> None:
        """Release the lease and close the client (kernel shutdown or %unload_ext)."""
        self._stop.set()
        lease = self.lease
        self._disconnect()
        if lease is not None:
            try:
                self.control_plane.release(lease["lease_id"])
            except Exception:
                pass
        if self._control_plane is not None:
            self._control_plane.close()
            self._control_plane = None

    # ----------------------------------------------------------------- inputs
    def _prepare_inputs(self, plan: CellPlan, namespace: dict[str, Any]) -> dict[str, Any]:
        import cloudpickle
        from dask.base import tokenize
        from dask.sizeof import sizeof

        from ._array import is_device, register_device_tokens

        register_device_tokens()  # --keep-on-device values are hashed on their device
        inputs: dict[str, Any] = {}
        for name in plan.inputs:
            if name not in namespace:
                continue
            value = namespace[name]
            if isinstance(value, types.ModuleType):
                inputs[name] = value  # travels by name; the worker imports it
                continue
            try:
                if not is_device(value):  # pickling a device array copies it to the host
                    cloudpickle.dumps(value, protocol=5, buffer_callback=lambda buffer: None)
            except Exception as exc:
                raise InputNotSerializable(
                    f"cannot send `{name}` ({type(value).__name__}) to the worker: "
                    f"{type(exc).__name__}: {exc}",
                    hint=f"create `{name}` inside the %%gpu cell, or leave it out with --in",
                ) from None
            try:
                big = sizeof(value) >= CACHE_MIN_BYTES
            except Exception:
                big = False
            if big:
                token = tokenize(value)
                if token in self._sent_tokens:
                    inputs[name] = runner._Cached(token)
                else:
                    inputs[name] = runner._CacheIt(token, value)
            else:
                inputs[name] = value
        return inputs

    # ----------------------------------------------------------------- dispatch
    def run(self, plan: CellPlan, namespace: dict[str, Any], options: CellOptions,
            execution_count: int | None = None) -> CellResult:
        """Run the cell remotely (or in-process with ``--local``); bind nothing here."""
        started_wall = time.monotonic()
        started_iso = utcnow_iso()
        self._cell_counter += 1
        cell_name = f"In[{execution_count}]" if execution_count is not None else f"cell {self._cell_counter}"
        if options.local:
            return self._run_local(plan, namespace, options, cell_name, started_wall, started_iso, execution_count)

        settings = self.settings  # read once per cell: the dispatch path is latency-bound
        self._pricing = settings.pricing
        phases = PhaseDisplay(started_wall)
        lease = self.ensure_cluster(options.backend or settings.backend, options.gpu_type, phases)
        if not lease["has_gpu"]:
            if options.require_gpu:
                raise NoGPUError(f"the {lease['backend']} cluster has no GPU worker (--require-gpu)")
            if not self._no_gpu_said:
                self._no_gpu_said = True
                print("jupyter-elastic: no GPU found; this cell runs on CPU workers (NumPy path). "
                      "Use --require-gpu to make that an error.", file=sys.stderr)
        if lease["has_gpu"] and options.gpus > float(lease["gpus_per_worker"]):
            raise ConfigError(
                f"--gpus {options.gpus:g} is more than one worker of this cluster has "
                f"({float(lease['gpus_per_worker']):g}); a cell runs on one worker",
                hint="ask for fewer GPUs, or set jupyter-elastic.worker.gpus and start a new "
                     "cluster (%gpu stop, then run the cell again)",
            )
        inputs = self._prepare_inputs(plan, namespace)
        resource = "GPU" if lease["has_gpu"] else "CELL"
        amount = options.gpus if lease["has_gpu"] else min(1.0, options.gpus or 1.0)
        if amount <= 0:
            resources = None
        else:
            resources = {resource: amount}
        attempts = 1 + max(0, options.retries)
        worker: str | None = None
        compute = 0.0
        status, error = "error", None  # type: str, BaseException | None
        self.control_plane.cell_started(lease["cluster_id"])  # once per cell: the idle clock
        try:
            for attempt in range(1, attempts + 1):
                result = self._attempt(plan, inputs, namespace, options, cell_name, resources, phases,
                                       started_wall)
                worker = result.get("worker") or worker
                compute += float(result.get("compute_seconds", 0.0))
                if result["status"] == "ok":
                    status = "ok"
                    row = self._finish_row(lease, cell_name, started_iso, started_wall, worker, options,
                                           compute, "ok", None, plan, execution_count,
                                           cached=result.get("cached_inputs") or [])
                    return CellResult(result["value"], result["outputs"], result["deleted"], row)
                failure = RemoteCellError(result["ename"], result["evalue"], result["traceback"], worker)
                if result["ename"] == "OutputNotSerializable" or attempt == attempts:
                    raise failure
                print(f"jupyter-elastic: {result['ename']} on attempt {attempt} of {attempts}; "
                      "retrying (--retries)", file=sys.stderr)
            raise AssertionError("unreachable: the last attempt returns or raises")
        except BaseException as exc:
            error = exc
            if isinstance(exc, CellTimeout):
                status = "timeout"
            elif isinstance(exc, (CellCancelled, KeyboardInterrupt)):
                status = "cancelled"
            raise
        finally:
            if status != "ok":
                self._finish_row(lease, cell_name, started_iso, started_wall, worker, options, compute,
                                 status, _short(error), plan, execution_count)

    def _attempt(self, plan: CellPlan, inputs: dict[str, Any], namespace: dict[str, Any],
                 options: CellOptions, cell_name: str, resources: dict[str, float] | None,
                 phases: PhaseDisplay, started_wall: float) -> dict[str, Any]:
        """One run of the cell; re-sends cached inputs a worker no longer holds."""
        payload = {
            "cell_id": new_id("c"), "source": plan.source, "line_offset": plan.line_offset,
            "filename": f"<%%gpu {cell_name}>", "inputs": inputs, "outputs": plan.outputs,
            "topic": self._topic, "keep_on_device": options.keep_on_device,
            "versions": runner.versions(),
        }
        result = self._submit_and_wait(payload, resources, options, phases, started_wall)
        if result["status"] == "cache-miss":  # another worker, or a restarted one
            self._sent_tokens -= set(result["missing"])
            inputs = {n: (runner._CacheIt(v.token, namespace[n]) if isinstance(v, runner._Cached) else v)
                      for n, v in inputs.items()}
            payload = dict(payload, inputs=inputs, cell_id=new_id("c"))
            result = self._submit_and_wait(payload, resources, options, phases, started_wall)
        if result["status"] == "mismatch":
            raise EnvironmentMismatch(
                "the worker's packages differ from the kernel's: " + "; ".join(result["problems"]),
                hint="install the same versions on the workers (same image or environment) "
                     "and start a new cluster with %gpu stop",
            )
        # The worker cached every large input before running the cell.
        self._sent_tokens.update(v.token for v in inputs.values() if isinstance(v, runner._CacheIt))
        return result

    def _submit_and_wait(self, payload: dict[str, Any], resources: dict[str, float] | None,
                         options: CellOptions, phases: PhaseDisplay, t0: float) -> dict[str, Any]:
        client = self.client
        cell_id = payload["cell_id"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Large object.*")
            warnings.filterwarnings("ignore", message=".*Sending large graph.*")
            future = client.submit(runner.run_cell, payload, key=f"gpu-cell-{cell_id}",
                                   resources=resources, pure=False)
        future.add_done_callback(lambda f: self._events.put(_DONE))
        deadline = None if options.timeout is None else time.monotonic() + options.timeout
        worker: str | None = None
        seen = 0
        ended = False
        inline: bytes | None = None
        submitted = time.monotonic()
        try:
            while True:
                wait = 0.1
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                try:
                    event = self._events.get(timeout=wait)
                except queue.Empty:
                    event = None
                if event is _DONE:
                    if future.done():
                        break
                    continue
                if event is not None:
                    if event.get("cell") != cell_id:
                        continue
                    seen += 1
                    kind = event["kind"]
                    if kind == "started":
                        worker = event.get("worker")
                        if phases.shown:
                            phases.show("ready", f"worker {worker}")
                    elif kind == "end":
                        ended = True
                        if event.get("inline") is not None:
                            inline = event["inline"]
                            break
                    else:
                        _render(event)
                elif future.done():
                    break
                elif not worker and not phases.shown and time.monotonic() - submitted > 0.5:
                    phases.show("workers", "waiting for a worker")
                elif not worker and phases.shown:
                    phases.show("workers", "waiting for a worker")
                if deadline is not None and time.monotonic() >= deadline:
                    stopped = self._stop_remote(client, future, cell_id, worker, ended)
                    raise CellTimeout(
                        f"the cell ran past --timeout {options.timeout:g}s and was cancelled"
                        + ("; its worker was restarted to free the GPU" if stopped == "restarted" else "")
                    )
        except KeyboardInterrupt:
            stopped = self._stop_remote(client, future, cell_id, worker, ended)
            raise CellCancelled(
                "interrupted: the remote cell was cancelled"
                + ("; its worker was restarted to free the GPU" if stopped == "restarted" else "")
            ) from None
        if phases.shown and phases.phase != "ready":
            phases.show("ready", f"worker {worker}" if worker else "")
        try:
            if inline is not None:
                import cloudpickle

                result = cloudpickle.loads(inline)
            else:
                result = future.result()
        except Exception as exc:
            raise ElasticError(
                f"the worker running this cell failed: {type(exc).__name__}: {exc}",
                hint="run the cell again; use --retries N to retry automatically",
            ) from None
        finally:
            future.release()
        # Output sent just before the result may still be on its way.
        expected = int(result.get("events", 0))
        late_deadline = time.monotonic() + EVENT_GRACE
        while seen < expected and time.monotonic() < late_deadline:
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                continue
            if event is _DONE or event.get("cell") != cell_id:
                continue
            seen += 1
            if event["kind"] not in ("started", "end"):
                _render(event)
        return result

    def _stop_remote(self, client: Any, future: Any, cell_id: str, worker: str | None,
                     ended: bool) -> str:
        """Cancel a cell; interrupt its thread wherever it runs; restart any worker on which
        it is still running after the grace period (a cell stuck in C code)."""
        try:
            future.cancel()
        except Exception:
            pass
        if ended:
            return "cancelled"
        # A cell stopped before it announced itself may already run somewhere: ask them all.
        where = [worker] if worker else None
        grace = self.settings.interrupt_grace
        try:
            running = [a for a, r in client.run(runner.cell_running, cell_id, workers=where).items() if r]
            if not running:
                return "cancelled"
            client.run(runner.interrupt_cell, cell_id, workers=running)
            deadline = time.monotonic() + grace
            while running and time.monotonic() < deadline:
                time.sleep(0.05)
                state = client.run(runner.cell_running, cell_id, workers=running)
                running = [a for a, r in state.items() if r]
            if not running:
                return "interrupted"
        except KeyboardInterrupt:
            running = [worker] if worker else []
        except Exception:
            return "cancelled"
        if running:
            client.restart_workers(running, timeout=60, raise_for_error=False)
            return "restarted"
        return "cancelled"

    def _run_local(self, plan: CellPlan, namespace: dict[str, Any], options: CellOptions, cell_name: str,
                   started_wall: float, started_iso: str, execution_count: int | None) -> CellResult:
        """``--local``: the same semantics in this kernel — copies in, all-or-nothing out,
        ``--retries``, and ``--timeout`` (an alarm on the kernel's main thread)."""
        import ast
        import linecache

        import cloudpickle
        from IPython.display import display

        inputs = {n: (v.value if isinstance(v, runner._CacheIt) else v)
                  for n, v in self._prepare_inputs(plan, namespace).items()}
        filename = f"<%%gpu --local {cell_name}>"
        linecache.cache[filename] = (len(plan.source), None,
                                     ["\n"] * plan.line_offset + plan.source.splitlines(True), filename)
        attempts = 1 + max(0, options.retries)
        compute = 0.0

        def finish(status: str, error: BaseException | None) -> dict[str, Any]:
            return self._finish_row(None, cell_name, started_iso, started_wall, "local", options,
                                    compute, status, _short(error), plan, execution_count)

        for attempt in range(1, attempts + 1):
            globals_: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__,
                                        "display": display}
            for name, value in inputs.items():
                globals_[name] = (value if isinstance(value, types.ModuleType)
                                  else cloudpickle.loads(cloudpickle.dumps(value)))
            tree = remote.parse_cell(plan.source, plan.line_offset)
            ast.increment_lineno(tree, plan.line_offset)
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]
            t = time.perf_counter()
            try:
                with _alarm(options.timeout):
                    exec(compile(tree, filename, "exec"), globals_)
                    value = eval(compile(last, filename, "eval"), globals_) if last is not None else None
            except CellTimeout as exc:
                compute += time.perf_counter() - t
                finish("timeout", exc)
                raise
            except KeyboardInterrupt:
                compute += time.perf_counter() - t
                stop = CellCancelled("interrupted: the --local cell was stopped")
                finish("cancelled", stop)
                raise stop from None
            except Exception as exc:
                compute += time.perf_counter() - t
                if attempt < attempts:
                    print(f"jupyter-elastic: {type(exc).__name__} on attempt {attempt} of {attempts}; "
                          "retrying (--retries)", file=sys.stderr)
                    continue
                finish("error", exc)
                raise RemoteCellError(type(exc).__name__, str(exc),
                                      runner._format_traceback(exc, filename), "local") from None
            compute += time.perf_counter() - t
            outputs = {n: globals_[n] for n in plan.outputs if n in globals_}
            deleted = [n for n in plan.outputs if n not in globals_ and n in inputs]
            return CellResult(value, outputs, deleted, finish("ok", None))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _finish_row(self, lease: dict[str, Any] | None, cell_name: str, started_iso: str,
                    started_wall: float, worker: str | None, options: CellOptions, compute: float,
                    status: str, error: str | None, plan: CellPlan, execution_count: int | None,
                    cached: list[str] | None = None) -> dict[str, Any]:
        on_gpu = bool(lease and lease["has_gpu"]) and not options.local
        gpus = options.gpus if on_gpu else 0.0
        if options.cpus is not None:
            cpus = float(options.cpus)
        else:
            cpus = (lease["cpus_per_worker"] if lease else 1) * (min(1.0, options.gpus or 1.0))
        if options.local:
            gpu_s, cpu_s, cost = 0.0, 0.0, 0.0
        else:
            gpu_s, cpu_s, cost = cell_charge(self._pricing, compute, gpus, cpus, on_gpu)
        first_line = next((line.strip() for line in plan.source.splitlines() if line.strip()), "")
        row: dict[str, Any] = {
            "id": new_id("cell-"),
            "cell": execution_count,
            "started": started_iso,
            "backend": "local-kernel" if options.local else (lease["backend"] if lease else None),
            "cluster_id": lease["cluster_id"] if lease else None,
            "worker": worker,
            "device": "local" if options.local else ("gpu" if on_gpu else "cpu"),
            "seconds": time.monotonic() - started_wall,
            "compute_seconds": compute,
            "gpus": gpus,
            "gpu_seconds": gpu_s,
            "cpu_seconds": cpu_s,
            "cost": cost,
            "status": status,
            "error": error,
            "source": first_line[:120],
            "cached_inputs": list(cached or []),
        }
        try:
            self.control_plane.cell_finished(row["cluster_id"], row)
        except Exception:
            pass
        return row


@contextlib.contextmanager
def _alarm(seconds: float | None) -> Any:
    """Raise CellTimeout in this (the kernel's main) thread after ``seconds``."""
    if seconds is None:
        yield
        return
    import signal

    if threading.current_thread() is not threading.main_thread():
        raise ConfigError("--timeout with --local needs the kernel's main thread; drop one of them")

    def expire(signum: int, frame: Any) -> None:
        raise CellTimeout(f"the cell ran past --timeout {seconds:g}s and was stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _render(event: dict[str, Any]) -> None:
    """Show one output event in the running cell (called on the cell's thread)."""
    kind = event["kind"]
    if kind == "stream":
        stream = sys.stderr if event.get("name") == "stderr" else sys.stdout
        stream.write(event["text"])
        stream.flush()
    elif kind == "display":
        from IPython.display import publish_display_data

        sys.stdout.flush()
        publish_display_data(event["data"], event.get("metadata") or {})
    elif kind == "clear":
        from IPython.display import clear_output

        clear_output(wait=bool(event.get("wait")))


def _short(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, RemoteCellError):
        return f"{error.ename}: {error.evalue}"[:300]
    message = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {message}"[:300]


def session_cluster_name(backend: str = "local") -> str | None:
    """A stable cluster name for this notebook and backend (see ``_cluster_name``)."""
    return _cluster_name(os.environ.get("JPY_SESSION_NAME"), backend)


@functools.lru_cache(maxsize=16)
def _cluster_name(path: str | None, backend: str) -> str | None:
    """A stable cluster name for this notebook and backend, so a restarted kernel finds its
    cluster (one per backend: ``%%gpu --backend`` may use several).

    Jupyter servers set ``JPY_SESSION_NAME`` (the notebook's path) for the kernels they
    start; elsewhere there is no notebook identity and each kernel gets a fresh cluster.
    """
    import hashlib
    import re

    if not path:
        return None
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:24].strip("-") or "notebook"
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    suffix = "" if backend == "local" else f"-{backend[:4]}"
    return f"nb-{slug}-{digest}{suffix}"


def _kernel_id() -> str:
    """This kernel's id (from its connection file) or a random one outside a kernel."""
    try:
        from ipykernel.kernelapp import IPKernelApp

        if IPKernelApp.initialized():
            path = IPKernelApp.instance().connection_file
            name = os.path.basename(path)
            if name.startswith("kernel-") and name.endswith(".json"):
                return name[len("kernel-"):-len(".json")]
    except Exception:
        pass
    return uuid.uuid4().hex
