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

from ..controlplane.cells import STOPPED as _STOPPED
from ..controlplane.cells import bounded as _bounded
from ..controlplane.cells import kill_worker, stop_reached
from ..controlplane.cells import processing_on as _processing_on
from ..errors import (
    CellCancelled,
    CellTimeout,
    ConfigError,
    ElasticError,
    EnvironmentMismatch,
    InputNotSerializable,
    NoGPUError,
    RemoteCellError,
    WorkerLost,
)
from ..execution import payload as cell_payload
from ..execution import worker as worker_side
from ..execution.analysis import CellPlan
from ..execution.payload import CACHE_MIN_BYTES, Cached, CacheIt, input_token, on_device
from ..models import new_id, utcnow_iso
from ..protocol import CELL_PREFIX, CPU_RESOURCE, GPU_RESOURCE, POD_EVENTS_TOPIC
from .display import PhaseDisplay, render_event
from .local import run_local
from .session import ElasticSession

_DONE = object()
#: How long to wait for a worker's last output events after its result arrived (seconds).
EVENT_GRACE = 2.0
#: How long a cell whose Kubernetes worker was lost waits for the backend's word on the pod
#: (its pod watch looks once a second; seconds).
POD_LOSS_WAIT = 4.0
#: Backends whose lost workers are pods the platform took away (preempted, evicted, drained):
#: a cell that lost one is re-run once unless ``--retries`` says otherwise.
POD_BACKENDS = ("kubernetes",)


@dataclass
class CellOptions:
    """The ``%%gpu`` flags that matter once the cell is parsed."""

    gpus: float = 1.0
    backend: str | None = None
    timeout: float | None = None
    retries: int | None = None  # None: not given (Kubernetes then re-runs a lost pod's cell once)
    keep_on_device: bool = False
    require_gpu: bool = False
    local: bool = False
    gpu_type: str | None = None
    cpus: int | None = None
    memory: int | None = None  # bytes the cell needs: checked against the cluster's workers
    sync: bool = False  # install what the cell imports that the workers lack (--sync)


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
            error: BaseException | None, cached: list[str] | None = None,
            attempt: tuple[int, int] = (1, 1)) -> dict[str, Any]:
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
            "error": _short(error, attempt),
            "source": first_line[:120],
            "notebook": os.environ.get("JPY_SESSION_NAME") or None,
            "cached_inputs": list(cached or []),
        }


def check_memory(memory: int | None, lease: dict[str, Any]) -> None:
    """``--memory`` against what a worker of the leased cluster really holds (a local
    worker gets a share of this machine's memory, not the configured worker.memory)."""
    held = lease.get("memory_per_worker")
    if memory is not None and held and memory > held:
        raise ConfigError(
            f"--memory {memory / 2**30:.1f} GiB is more than a worker of cluster {lease['name']} "
            f"holds ({held / 2**30:.1f} GiB)",
            hint="ask for less, or use a backend with larger workers (worker.memory sets what "
                 "Kubernetes and Gateway workers get; local workers share this machine's memory)",
        )


