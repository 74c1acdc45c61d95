"""Cell dispatch: a ``%%gpu`` cell from its inputs to its result, on the session's cluster.

:class:`Dispatcher` prepares the inputs (large unchanged ones by content token), submits the
cell as one Dask task straight to the scheduler, and while it runs drains the worker's
output events on the *cell's own thread* (ipykernel drops output written from other
threads), so ``print`` appears as it happens. Interrupts and ``--timeout`` cancel the task,
interrupt the cell's thread on the worker, and restart the worker after a grace period if
the cell still runs, so the GPU is really free. Each cell ends in one history row, reported
to the control plane (which prices it); nothing is bound here (``magics.py`` binds).
"""

from __future__ import annotations

import os
import queue
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    CellCancelled,
    CellTimeout,
    ConfigError,
    ElasticError,
    EnvironmentMismatch,
    InputNotSerializable,
    NoGPUError,
    RemoteCellError,
)
from ..execution import payload as cell_payload
from ..execution import worker as worker_side
from ..execution.analysis import CellPlan
from ..execution.payload import CACHE_MIN_BYTES, Cached, CacheIt, input_token, on_device
from ..models import new_id, utcnow_iso
from ..protocol import CELL_PREFIX, CPU_RESOURCE, GPU_RESOURCE
from .display import PhaseDisplay, render_event
from .local import run_local
from .session import ElasticSession

_DONE = object()
#: How long to wait for a worker's last output events after its result arrived (seconds).
EVENT_GRACE = 2.0


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


@dataclass
class CellRun:
    """One cell's bookkeeping from start to its history row."""

    plan: CellPlan
    options: CellOptions
    execution_count: int | None
    name: str
    started_wall: float = field(default_factory=time.monotonic)
    started_iso: str = field(default_factory=utcnow_iso)

    def row(self, lease: dict[str, Any] | None, worker: str | None, compute: float, status: str,
            error: BaseException | None, cached: list[str] | None = None) -> dict[str, Any]:
        """The history row of this run: what happened (the control plane prices it)."""
        options = self.options
        on_gpu = bool(lease and lease["has_gpu"]) and not options.local
        if options.cpus is not None:
            cpus = float(options.cpus)
        else:
            cpus = (lease["cpus_per_worker"] if lease else 1) * (min(1.0, options.gpus or 1.0))
        first_line = next((line.strip() for line in self.plan.source.splitlines() if line.strip()), "")
        return {
            "id": new_id("cell-"),
            "cell": self.execution_count,
            "started": self.started_iso,
            "backend": "local-kernel" if options.local else (lease["backend"] if lease else "local"),
            "cluster_id": lease["cluster_id"] if lease else None,
            "worker": worker,
            "device": "local" if options.local else ("gpu" if on_gpu else "cpu"),
            "seconds": time.monotonic() - self.started_wall,
            "compute_seconds": compute,
            "gpus": options.gpus if on_gpu else 0.0,
            "cpus": 0.0 if on_gpu or options.local else cpus,
            "status": status,
            "error": _short(error),
            "source": first_line[:120],
            "notebook": os.environ.get("JPY_SESSION_NAME") or None,
            "cached_inputs": list(cached or []),
        }


