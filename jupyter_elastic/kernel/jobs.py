"""Detached cells in the kernel: ``%%gpu --detach`` and ``%gpu jobs|attach|cancel|results``.

Submitting sends the cell's inputs as a normal cell's are (``Dispatcher.prepare_inputs``)
into a private spec file, records the job in the registry (``controlplane/jobs.py``) and
starts its supervisor in a new session; the cell returns at once. Attaching follows the
job's live output log, then binds the names it stored, all at once and only when the job
succeeded, from any kernel of the same user (also after a restart). Pickled values are only
loaded from the store this session is configured with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from typing import Any

from .. import config as cfg
from ..controlplane.jobs import (
    FINAL,
    JobRegistry,
    cancel_job,
    get_job,
    job_dir,
    list_jobs,
    read_manifest,
)
from ..controlplane.triggers import parse_trigger as _parse_trigger
from ..errors import ConfigError, ElasticError, JobStoreError, RemoteCellError
from ..execution import payload as cell_payload
from ..execution.analysis import CellPlan
from ..execution.store import ResultStore, default_store
from ..models import new_id, utcnow_iso
from .dispatch import CellOptions, Dispatcher
from .display import money, render_event
from .session import session_cluster_name

SUPERVISOR = "jupyter_elastic.controlplane.supervisor"
EVENTS = "events.jsonl"


def configured_store() -> str:
    """The result store of this session's settings (``jupyter-elastic.jobs.store``)."""
    return cfg.load_settings().jobs.store or default_store()


