"""The supervisor of one detached cell: ``python -m jupyter_elastic.controlplane.supervisor JOB_ID``.

Started by the kernel in its own session (``start_new_session=True``), so it outlives the
kernel and ignores the signals sent to the kernel's process group. It reads the job's spec
(the cell and its inputs, written by the kernel to the job's owner-only runtime folder),
takes a lease from an embedded control plane in this process (in both modes, with or
without the server extension: the job's cluster — for the local backend, this process's
scheduler and worker children — does not depend on the kernel or on the Jupyter server, so
the job outlives a restart of either), submits
:func:`jupyter_elastic.execution.job.run_job`, appends the cell's output events to
``events.jsonl`` as they arrive (``%gpu attach`` follows it), records each state in the
registry (``jobs.py``), and on the way out reports the cell's history row, releases the lease
and closes its control plane (an embedded one stops its cluster: the workers are kept only
while the job runs). SIGTERM (``%gpu cancel``) interrupts the cell on its worker, and
restarts that worker if the cell does not stop within ``interrupt-grace``; ``--timeout``
does the same once the cell has run that long on its worker. An attempt whose worker dies
(or whose cell fails) is run again up to ``--retries`` times, with a note in the job's output
and every attempt in its ``attempts``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from ..config import load_settings
from ..errors import ElasticError
from ..models import new_id
from ..protocol import CELL_PREFIX, CPU_RESOURCE, GPU_RESOURCE
from .cells import STOPPED, kill_worker, lease_client, no_silent_reruns, stop_reached
from .cells import bounded as _bounded
from .cells import processing_on as _processing_on
from .jobs import JobRegistry, job_dir
from .metering import cell_charge

EVENTS = "events.jsonl"
SPEC = "spec.pkl"



class Supervisor:
    def __init__(self, job_id: str, registry: JobRegistry | None = None) -> None:
        self.job_id = job_id
        self.registry = registry or JobRegistry()
        self.folder = job_dir(job_id)
        self.cancel = threading.Event()
        self.attempt = 0  # runs started (a triggered job starts one per trigger)
        self._log_lock = threading.Lock()
        self.events = os.path.join(self.folder, EVENTS)  # run-{n}.jsonl for triggered jobs
        #: The running attempt's cell id, and where it runs once its worker says so
        #: (``started`` event: worker address, pid, monotonic time).
        self._cell: str | None = None
        self._where: dict[str, Any] = {}

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "started" and event.get("cell") == self._cell and not self._where:
            self._where = {"worker": event.get("worker"), "pid": event.get("pid"), "at": time.monotonic()}
        self._log(event)

    def _note(self, text: str) -> None:
        """A line of the job's own (not the cell's) in its output log, as stderr."""
        self._log({"kind": "stream", "name": "stderr", "text": f"jupyter-elastic: {text}\n"})

    def _log(self, event: dict[str, Any]) -> None:
        if event.get("kind") not in ("stream", "display", "clear", "job-end"):
            return
        line = json.dumps({k: v for k, v in event.items() if k != "inline"}, default=str)
        with self._log_lock, open(self.events, "a") as f:
            f.write(line + "\n")

    def run(self) -> int:
        import cloudpickle
        import dask
        import psutil

        self.registry.update(self.job_id, pid=os.getpid(), pid_started=psutil.Process().create_time())
        spec_path = os.path.join(self.folder, SPEC)
        try:
            with open(spec_path, "rb") as f:
                spec = cloudpickle.load(f)
        except Exception as exc:
            self.registry.finish(self.job_id, "failed", error=(
                f"the job's spec could not be read ({type(exc).__name__}: {exc}); run the cell again"))
            return 1
        dask.config.set({"jupyter-elastic": spec["config"]})  # the kernel's settings, as it had them
        try:
            if spec.get("trigger"):
                return self._triggered(spec)
            state, error, summary = self._one_run(spec)
            self._record_end(spec, state, error, summary)
            return 0 if state == "done" else 1
        finally:
            try:
                os.remove(spec_path)  # the inputs are not kept once the job ended
            except OSError:
                pass

    def _triggered(self, spec: dict[str, Any]) -> int:
        """Run the cell at each trigger until cancelled; each run replaces the stored results."""
        from .triggers import triggers

        runs, totals = 0, {"gpu_seconds": 0.0, "cost": 0.0}
        self.registry.update(self.job_id, state="waiting", runs=0)
        try:
            for changes in triggers(spec["trigger"], self.cancel):
                self.events = os.path.join(self.folder, f"run-{runs + 1}.jsonl")
                run_spec = spec
                if changes is not None:  # --on-change: the cell reads the changed paths as `changes`
                    payload = dict(spec["payload"], inputs=dict(spec["payload"]["inputs"], changes=changes))
                    run_spec = dict(spec, payload=payload)
                state, error, summary = self._one_run(run_spec)
                if state == "cancelled":
                    break
                runs += 1
                charge = self._charge(spec, summary)
                totals = {k: totals[k] + charge[k] for k in totals}
                self._log({"kind": "job-end", "state": state, "error": error})
                self.registry.update(self.job_id, state="waiting", runs=runs, last_state=state, error=error,
                                     names=json.dumps(summary.get("names") or []), ended=time.time(),
                                     worker=summary.get("worker"), currency=charge["currency"], **totals)
        except Exception as exc:
            self.registry.finish(self.job_id, "failed", error=f"the trigger failed: {type(exc).__name__}: {exc}")
            return 1
        self._log({"kind": "job-end", "state": "cancelled", "error": None})
        self.registry.finish(self.job_id, "cancelled", error=f"stopped with %gpu cancel after {runs} run(s)")
        return 0

    def _one_run(self, spec: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
        """Lease, run the cell once, report and release; ``(state, error, summary)``."""
        from .embedded import EmbeddedControlPlane

        state, error, summary = "failed", None, {}  # type: str, str | None, dict[str, Any]
        cp = None
        lease: dict[str, Any] | None = None
        stop_beat = threading.Event()
        try:
            self.registry.update(self.job_id, state="starting")
            # The job's cluster lives in this process, also under a Jupyter server: a
            # server's local scheduler runs inside the server and would die with it, so a
            # job held there could not outlive a server restart (docs/jobs.md).
            # Named after the job and the run: never the notebook's own cluster (a remote
            # backend would reconnect to it by name), nor a previous run's that is still
            # being deleted.
            self.attempt += 1
            cp = EmbeddedControlPlane()
            lease = cp.acquire(f"job-{self.job_id}", backend=spec["backend"],
                               name=f"job-{self.job_id}-{self.attempt}", gpu_type=spec.get("gpu_type"))
            self.registry.update(self.job_id, lease_id=lease["lease_id"], cluster_id=lease["cluster_id"],
                                 backend=lease["backend"], control_plane="supervisor")
            threading.Thread(target=self._beat, args=(cp, lease, stop_beat), daemon=True).start()
            if self.cancel.is_set():
                raise _Cancelled()
            state, error, summary = self._run_cell(spec, lease, cp)
        except _Cancelled:
            state, error = "cancelled", "cancelled before the cell started"
        except ElasticError as exc:
            error = exc.message
        except Exception as exc:
            error = f"the job could not run: {type(exc).__name__}: {exc}"
        finally:
            stop_beat.set()
            if state == "cancelled":
                error = error or "cancelled"
            self._report(spec, lease, state, error, summary, cp)
        return state, error, summary

    def _beat(self, cp: Any, lease: dict[str, Any], stop: threading.Event) -> None:
        interval = max(0.2, min(float(lease["lease_ttl"]) / 4, 10.0))
        while not stop.wait(interval):
            try:
                cp.heartbeat(lease["lease_id"])
            except Exception:
                pass

    def _run_cell(self, spec: dict[str, Any], lease: dict[str, Any],
                  cp: Any) -> tuple[str, str | None, dict[str, Any]]:
        client = lease_client(lease)  # in-process when the job's local scheduler runs here
        # a job is re-run only under --retries, by this supervisor
        if lease.get("backend") != "local" and not no_silent_reruns(client):
            print(f"jupyter-elastic: the {lease.get('backend')} scheduler did not take "
                  "allowed-failures 0: Dask may re-run this job's cell if its worker dies",
                  file=sys.stderr)
        try:
            topic = f"jupyter-elastic-job-{self.job_id}"
            client.subscribe_topic(topic, lambda event: self._on_event(event[1]))
            gpus = float(spec["gpus"])
            if not lease["has_gpu"] and spec.get("require_gpu"):
                return "failed", f"the {lease['backend']} cluster has no GPU worker (--require-gpu)", {}
            if lease["has_gpu"] and gpus > float(lease["gpus_per_worker"]):
                return "failed", (f"--gpus {gpus:g} is more than one worker of this cluster has "
                                  f"({float(lease['gpus_per_worker']):g}); a cell runs on one worker"), {}
            if lease["has_gpu"]:
                resources = {GPU_RESOURCE: gpus} if gpus > 0 else None
            else:
                resources = {CPU_RESOURCE: min(1.0, gpus or 1.0)}
            device = "gpu" if lease["has_gpu"] and gpus > 0 else "cpu"
            attempts = 1 + int(spec.get("retries") or 0)
            timeout = spec.get("timeout")
            held = 0.0  # seconds the earlier attempts held their worker (billed)
            summary: dict[str, Any]
            records: list[dict[str, Any]] = []
            for attempt in range(1, attempts + 1):
                cell_id = new_id("j")
                self._cell, self._where = cell_id, {}
                payload = dict(spec["payload"], cell_id=cell_id, topic=topic, job={
                    "id": self.job_id, "store": spec["store"], "row": spec["row"]})
                fields: dict[str, Any] = {"state": "running", "cell_id": cell_id}
                if attempt == 1:
                    fields["started"] = time.time()
                    cp.cell_started(lease["cluster_id"])
                self.registry.update(self.job_id, **fields)
                future = client.submit(_on_worker, "job", "run_job", payload, key=f"{CELL_PREFIX}-{cell_id}",
                                       resources=resources, pure=False)
                look = time.monotonic()
                while not future.done():
                    if self.cancel.wait(0.2):
                        self._stop(client, future, cell_id)
                        return "cancelled", "cancelled with %gpu cancel", self._held(held, device)
                    began = self._where.get("at")
                    if timeout is not None and began is None and time.monotonic() >= look:
                        # no ``started`` event (a cell holding the GIL from its first line
                        # may not get it out): the scheduler says where it runs
                        look = time.monotonic() + 1.0
                        found = _bounded(client, client._run_on_scheduler, _processing_on, future.key,
                                         timeout=0.5)
                        if isinstance(found, (list, tuple)) and found[0] and not self._where:
                            self._where = {"worker": found[0], "pid": found[1], "at": time.monotonic()}
                    if timeout is not None and began is not None and time.monotonic() - began >= timeout:
                        how = self._stop(client, future, cell_id)
                        summary = self._held(held, device, row_status="timeout")
                        return "failed", (f"the job ran past --timeout {float(timeout):g}s and was "
                                          + _STOPPED[how]), summary
                try:
                    summary = future.result()
                except Exception as exc:
                    lost = _lost(exc, self._where.get("worker"))
                    this = self._held(0.0, device)["compute_seconds"]
                    held += this
                    note = f"attempt {attempt} of {attempts} lost its worker: {lost}"
                    records.append({"attempt": attempt, "state": "lost-worker", "error": lost,
                                    "worker": self._where.get("worker"), "compute_seconds": this})
                    self.registry.update(self.job_id, attempts=json.dumps(records))
                    if attempt == attempts:
                        hint = ("; it was not re-run (--retries N re-runs it)" if attempts == 1
                                else "; no retries left")
                        return "failed", note + hint, {"compute_seconds": held, "row_compute": this, "device": device,
                                                       "worker": self._where.get("worker"), "row_status": "error"}
                    self._note(note + "; re-running the job (--retries)")
                    self._attempt_row(spec, lease, cp, self._where.get("worker"), device, this,
                                      f"attempt {attempt} of {attempts}: {lost}")
                    cp.cell_started(lease["cluster_id"])
                    continue
                status = summary.get("status")
                if status == "mismatch":
                    return "failed", "the worker's packages differ from the kernel's: " + "; ".join(
                        summary.get("problems") or []), {}
                if status == "failed" and not summary.get("store_error") and attempt < attempts:
                    # the cell's own error, as --retries re-runs it in an attached cell
                    this = float(summary.get("compute_seconds") or 0.0)
                    held += this
                    records.append({"attempt": attempt, "state": "failed", "error": summary.get("error"),
                                    "worker": summary.get("worker"), "compute_seconds": this})
                    self.registry.update(self.job_id, attempts=json.dumps(records))
                    self._note(f"attempt {attempt} of {attempts} failed ({summary.get('error')}); "
                               "re-running the job (--retries)")
                    self._attempt_row(spec, lease, cp, summary.get("worker"), device, this,
                                      f"attempt {attempt} of {attempts}: {summary.get('error')}")
                    cp.cell_started(lease["cluster_id"])
                    continue
                this = float(summary.get("compute_seconds") or 0.0)
                summary = dict(summary, compute_seconds=this + held, row_compute=this)
                if records:
                    records.append({"attempt": attempt, "state": str(status), "error": summary.get("error"),
                                    "worker": summary.get("worker"),
                                    "compute_seconds": float(summary["compute_seconds"]) - held})
                    self.registry.update(self.job_id, attempts=json.dumps(records))
                return str(status), summary.get("error"), summary
            raise AssertionError("unreachable: the last attempt returns")
        finally:
            client.close(timeout=10)

    def _stop(self, client: Any, future: Any, cell_id: str) -> str:
        """Stop the running attempt within ``interrupt-grace``: interrupt its thread, and if
        it is still running then (stuck in C code, or holding the GIL so that its worker does
        not even answer), kill its worker process to free the GPU (a local worker by pid,
        else through the scheduler). Every call to the cluster is bounded. ``cancelled`` (it
        had not started), ``before-body`` (its task had, its code had not), ``interrupted``,
        ``restarted`` or ``unreachable`` (no kill reached it)."""
        grace = load_settings().interrupt_grace
        hard = time.monotonic() + grace
        _bounded(client, client._cancel, [future], timeout=0.5)
        worker, pid = self._where.get("worker"), self._where.get("pid")
        if not worker:
            found = _bounded(client, client._run_on_scheduler, _processing_on, future.key, timeout=0.5)
            if isinstance(found, (list, tuple)) and found[0]:
                worker, pid = found
        if not worker:
            state = _bounded(client, client._run, _on_worker, "worker", "cell_running", cell_id,
                             on_error="return", timeout=0.5)
            running = [a for a, r in (state or {}).items() if r is True]
            if not running:
                return "cancelled"
            worker = running[0]
        state = _bounded(client, client._run, _on_worker, "worker", "interrupt_cell", cell_id,
                         workers=[worker], on_error="return", timeout=max(0.05, hard - time.monotonic()))
        reached = stop_reached(state, worker)
        if reached is not None:  # it ended meanwhile, or its code never began
            return reached
        while time.monotonic() < hard:
            state = _bounded(client, client._run, _on_worker, "worker", "cell_running", cell_id,
                             workers=[worker], on_error="return",
                             timeout=max(0.05, min(0.5, hard - time.monotonic())))
            if isinstance(state, dict) and state.get(worker) is not True:
                return "interrupted"
            time.sleep(0.05)
        if kill_worker(client, worker, pid, _kill_on_nanny):  # stuck: free the GPU
            return "restarted"
        return "unreachable"

    def _held(self, before: float, device: str, **extra: Any) -> dict[str, Any]:
        """The summary of an attempt that returned nothing: the seconds it held its worker
        (from its ``started`` event; none if it never started) plus ``before``."""
        began = self._where.get("at")
        this = 0.0 if began is None else max(0.0, time.monotonic() - began)
        return dict(extra, compute_seconds=before + this, row_compute=this,
                    worker=self._where.get("worker"), device=device)

    def _attempt_row(self, spec: dict[str, Any], lease: dict[str, Any], cp: Any, worker: str | None,
                     device: str, compute: float, error: str) -> None:
        """The history row of an attempt that lost its worker (the last one is reported by
        :meth:`_report`)."""
        row = dict(spec["row"], id=new_id("c"), cluster_id=lease["cluster_id"], worker=worker,
                   device=device, compute_seconds=compute, seconds=compute,
                   gpus=float(spec["gpus"]) if device == "gpu" else 0.0, status="error", error=error)
        try:
            cp.cell_finished(lease["cluster_id"], row)
        except Exception:
            pass

    @staticmethod
    def _charge(spec: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
        settings = load_settings()
        compute = float(summary.get("compute_seconds") or 0.0)
        on_gpu = summary.get("device") == "gpu"
        gpus = float(spec["gpus"]) if on_gpu else 0.0
        gpu_seconds, _, cost = cell_charge(settings.pricing, compute, gpus, 1.0, on_gpu)
        return {"gpu_seconds": gpu_seconds, "cost": cost, "currency": settings.pricing.currency}

    def _record_end(self, spec: dict[str, Any], state: str, error: str | None,
                    summary: dict[str, Any]) -> None:
        self.registry.finish(self.job_id, state, error=error, worker=summary.get("worker"),
                             names=json.dumps(summary.get("names") or []), **self._charge(spec, summary))
        self._log({"kind": "job-end", "state": state, "error": error})

    def _report(self, spec: dict[str, Any], lease: dict[str, Any] | None, state: str, error: str | None,
                summary: dict[str, Any], cp: Any) -> None:
        """The run's history row to the control plane; release the lease; close the control
        plane (an embedded one stops its cluster: workers are kept only while a run runs)."""
        if cp is None:
            return
        if lease is not None:
            # this attempt's seconds (each earlier attempt has its own row; the job's charge
            # counts them all)
            compute = float(summary.get("row_compute", summary.get("compute_seconds")) or 0.0)
            on_gpu = summary.get("device") == "gpu"
            row = dict(spec["row"], cluster_id=lease["cluster_id"], worker=summary.get("worker"),
                       device=summary.get("device") or "cpu", compute_seconds=compute,
                       seconds=time.time() - float(spec["created"]),
                       gpus=float(spec["gpus"]) if on_gpu else 0.0,
                       status=summary.get("row_status") or {"done": "ok", "failed": "error"}.get(state, state),
                       error=error)
            try:
                cp.cell_finished(lease["cluster_id"], row)
                cp.release(lease["lease_id"])
            except Exception:
                pass
        try:
            if hasattr(cp, "flush"):
                cp.flush()
            cp.close()
        except Exception:
            pass


def _kill_on_nanny(dask_worker: Any = None) -> Any:
    """Run on a nanny: kill its worker process (``execution.worker.kill_worker_process``)."""
    import importlib

    return importlib.import_module("jupyter_elastic.execution.worker").kill_worker_process(dask_worker)


def _on_worker(module: str, function: str, *args: Any) -> Any:
    """Call ``jupyter_elastic.execution.{module}.{function}`` where this runs: on a worker.

    The supervisor is a control-plane process and never imports the worker side (it pulls in
    IPython's display hooks); the task names it, and the worker imports it.
    """
    import importlib

    target = getattr(importlib.import_module(f"jupyter_elastic.execution.{module}"), function)
    return target(*args)


class _Cancelled(Exception):
    pass


#: How a stopped attempt ended, as the job's error line says it (a job's worker is killed,
#: and the supervisor says no more about what follows).
_STOPPED = {**STOPPED, "restarted": ("interrupted, and as it did not stop within interrupt-grace "
                                     "its worker was killed to free the GPU")}


def _lost(exc: BaseException, worker: str | None) -> str:
    """Why the attempt's task failed outside the cell (its worker died, or the scheduler went)."""
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        address = getattr(getattr(exc, "last_worker", None), "address", None) or worker or "?"
        return f"the worker running it ({address}) died: its process was killed or crashed"
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return f"the worker running it ({worker or '?'}) failed: {text}"








def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m jupyter_elastic.controlplane.supervisor JOB_ID", file=sys.stderr)
        return 2
    supervisor = Supervisor(argv[0])
    signal.signal(signal.SIGTERM, lambda *_: supervisor.cancel.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