class Dispatcher:
    """Runs cells on the session's cluster (or in the kernel with ``--local``)."""

    def __init__(self, session: ElasticSession) -> None:
        self.session = session
        self._no_gpu_said = False
        self._cell_counter = 0

    def report(self, row: dict[str, Any]) -> dict[str, Any]:
        """Send a finished cell's row to the control plane (never raises)."""
        try:
            self.session.control_plane.cell_finished(row["cluster_id"], row)
        except Exception:
            pass
        return row

    # ----------------------------------------------------------------- inputs
    def prepare_inputs(self, plan: CellPlan, namespace: dict[str, Any], *,
                       cache: bool = True) -> dict[str, Any]:
        """The values of the names the cell reads, checked to be sendable; with ``cache``,
        large ones wrapped for the workers' cache (only a token when a worker holds them)."""
        import cloudpickle
        from dask.sizeof import sizeof

        inputs: dict[str, Any] = {}
        for name in plan.inputs:
            if name not in namespace:
                continue
            value = namespace[name]
            if isinstance(value, types.ModuleType):
                inputs[name] = value  # travels by name; the worker imports it
                continue
            try:
                if not on_device(value):  # pickling a device array copies it to the host
                    cloudpickle.dumps(value, protocol=5, buffer_callback=lambda buffer: None)
            except Exception as exc:
                raise InputNotSerializable(
                    f"cannot send `{name}` ({type(value).__name__}) to the worker: "
                    f"{type(exc).__name__}: {exc}",
                    hint=f"create `{name}` inside the %%gpu cell, or leave it out with --in",
                ) from None
            try:
                big = cache and sizeof(value) >= CACHE_MIN_BYTES
            except Exception:
                big = False
            if big:
                token = input_token(value)
                inputs[name] = Cached(token) if token in self.session.sent_tokens else CacheIt(token, value)
            else:
                inputs[name] = value
        return inputs

    # ----------------------------------------------------------------- dispatch
    def run(self, plan: CellPlan, namespace: dict[str, Any], options: CellOptions,
            execution_count: int | None = None) -> CellResult:
        """Run the cell remotely (or in-process with ``--local``); bind nothing here."""
        self._cell_counter += 1
        name = f"In[{execution_count}]" if execution_count is not None else f"cell {self._cell_counter}"
        run = CellRun(plan, options, execution_count, name)
        if options.local:
            # The kernel holds the values themselves: no cache tokens here.
            inputs = self.prepare_inputs(plan, namespace, cache=False)
            return CellResult(*run_local(run, inputs, self.report))

        session = self.session
        settings = session.settings  # read once per cell: the dispatch path is latency-bound
        phases = PhaseDisplay(run.started_wall)
        lease = session.ensure_cluster(options.backend or settings.backend, options.gpu_type, phases)
        resources = self._resources(lease, options)
        inputs = self.prepare_inputs(plan, namespace)
        attempts = 1 + max(0, options.retries)
        worker: str | None = None
        compute = 0.0
        status, error = "error", None  # type: str, BaseException | None
        session.control_plane.cell_started(lease["cluster_id"])  # once per cell: the idle clock
        try:
            for attempt in range(1, attempts + 1):
                result = self._attempt(run, inputs, namespace, resources, phases)
                worker = result.get("worker") or worker
                compute += float(result.get("compute_seconds", 0.0))
                if result["status"] == "ok":
                    status = "ok"
                    row = self.report(run.row(lease, worker, compute, "ok", None,
                                              cached=result.get("cached_inputs") or []))
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
                self.report(run.row(lease, worker, compute, status, error))

    def _resources(self, lease: dict[str, Any], options: CellOptions) -> dict[str, float] | None:
        """The worker resources the cell holds; refuses what no worker of the cluster has."""
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
        resource = GPU_RESOURCE if lease["has_gpu"] else CPU_RESOURCE
        amount = options.gpus if lease["has_gpu"] else min(1.0, options.gpus or 1.0)
        return {resource: amount} if amount > 0 else None

    def _attempt(self, run: CellRun, inputs: dict[str, Any], namespace: dict[str, Any],
                 resources: dict[str, float] | None, phases: PhaseDisplay) -> dict[str, Any]:
        """One run of the cell; re-sends cached inputs a worker no longer holds."""
        plan = run.plan
        payload = {
            "cell_id": new_id("c"), "source": plan.source, "line_offset": plan.line_offset,
            "filename": f"<%%gpu {run.name}>", "inputs": inputs, "outputs": plan.outputs,
            "topic": self.session.topic, "keep_on_device": run.options.keep_on_device,
            "versions": cell_payload.versions(),
        }
        result = self._submit_and_wait(payload, resources, run.options, phases, run.started_wall)
        if result["status"] == "cache-miss":  # another worker, or a restarted one
            self.session.sent_tokens -= set(result["missing"])
            inputs = {n: (CacheIt(v.token, namespace[n]) if isinstance(v, Cached) else v)
                      for n, v in inputs.items()}
            payload = dict(payload, inputs=inputs, cell_id=new_id("c"))
            result = self._submit_and_wait(payload, resources, run.options, phases, run.started_wall)
        if result["status"] == "mismatch":
            raise EnvironmentMismatch(
                "the worker's packages differ from the kernel's: " + "; ".join(result["problems"]),
                hint="install the same versions on the workers (same image or environment) "
                     "and start a new cluster with %gpu stop",
            )
        # The worker cached every large input before running the cell.
        self.session.sent_tokens.update(v.token for v in inputs.values() if isinstance(v, CacheIt))
        return result

    def _direct(self) -> bool:
        """Whether this kernel reaches the workers themselves (a local cluster's are on this
        machine; Kubernetes and Gateway workers may sit behind the scheduler's address)."""
        return (self.session.lease or {}).get("backend") == "local"

    def _upload(self, client: Any, payload: dict[str, Any],
                phases: PhaseDisplay) -> tuple[dict[str, Any], list[Any]]:
        """Large new inputs go straight to a worker ahead of the task (``scatter``), as bare
        Dask sends data, instead of inside the task through the scheduler (which would
        unpickle and re-send them). The payload then names them under ``scattered``."""
        big = {n: v for n, v in payload["inputs"].items()
               if isinstance(v, CacheIt) and not on_device(v.value) and _nbytes(v.value) >= SCATTER_MIN_BYTES}
        if not big:
            return payload, []
        try:
            while not client.nthreads():  # scatter would wait for one with a 30 s limit
                phases.show("workers", "waiting for a worker")
                time.sleep(0.1)
        except KeyboardInterrupt:
            raise CellCancelled("interrupted while waiting for a worker") from None
        if phases.shown:
            mib = sum(_nbytes(v.value) for v in big.values()) / 2**20
            phases.show("workers", f"uploading inputs ({mib:.0f} MiB)")
        futures = client.scatter([v.value for v in big.values()], hash=False, direct=self._direct())
        inputs = dict(payload["inputs"])
        inputs.update(zip(big, futures, strict=True))
        return dict(payload, inputs=inputs, scattered={n: v.token for n, v in big.items()}), futures

    def _submit_and_wait(self, payload: dict[str, Any], resources: dict[str, float] | None,
                         options: CellOptions, phases: PhaseDisplay, t0: float) -> dict[str, Any]:
        client = self.session.client
        events = self.session.events
        cell_id = payload["cell_id"]
        payload, uploaded = self._upload(client, payload, phases)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Large object.*")
            warnings.filterwarnings("ignore", message=".*Sending large graph.*")
            future = client.submit(worker_side.run_cell, payload, key=f"{CELL_PREFIX}-{cell_id}",
                                   resources=resources, pure=False)
        # No done-callback: the worker's last event says the cell ended (a result too large
        # to ride on it is then fetched below), and a task that died without one is seen
        # by polling ``done()`` while waiting. A callback would cost two more thread
        # wake-ups per cell (the client's loop and Dask's callback thread).
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
                    event = events.get(timeout=wait)
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
                        render_event(event)
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
                # A large result: straight from the worker where it can be reached (a
                # local cluster), not relayed by the scheduler.
                result = client.gather(future, direct=self._direct())
        except Exception as exc:
            raise ElasticError(
                f"the worker running this cell failed: {type(exc).__name__}: {exc}",
                hint="run the cell again; use --retries N to retry automatically",
            ) from None
        finally:
            future.release()
            for upload in uploaded:  # the worker's input cache keeps what it needs
                upload.release()
        # Output sent just before the result may still be on its way.
        expected = int(result.get("events", 0))
        late_deadline = time.monotonic() + EVENT_GRACE
        while seen < expected and time.monotonic() < late_deadline:
            try:
                event = events.get(timeout=0.05)
            except queue.Empty:
                continue
            if event is _DONE or event.get("cell") != cell_id:
                continue
            seen += 1
            if event["kind"] not in ("started", "end"):
                render_event(event)
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
        grace = self.session.settings.interrupt_grace
        try:
            running = [a for a, r in client.run(worker_side.cell_running, cell_id, workers=where).items() if r]
            if not running:
                return "cancelled"
            client.run(worker_side.interrupt_cell, cell_id, workers=running)
            deadline = time.monotonic() + grace
            while running and time.monotonic() < deadline:
                time.sleep(0.05)
                state = client.run(worker_side.cell_running, cell_id, workers=running)
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


#: Cached inputs at least this large are scattered to a worker before the task.
SCATTER_MIN_BYTES = 8 << 20


def _nbytes(value: Any) -> int:
    from dask.sizeof import sizeof

    try:
        return int(sizeof(value))
    except Exception:
        return 0


def _short(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, RemoteCellError):
        return f"{error.ename}: {error.evalue}"[:300]
    message = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {message}"[:300]