def submit(dispatcher: Dispatcher, plan: CellPlan, namespace: dict[str, Any], options: CellOptions,
           *, name: str | None, ttl: float | None, execution_count: int | None,
           trigger: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start a detached cell; returns its registry row (state ``submitted``)."""
    import cloudpickle
    import dask
    import psutil

    settings = cfg.load_settings()
    backend = options.backend or settings.backend
    store = configured_store()
    if backend != "local" and ("://" not in store or store.startswith(("file://", "memory://"))):
        raise ConfigError(
            f"the result store {store} is a path on this machine, which {backend} workers cannot "
            "write to",
            hint="set jupyter-elastic.jobs.store to an fsspec URL both the workers and this kernel "
                 "reach (e.g. %gpu config jobs.store=s3://bucket/jobs)",
        )
    inputs = dispatcher.prepare_inputs(plan, namespace, cache=False)
    job_id = new_id("j")
    first_line = next((line for line in plan.source.splitlines() if line.strip()), "")
    notebook = os.environ.get("JPY_SESSION_NAME") or None
    row: dict[str, Any] = {"id": new_id("c"), "cell": execution_count, "started": utcnow_iso(), "backend": backend,
           "source": first_line[:120], "notebook": notebook, "cpus": 0.0, "cached_inputs": []}
    spec = {
        "payload": {"source": plan.source, "line_offset": plan.line_offset,
                    "filename": f"<%%gpu --detach {job_id}>", "inputs": inputs,
                    "outputs": plan.outputs, "keep_on_device": options.keep_on_device,
                    "versions": cell_payload.versions()},
        "row": row, "store": store, "backend": backend, "gpu_type": options.gpu_type,
        "cluster_name": session_cluster_name(backend), "gpus": options.gpus,
        "require_gpu": options.require_gpu, "trigger": trigger,
        "retries": options.retries or 0, "timeout": options.timeout,
        "config": dask.config.get(cfg.NAMESPACE), "created": time.time(),
    }
    folder = job_dir(job_id)
    spec_path = os.path.join(folder, "spec.pkl")
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        cloudpickle.dump(spec, f, protocol=5)
    registry = JobRegistry()
    registry.insert({"id": job_id, "name": name, "notebook": notebook, "state": "submitted",
                     "created": time.time(), "store": store, "backend": backend,
                     "gpus": options.gpus, "ttl": ttl if ttl is not None else settings.jobs.ttl,
                     "source": first_line[:120], "owner": _user(),
                     "currency": settings.pricing.currency,
                     "trigger": json.dumps(trigger) if trigger else None,
                     "retries": options.retries or 0, "timeout": options.timeout})
    with open(os.path.join(folder, "supervisor.log"), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", SUPERVISOR, job_id], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
        )
    try:
        started = psutil.Process(process.pid).create_time()
    except psutil.Error:
        started = None
    registry.update(job_id, pid=process.pid, pid_started=started)
    return registry.get(job_id)


def parse_trigger(every: str | None, on_change: str | None) -> dict[str, Any] | None:
    """``--every``/``--on-change`` checked (relative ``--on-change`` paths from the kernel's
    working directory)."""
    return _parse_trigger(every, on_change, cwd=os.getcwd())


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return ""


# --------------------------------------------------------------------------- reports
def jobs_text(jobs: list[dict[str, Any]]) -> str:
    """The ``%gpu jobs`` table."""
    if not jobs:
        return "no detached jobs; start one with %%gpu --detach"
    header = ("id", "name", "notebook", "state", "started", "elapsed", "GPU-s", "cost")
    rows = [header]
    for job in jobs:
        started = job.get("started") or job.get("created")
        rows.append((
            job["id"], job.get("name") or "-", os.path.basename(job.get("notebook") or "") or "-",
            job["state"] + (f" ({job['runs']} run{'s' if job['runs'] != 1 else ''})" if job.get("trigger") else ""),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "-",
            f"{job['elapsed']:.1f}s" if job.get("elapsed") is not None else "-",
            f"{job['gpu_seconds']:.1f}", money(job["cost"], job.get("currency") or ""),
        ))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for job in jobs:
        if job["state"] in ("failed", "lost") and job.get("error"):
            lines.append(f"{job['id']}: {job['error']}")
    return "\n".join(lines)


def jobs_list() -> list[dict[str, Any]]:
    return list_jobs()


def cancel(id_or_name: str) -> dict[str, Any]:
    return cancel_job(id_or_name)


# --------------------------------------------------------------------------- attach
def follow(job_id: str, *, poll: float = 0.1) -> dict[str, Any]:
    """Render the job's output from the start, following it while it runs; the job row as
    it is at the end. A triggered job: the current run's output, or the last run's while it
    waits for the next.

    Ctrl-C stops following (the job keeps running) and raises KeyboardInterrupt.
    """
    job = get_job(job_id)
    name = EVENTS
    if job.get("trigger"):
        running = job["state"] in ("submitted", "starting", "running")
        number = job["runs"] + 1 if running else job["runs"]
        if number == 0:
            return job
        name = f"run-{number}.jsonl"
    path = os.path.join(job_dir(job_id), name)
    offset = 0
    seen_end = False
    while True:
        job = get_job(job_id)
        final = job["state"] in FINAL or (job.get("trigger") is not None and job["state"] == "waiting")
        if os.path.exists(path):
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
            offset += len(complete)
            for raw in complete.splitlines():
                event = json.loads(raw)
                if event.get("kind") == "job-end":
                    seen_end = True
                else:
                    render_event(event)
        elif final and offset == 0 and not job.get("trigger"):
            # written on another machine, or pruned: the store's copy
            try:
                for event in ResultStore(job["store"]).events(job_id):
                    render_event(event)
            except (OSError, ElasticError):
                pass
            return job
        if seen_end or final:  # final without its last line: the supervisor died; that is all
            return get_job(job_id) if seen_end else job
        time.sleep(poll)


def load(job: dict[str, Any]) -> tuple[dict[str, Any], list[str], Any]:
    """A finished job's values from its store (pickles only from the configured store)."""
    store = ResultStore(job["store"])
    trusted = _same_store(job["store"], configured_store())
    state = job["state"]
    if job.get("trigger"):  # the last run's results, whether the trigger waits or was stopped
        state = job.get("last_state") or "running"
        if state == "running":
            raise JobStoreError(f"job {job['id']} has not finished a run yet", hint="")
    if state != "done":
        try:
            manifest = read_manifest(job["store"], job["id"]) or {}
        except JobStoreError:  # the registry's error says why (the store may be the problem)
            manifest = {}
        history = manifest.get("history") or {}
        traceback = history.get("traceback") or []
        error = job.get("error") or manifest.get("error") or f"job {job['id']} ended {job['state']}"
        if traceback and ":" in error and state == "failed":
            ename, _, evalue = error.partition(": ")
            raise RemoteCellError(ename, evalue, traceback, job.get("worker"))
        raise ElasticError(f"job {job['id']} {state}: {error}", hint="")
    values, deleted, value, _ = store.load(job["id"], allow_pickle=trusted)
    return values, deleted, value


def _same_store(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        if "://" in url and not url.startswith("file://"):
            return url.rstrip("/")
        return os.path.realpath(url.removeprefix("file://"))

    return norm(a) == norm(b)


def attach(id_or_name: str, namespace: dict[str, Any]) -> Any:
    """Follow a job to its end, then bind what it stored (all at once); its last value."""
    job = get_job(id_or_name)
    if job["state"] not in FINAL:
        print(f"attached to job {job['id']}{' (' + job['name'] + ')' if job.get('name') else ''}, "
              f"{job['state']}; Ctrl-C detaches again (the job keeps running)", file=sys.stderr)
    try:
        job = follow(job["id"])
    except KeyboardInterrupt:
        print(f"detached from job {job['id']}; it keeps running (%gpu attach {job['id']})", file=sys.stderr)
        return None
    values, deleted, value = load(job)
    namespace.update(values)
    for name in deleted:
        namespace.pop(name, None)
    return value


def results(id_or_name: str, namespace: dict[str, Any], into: str | None) -> Any:
    """A finished job's values: as a dict, or bound under ``into`` as a namespace object."""
    job = get_job(id_or_name)
    if job["state"] not in FINAL and not (job.get("trigger") and job.get("last_state")):
        raise JobStoreError(f"job {job['id']} is {job['state']}; its results are not stored yet",
                            hint=f"wait for it with %gpu attach {job['id']}")
    values, _, value = load(job)
    values = {k: v for k, v in values.items() if not isinstance(v, types.ModuleType)}
    if into is None:
        return values
    if not into.isidentifier():
        raise ElasticError(f"--into takes a Python name, got {into!r}", hint="")
    namespace[into] = types.SimpleNamespace(**values, _value=value)
    print(f"bound {len(values)} name{'s' if len(values) != 1 else ''} of job {job['id']} under {into}")
    return None