class Dispatcher:
    """Runs cells on the session's cluster (or in the kernel with ``--local``)."""

    def __init__(self, session: ElasticSession) -> None:
        self.session = session
        self._no_gpu_said = False
        self._fraction_said = False
        self._cell_counter = 0
        #: Cells whose connection to the scheduler was lost while they ran: (cluster id,
        #: cell id, where it ran, its name). Their outcome is unknown and they may still
        #: hold their worker; the next cell on that cluster stops them first.
        self._lost: list[tuple[str, str, _Where, str]] = []

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
        if self._lost:
            try:
                self._stop_lost(lease)
            except KeyboardInterrupt:
                raise CellCancelled("interrupted while an earlier cell that lost its scheduler "
                                    "connection was being stopped; this cell did not run") from None
        check_memory(options.memory, lease)
        resources = self._resources(lease, options)
        inputs = self.prepare_inputs(plan, namespace)
        attempts = 1 + max(0, options.retries or 0)
        # A pod the platform took away (spot reclaim, node drain, eviction) is not the
        # cell's fault: on Kubernetes a cell that lost its worker pod is re-run once unless
        # --retries was given (--retries 0: never). Cells' own errors are never re-run
        # unless asked.
        pod_reruns = 1 if options.retries is None and lease["backend"] in POD_BACKENDS else 0
        attempt = 0
        while attempt < attempts:
            attempt += 1
            # Each attempt is its own history row (docs: "Retries"); the control plane sees
            # every attempt start and end, so its running-cell count stays balanced.
            if attempt > 1:
                run = CellRun(plan, options, execution_count, name)
            # the idle clock; the lease outlives a stalled kernel while the cell may run
            session.control_plane.cell_started(lease["cluster_id"], options.timeout)
            worker: str | None = None
            compute = 0.0
            status, error = "error", None  # type: str, BaseException | None
            retry_note: str | None = None
            try:
                try:
                    result = self._attempt(run, inputs, namespace, resources, phases)
                except WorkerLost as lost:
                    worker, compute = lost.worker, lost.compute_seconds
                    rerun_pod = attempt == attempts and pod_reruns > 0 and lost.pod is not None
                    if attempt == attempts and not rerun_pod:
                        raise
                    error, retry_note = lost, lost.message
                    if rerun_pod:
                        pod_reruns -= 1
                        attempts += 1
                        print(f"jupyter-elastic: attempt {attempt} of {attempts} lost its worker "
                              f"({_one_line(retry_note, 300)}); re-running the cell on another "
                              "worker (a cell whose Kubernetes pod is lost is re-run once; "
                              "--retries 0 turns that off)", file=sys.stderr)
                        continue
                else:
                    worker = result.get("worker") or worker
                    compute = float(result.get("compute_seconds", 0.0))
                    if result["status"] == "ok":
                        status = "ok"
                        row = self.report(run.row(lease, worker, compute, "ok", None,
                                                  cached=result.get("cached_inputs") or [],
                                                  attempt=(attempt, attempts)))
                        return CellResult(result["value"], result["outputs"], result["deleted"], row)
                    failure = RemoteCellError(result["ename"], result["evalue"], result["traceback"], worker)
                    if result["ename"] == "OutputNotSerializable" or attempt == attempts:
                        raise failure
                    error, retry_note = failure, f"{result['ename']}: {result['evalue']}"
                print(f"jupyter-elastic: attempt {attempt} of {attempts} failed "
                      f"({_one_line(retry_note)}); retrying (--retries)", file=sys.stderr)
            except BaseException as exc:
                error = exc
                compute = max(compute, float(getattr(exc, "compute_seconds", 0.0) or 0.0))
                if isinstance(exc, CellTimeout):
                    status = "timeout"
                elif isinstance(exc, (CellCancelled, KeyboardInterrupt)):
                    status = "cancelled"
                raise
            finally:
                if status != "ok":
                    self.report(run.row(lease, worker, compute, status, error,
                                        attempt=(attempt, attempts)))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pod_backend(self) -> bool:
        lease = self.session.lease
        return bool(lease and lease.get("backend") in POD_BACKENDS)

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
        if (lease["has_gpu"] and 0 < options.gpus < 1 and lease.get("backend") in POD_BACKENDS
                and not self._fraction_said):
            self._fraction_said = True
            print(f"jupyter-elastic: --gpus {options.gpus:g}: Kubernetes gives each worker pod "
                  f"whole devices ({float(lease['gpus_per_worker']):g} per pod); {options.gpus:g} "
                  "only packs cells onto one worker's GPU (for a real share, an admin sets "
                  "jupyter-elastic.kubernetes.gpu-resource to a MIG or time-sliced resource)",
                  file=sys.stderr)
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
        imports = cell_payload.cell_imports(plan.source, os.getcwd())
        if imports:
            payload["modules"] = list(imports)
        result = self._submit_and_wait(payload, resources, run.options, phases, run.started_wall,
                                       run.name)
        if result["status"] == "cache-miss":  # another worker, or a restarted one
            self.session.sent_tokens -= set(result["missing"])
            inputs = {n: (CacheIt(v.token, namespace[n]) if isinstance(v, Cached) else v)
                      for n, v in inputs.items()}
            payload = dict(payload, inputs=inputs, cell_id=new_id("c"))
            result = self._submit_and_wait(payload, resources, run.options, phases, run.started_wall,
                                           run.name)
        if result["status"] == "mismatch" and result.get("missing"):
            imports = cell_payload.describe_imports(imports, result["missing"])
            if not (run.options.sync or self.session.settings.sync_packages):
                raise EnvironmentMismatch(
                    _missing_line(result["missing"], imports),
                    hint="run the cell with %%gpu --sync to install it on the workers (or set "
                         "jupyter-elastic.sync-packages: true), or add it to the workers' image")
            self._sync(result["missing"], imports)
            payload = dict(payload, cell_id=new_id("c"))
            result = self._submit_and_wait(payload, resources, run.options, phases, run.started_wall,
                                           run.name)
            if result["status"] == "mismatch" and result.get("missing"):
                raise EnvironmentMismatch(
                    _missing_line(result["missing"], imports) + " (still, after --sync installed it)",
                    hint="the workers' environment cannot import it; add it to the workers' image")
        if result["status"] == "mismatch":
            raise EnvironmentMismatch(
                "the worker's packages differ from the kernel's: " + "; ".join(result["problems"]),
                hint="install the same versions on the workers (same image or environment) "
                     "and start a new cluster with %gpu stop",
            )
        # The worker cached every large input before running the cell.
        self.session.sent_tokens.update(v.token for v in inputs.values() if isinstance(v, CacheIt))
        return result

    def _sync(self, missing: list[str], imports: dict[str, dict[str, Any]]) -> None:
        """Install what the workers lack with Dask's own plugins, registered with the
        scheduler so that workers started later (from zero) get them too: ``PipInstall``
        for the notebook's packages at the notebook's versions, ``UploadFile`` /
        ``UploadDirectory`` for local modules from the notebook's folder. Says what it did."""
        from distributed.diagnostics.plugin import PipInstall, UploadDirectory, UploadFile

        unknown = [n for n in missing if not imports.get(n)]
        if unknown:
            raise EnvironmentMismatch(
                _missing_line(missing, imports) + f"; --sync cannot install {', '.join(unknown)}: it "
                "is neither a pip package nor a module in the notebook's folder",
                hint="add it to the workers' image (or move it into the notebook's folder)")
        client = self.session.client
        pip = [f"{imports[n]['dist']}=={imports[n]['version']}" for n in missing if "dist" in imports[n]]
        done: list[str] = []
        try:
            for name in missing:
                path = imports[name].get("path")
                if path is None:
                    continue
                if os.path.isdir(path):
                    plugin: Any = UploadDirectory(path, update_path=True, restart_workers=True)
                else:
                    plugin = UploadFile(path)
                client.register_plugin(plugin, name=f"jupyter-elastic-upload-{name}")
                done.append(f"uploaded {os.path.basename(path)}")
            if pip:
                client.register_plugin(PipInstall(pip))
                done.append(f"pip installed {' '.join(pip)}")
        except Exception as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise EnvironmentMismatch(
                f"--sync could not install {', '.join(missing)} on the workers: "
                f"{_one_line(lines[-1] if lines else type(exc).__name__)}",
                hint="check that the workers can reach your package index (PIP_INDEX_URL in "
                     "jupyter-elastic.kubernetes.env), or add it to the workers' image") from None
        print(f"jupyter-elastic: --sync {'; '.join(done)} on the workers", file=sys.stderr)

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
                         options: CellOptions, phases: PhaseDisplay, t0: float,
                         name: str = "the cell") -> dict[str, Any]:
        client = self.session.client
        cluster_id = (self.session.lease or {}).get("cluster_id")
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
        where = _Where()
        seen = 0
        ended = False
        inline: bytes | None = None
        submitted = time.monotonic()
        # On Kubernetes, why no worker comes (quota, unschedulable, image pull) on any
        # scale-up: one line per reason, read from the backend's pod watch.
        pods = self._pod_backend()
        next_look, blocked_said = submitted + 0.5, set()  # type: float, set[str]
        try:
            while True:
                if pods and not where.worker and not ended and time.monotonic() >= next_look:
                    next_look = time.monotonic() + 1.0
                    blocked = _scale_blocked(client)
                    if blocked and blocked not in blocked_said:
                        blocked_said.add(blocked)
                        print(f"jupyter-elastic: this cell waits for a worker that Kubernetes "
                              f"cannot start: {blocked}", file=sys.stderr)
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
                        where.announced(event.get("worker"), event.get("pid"))
                        where.began = True
                        if phases.shown:
                            phases.show("ready", f"worker {where.worker}")
                    elif kind == "end":
                        ended = True
                        if event.get("inline") is not None:
                            inline = event["inline"]
                        break
                    else:
                        render_event(event)
                elif future.done():
                    break
                elif not where.worker and not phases.shown and time.monotonic() - submitted > 0.5:
                    phases.show("workers", "waiting for a worker")
                elif not where.worker and phases.shown:
                    phases.show("workers", "waiting for a worker")
                if deadline is not None and time.monotonic() >= deadline:
                    stopped = self._stop_remote(client, future, cell_id, where, ended, submitted)
                    raise _stamped(CellTimeout(
                        f"the cell ran past --timeout {options.timeout:g}s and was "
                        + _STOPPED[stopped]), where)
        except KeyboardInterrupt:
            stopped = self._stop_remote(client, future, cell_id, where, ended, submitted)
            raise _stamped(CellCancelled("interrupted: the remote cell was " + _STOPPED[stopped]),
                           where) from None
        if phases.shown and phases.phase != "ready":
            phases.show("ready", f"worker {where.worker}" if where.worker else "")
        try:
            if inline is not None:
                import cloudpickle

                result = cloudpickle.loads(inline)
            else:
                # A large result: straight from the worker where it can be reached (a
                # local cluster), not relayed by the scheduler.
                result = client.gather(future, direct=self._direct())
        except KeyboardInterrupt:
            raise CellCancelled("interrupted while the cell's result was fetched") from None
        except BaseException as exc:
            where.held_until = time.monotonic()
            try:
                failure = self._failed(client, exc, where)
                if cluster_id and str(failure).startswith(_LOST_LINE):
                    self._lost.append((cluster_id, cell_id, where, name))
            except KeyboardInterrupt:  # the stop button while the failure is looked into
                failure = _stamped(WorkerLost(
                    f"the worker running this cell failed: {_one_line(str(exc))}",
                    worker=where.worker), where)
            raise failure from None
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
        if result.get("status") == "cancelled":  # a stop reached the worker before the body began
            raise CellCancelled("the cell was stopped before it began on its worker")
        return result

    def _failed(self, client: Any, exc: BaseException, where: _Where) -> ElasticError:
        """The one line for a cell whose task failed outside the cell's own code: its worker
        died (killed, out of memory, preempted), or the scheduler went away."""
        from distributed.scheduler import KilledWorker

        hint = ("the cell was not re-run (it may have had side effects); run it again, or use "
                "--retries N to re-run it automatically")
        closing = self.session.closing_reason
        if closing is not None:  # the control plane stopped the cluster under the cell
            return _stamped(WorkerLost(
                f"the cluster was stopped while the cell ran ({_one_line(closing, 120)}); its "
                "outcome is unknown", hint="the next %%gpu cell starts a new cluster; " + hint,
                worker=where.worker), where)
        if isinstance(exc, KilledWorker) and self._pod_backend():
            address = getattr(exc.last_worker, "address", None) or where.worker or "?"
            pod = _pod_loss(client, address)
            if pod is not None:
                return _stamped(WorkerLost(
                    f"the worker running this cell ({address}) was lost: its pod {pod['pod']} "
                    f"on node {pod.get('node') or '?'} went ({pod.get('reason') or 'unknown'})",
                    hint=hint, worker=address, pod=pod), where)
        if isinstance(exc, KilledWorker):
            address = getattr(exc.last_worker, "address", None) or where.worker or "?"
            limit = int(getattr(exc.last_worker, "memory_limit", 0) or 0)
            rss = _memory_kill(client, address)
            if rss is not None:
                why = (f"it used {_size(rss)} of its {_size(limit)} memory limit and was killed "
                       "(out of memory)" if limit else
                       f"it used {_size(rss)} and was killed for exceeding its memory limit")
            else:
                why = "its process was killed or crashed (or its machine was preempted)"
            return _stamped(WorkerLost(f"the worker running this cell ({address}) died: {why}",
                                       hint=hint, worker=address), where)
        text = _one_line(f"{type(exc).__name__}: {exc}")
        if _connection_lost(exc):
            return _stamped(WorkerLost(
                f"{_LOST_LINE} while the cell ran ({text}); "
                "its outcome is unknown", hint=hint + "; if it still runs on its worker, the "
                "next %%gpu cell on this cluster stops it first", worker=where.worker), where)
        return _stamped(WorkerLost(f"the worker running this cell failed: {text}", hint=hint,
                                   worker=where.worker), where)

    def _stop_remote(self, client: Any, future: Any, cell_id: str, where: _Where, ended: bool,
                     submitted: float) -> str:
        """Stop a cell within ``interrupt-grace`` plus a bounded moment, whatever it does.

        Cancel its task, interrupt its thread, and kill its worker process if it still runs
        after the grace period (a cell stuck in C, or holding the GIL so that its worker
        cannot even answer). A second stop button press during the stop skips the rest of
        the grace period. Nothing waits for a replacement worker: one starts when a cell
        needs it. Returns ``cancelled`` (it had not started), ``interrupted`` or ``restarted``.
        """
        import signal
        import threading

        again = threading.Event()
        previous: Any = None
        if threading.current_thread() is threading.main_thread():
            try:
                previous = signal.signal(signal.SIGINT, lambda *_: again.set())
            except (ValueError, OSError):
                previous = None
        try:
            how = self._stop(client, future, cell_id, where, ended, again)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if how in ("cancelled", "before-body") and not where.began:
            where.started_at = None  # none of it ran: found on a worker by the stop is not held
        elif where.started_at is None:
            where.started_at = submitted  # it ran, though it never said so
        where.held_until = time.monotonic()
        return how

    @staticmethod
    def _find_running(client: Any, cell_id: str, hard: float) -> str | None:
        """The worker running ``cell_id`` although it never said so: one that answers it
        runs it, or one that does not answer at all (busy in C holding the GIL)."""
        addresses = _bounded(client, client._run_on_scheduler, _worker_addresses,
                             timeout=_left(hard, 0.5))
        for address in addresses or []:
            state = _bounded(client, client._run, worker_side.cell_running, cell_id,
                             workers=[address], on_error="return", timeout=_left(hard, 0.5))
            if not isinstance(state, dict) or state.get(address) is True:
                return str(address)
        return None

    def _stop_lost(self, lease: dict[str, Any]) -> None:
        """Stop the cells that lost their scheduler connection and still run on this
        cluster (the connection is back): they hold a worker the next cell may need, and
        their outcome was already reported as unknown. One line each that was stopped."""
        import threading

        # a cell of another cluster is gone with that cluster's workers
        lost = [item for item in self._lost if item[0] == lease["cluster_id"]]
        self._lost = []
        client = self.session.client
        if client is None or not lost:
            return
        # Dask reconnects in the background: give it a bounded moment.
        deadline = time.monotonic() + 10.0
        while getattr(client, "status", "") == "connecting" and time.monotonic() < deadline:
            time.sleep(0.05)
        if getattr(client, "status", "") != "running":  # still cut off: the next cell tries
            self._lost = (lost + self._lost)[-8:]
            return
        for _, cell_id, where, name in lost:
            if where.worker is None:
                found = self._find_running(client, cell_id, time.monotonic() + 1.0)
                if found is None:
                    continue
                where.announced(found, None)
            state = _bounded(client, client._run, worker_side.cell_running, cell_id,
                             workers=[where.worker], on_error="return", timeout=1.0)
            if isinstance(state, dict) and state.get(where.worker) is False:
                continue  # it ended on its own
            hard = time.monotonic() + self.session.settings.interrupt_grace
            how = self._stop_running(client, cell_id, where, threading.Event(), hard)
            state_word = "had not begun" if how == "before-body" else "was still running"
            print(f"jupyter-elastic: {name}, whose connection to the scheduler was lost, "
                  f"{state_word} on worker {where.worker}: it was {_STOPPED[how]}",
                  file=sys.stderr)

    def _stop(self, client: Any, future: Any, cell_id: str, where: _Where, ended: bool,
              again: Any) -> str:
        grace = self.session.settings.interrupt_grace
        hard = time.monotonic() + grace
        if not where.worker:  # not announced yet: the scheduler knows where it runs
            found = _bounded(client, client._run_on_scheduler, _processing_on, future.key,
                             timeout=_left(hard, 0.5))
            if isinstance(found, (list, tuple)) and found[0]:
                where.announced(found[0], found[1])
        # Each call before the kill is given at most what is left of the grace period: an
        # unresponsive scheduler or worker must not push the kill past it.
        _bounded(client, client._cancel, [future], timeout=_left(hard, 0.5))
        if ended:
            return "cancelled"
        if where.worker is None:
            # Not announced, not processing: it did not start, unless a worker took it just
            # now and is too busy to say (a cell holding the GIL answers nobody).
            found = self._find_running(client, cell_id, hard)
            if found is None:
                return "cancelled"
            where.announced(found, None)
        return self._stop_running(client, cell_id, where, again, hard)

    def _stop_running(self, client: Any, cell_id: str, where: _Where, again: Any,
                      hard: float) -> str:
        """Interrupt a cell running on ``where.worker``; kill that worker if the cell still
        runs at ``hard`` (the end of ``interrupt-grace``). Returns ``before-body`` (its code
        had not begun there), ``interrupted``, ``restarted``, or ``unreachable`` (neither
        the kill nor its nanny could be reached)."""
        grace = self.session.settings.interrupt_grace
        state = _bounded(client, client._run, worker_side.interrupt_cell, cell_id,
                         workers=[where.worker], on_error="return", timeout=_left(hard, grace))
        reached = stop_reached(state, where.worker)
        if reached is not None:
            # it ended between the cancel and the interrupt, or its body had not begun on
            # that worker, which now refuses to run it (worker.interrupt_cell)
            return reached
        # Wait out the grace period for the thread to stop.
        while not again.is_set() and time.monotonic() < hard:
            state = _bounded(client, client._run, worker_side.cell_running, cell_id,
                             workers=[where.worker], on_error="return",
                             timeout=max(0.05, min(0.5, hard - time.monotonic())))
            if isinstance(state, dict) and state.get(where.worker) is not True:
                return "interrupted"
            again.wait(0.05)
        assert where.worker is not None
        if kill_worker(client, where.worker, where.pid, worker_side.kill_worker_process):
            # Until the scheduler has dropped the dead worker it may hand it the next cell,
            # which would then fail as if it had died running it. The process is gone (killed
            # just now), so the scheduler is told at once rather than waited for: it would
            # only notice when the worker's connection closes, later on a loaded machine.
            # The stop returns once the scheduler has dropped it (or after DROP_WAIT: the stop
            # stays within interrupt-grace + 2 s): a cell run right after the stop button
            # was otherwise handed to the dead worker when the scheduler answered late.
            dropped_by = min(time.monotonic() + DROP_WAIT, hard + DROP_WAIT)
            while not _bounded(client, client._run_on_scheduler, _drop_worker, where.worker,
                               timeout=_left(dropped_by, 1.0)):
                if time.monotonic() >= dropped_by or again.is_set():
                    break
                time.sleep(0.05)
            return "restarted"
        return "unreachable"


#: Seconds past interrupt-grace (at most) a stop waits for the scheduler to drop a worker
#: it killed; with the kill itself the stop stays within interrupt-grace + 2 s.
DROP_WAIT = 1.5


@dataclass
class _Where:
    """Where a running cell is (from its ``started`` event or the scheduler) and how long
    it held its worker (the kernel's clock)."""

    worker: str | None = None
    pid: int | None = None
    started_at: float | None = None
    held_until: float | None = None
    began: bool = False  # its ``started`` event came: its code ran

    def announced(self, worker: str | None, pid: Any) -> None:
        self.worker = worker or self.worker
        if isinstance(pid, int) and not isinstance(pid, bool):
            self.pid = pid
        if self.started_at is None:
            self.started_at = time.monotonic()

    def held(self) -> float:
        if self.started_at is None:
            return 0.0
        return max(0.0, (self.held_until or time.monotonic()) - self.started_at)


_LOST_LINE = "lost the connection to the cluster's scheduler"


def _connection_lost(exc: BaseException) -> bool:
    """Whether a cell's task failed because the client lost its scheduler connection."""
    return "scheduler-connection-lost" in str(exc) or "connection" in f"{type(exc).__name__}: {exc}".lower()


def _stamped(error: ElasticError, where: _Where) -> ElasticError:
    """``error`` carrying the seconds the cell held its worker (billed as compute)."""
    error.compute_seconds = where.held()  # type: ignore[attr-defined]
    return error


def _left(deadline: float, cap: float) -> float:
    """Seconds a bounded call may take: at most ``cap``, at most until ``deadline`` (with a
    floor so that a call is still tried once the deadline has passed)."""
    return max(0.05, min(cap, deadline - time.monotonic()))




def _pod_events(client: Any) -> list[dict[str, Any]]:
    """What the Kubernetes backend told the scheduler about the cluster's worker pods
    (``POD_EVENTS_TOPIC``), oldest first; [] when the scheduler does not answer at once."""
    found = _bounded(client, client.scheduler.events, topic=POD_EVENTS_TOPIC, timeout=0.5)
    return [msg for _, msg in found or [] if isinstance(msg, dict)]


def _pod_loss(client: Any, address: str) -> dict[str, Any] | None:
    """The backend's ``pod-lost`` word on the pod of the worker at ``address`` (matched by
    pod IP), waiting up to ``POD_LOSS_WAIT`` for it; None if none came."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    deadline = time.monotonic() + POD_LOSS_WAIT
    while True:
        for msg in reversed(_pod_events(client)):
            if msg.get("kind") == "pod-lost" and msg.get("ip") == host:
                return {k: str(msg.get(k) or "") for k in ("pod", "node", "reason")}
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _scale_blocked(client: Any) -> str | None:
    """Why Kubernetes cannot start a worker right now (the backend's last ``scale-blocked``,
    unless a ``scale-ok`` came after it)."""
    for msg in reversed(_pod_events(client)):
        if msg.get("kind") == "scale-ok":
            return None
        if msg.get("kind") == "scale-blocked":
            return str(msg.get("reason") or "")
    return None




def _worker_addresses(dask_scheduler: Any = None) -> list[str]:
    """Run on the scheduler: its workers' addresses."""
    return list(dask_scheduler.workers)


async def _drop_worker(address: str, dask_scheduler: Any = None) -> bool:
    """Run on the scheduler: forget the worker at ``address`` (its process was killed), so
    that no task is sent to it; its nanny starts a fresh one that registers anew. True
    once it is not among the scheduler's workers."""
    if address in dask_scheduler.workers:
        await dask_scheduler.remove_worker(address, stimulus_id=f"jupyter-elastic-killed-{time.time()}",
                                           close=False)
    return address not in dask_scheduler.workers


def _memory_kill(client: Any, address: str) -> int | None:
    """The memory (bytes) a worker's nanny reported when it killed the worker for exceeding
    its memory limit (the ``worker-restart-memory`` event), if it did."""
    deadline = time.monotonic() + 1.0
    while True:
        found = _bounded(client, client.scheduler.events, topic="worker-restart-memory",
                         timeout=0.5)
        for _, event in found or []:
            if isinstance(event, dict) and event.get("worker") == address:
                return int(event.get("rss") or 0)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _size(n: int) -> str:
    from dask.utils import format_bytes

    return str(format_bytes(n))


#: Cached inputs at least this large are scattered to a worker before the task.
SCATTER_MIN_BYTES = 8 << 20


def _nbytes(value: Any) -> int:
    from dask.sizeof import sizeof

    try:
        return int(sizeof(value))
    except Exception:
        return 0


def _short(error: BaseException | None, attempt: tuple[int, int] = (1, 1)) -> str | None:
    if error is None:
        return None
    prefix = f"attempt {attempt[0]} of {attempt[1]}: " if attempt[1] > 1 else ""
    if isinstance(error, RemoteCellError):
        return (prefix + f"{error.ename}: {error.evalue}")[:300]
    message = getattr(error, "message", None) or str(error)
    return (prefix + f"{type(error).__name__}: {message}")[:300]


def _one_line(text: str | None, limit: int = 200) -> str:
    """An exception message as one bounded line (for retry notes)."""
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _missing_line(missing: list[str], imports: dict[str, dict[str, Any]]) -> str:
    """One line naming the modules a cell imports that the workers lack, with what the
    notebook has of each."""
    described = []
    for name in missing:
        info = imports.get(name) or {}
        if "dist" in info:
            described.append(f"`{name}` ({info['dist']} {info['version']} in the notebook)")
        elif "path" in info:
            described.append(f"`{name}` (a local module: {os.path.basename(info['path'])} "
                             "in the notebook's folder)")
        else:
            described.append(f"`{name}`")
    return f"the cell imports {', '.join(described)}, which the workers do not have"
