"""Detached cells (``%%gpu --detach``): the job registry every process of the user shares.

A job is a cell that no longer depends on its kernel. The kernel writes the cell and its
inputs to a private spec file, records the job here, and starts a **supervisor**
(``python -m jupyter_elastic.controlplane.supervisor``, its own session, so neither the
kernel's death nor its process group's signals reach it). The supervisor takes its own
lease from an embedded control plane inside it (with or without the server extension: its
local cluster is the supervisor's children, a remote one is started and stopped by it),
runs the cell on a worker, and the *worker* writes the results to the result store
(``execution/store.py``).

The registry is a small SQLite file, ``{jupyter_runtime_dir}/jupyter-elastic/jobs.sqlite``:
one row per job (state, notebook, store URL, supervisor pid, lease and cluster, GPU-seconds,
cost). Every kernel, the server's REST API and the supervisors read and write it; SQLite's
own locking orders them. What survives what (``docs/jobs.md``):

- the kernel dies or restarts: the job runs on; any kernel attaches to it;
- the supervisor dies (``kill -9``): the job is ``lost`` unless its worker finished and wrote
  a complete manifest, in which case the store's state is adopted (:func:`reconcile`);
- the Jupyter server stops or restarts (SIGTERM or SIGKILL): the job runs on, since
  neither its supervisor nor its cluster lives in the server; the restarted server reads
  this registry on start and re-adopts the jobs whose supervisor still runs (the same
  process: pid and start time), lists them as they go on and finish, and reconciles those
  whose supervisor died meanwhile (adopted from the store, or ``lost``).

This module imports neither the worker side nor tornado: the server reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from typing import Any

from ..errors import JobNotFound, JobStoreError

#: States a job passes through; the last four are final.
STATES = ("submitted", "starting", "running", "waiting", "cancelling", "done", "failed", "cancelled", "lost")
FINAL = ("done", "failed", "cancelled", "lost")

_COLUMNS = {
    "id": "TEXT PRIMARY KEY", "name": "TEXT", "notebook": "TEXT", "state": "TEXT NOT NULL",
    "created": "REAL", "started": "REAL", "ended": "REAL", "store": "TEXT NOT NULL",
    "pid": "INTEGER", "pid_started": "REAL", "lease_id": "TEXT", "cluster_id": "TEXT",
    "backend": "TEXT", "gpus": "REAL", "gpu_seconds": "REAL DEFAULT 0", "cost": "REAL DEFAULT 0",
    "currency": "TEXT", "error": "TEXT", "ttl": "REAL", "source": "TEXT", "owner": "TEXT",
    "cell_id": "TEXT", "worker": "TEXT", "names": "TEXT", "control_plane": "TEXT",
    "trigger": "TEXT", "runs": "INTEGER DEFAULT 0", "last_state": "TEXT",
    "retries": "INTEGER DEFAULT 0", "timeout": "REAL", "attempts": "TEXT",
}


def runtime_dir() -> str:
    """``{jupyter_runtime_dir}/jupyter-elastic`` (made, owner-only)."""
    from jupyter_core.paths import jupyter_runtime_dir

    path = os.path.join(jupyter_runtime_dir(), "jupyter-elastic")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def job_dir(job_id: str) -> str:
    """Where a job's spec (its inputs) and its live output log are kept while it runs."""
    path = os.path.join(runtime_dir(), "jobs", job_id)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class JobRegistry:
    """The jobs table. Every method opens its own connection (safe across threads and
    processes)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.path.join(runtime_dir(), "jobs.sqlite")
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS jobs ("
                       + ", ".join(f"{k} {v}" for k, v in _COLUMNS.items()) + ")")
            present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for key in _COLUMNS.keys() - present:  # a registry written by an older version
                db.execute(f"ALTER TABLE jobs ADD COLUMN {key} {_COLUMNS[key]}")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def insert(self, job: dict[str, Any]) -> None:
        keys = [k for k in job if k in _COLUMNS]
        with self._db() as db:
            db.execute(f"INSERT INTO jobs ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                       [job[k] for k in keys])

    def update(self, job_id: str, **fields: Any) -> None:
        keys = [k for k in fields if k in _COLUMNS]
        if not keys:
            return
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {', '.join(k + ' = ?' for k in keys)} WHERE id = ?",
                       [fields[k] for k in keys] + [job_id])

    def finish(self, job_id: str, state: str, **fields: Any) -> bool:
        """Move a job to a final state unless it already is in one; whether it moved."""
        fields = dict(fields, state=state, ended=fields.get("ended") or time.time())
        keys = [k for k in fields if k in _COLUMNS]
        with self._db() as db:
            cursor = db.execute(
                f"UPDATE jobs SET {', '.join(k + ' = ?' for k in keys)} WHERE id = ? "
                f"AND state NOT IN ({', '.join('?' * len(FINAL))})",
                [fields[k] for k in keys] + [job_id, *FINAL])
            return cursor.rowcount == 1

    def rows(self) -> list[dict[str, Any]]:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY created")]

    def get(self, id_or_name: str) -> dict[str, Any]:
        """The job with this id, or the newest job with this name."""
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (id_or_name,)).fetchone()
            if row is None:
                row = db.execute("SELECT * FROM jobs WHERE name = ? ORDER BY created DESC LIMIT 1",
                                 (id_or_name,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job with id or name {id_or_name!r}")
        return dict(row)

    def delete(self, job_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


# --------------------------------------------------------------------------- liveness
def supervisor_alive(job: dict[str, Any]) -> bool:
    """Whether the job's supervisor process still runs (the same process, not a reused pid)."""
    import psutil

    pid = job.get("pid")
    if not pid:
        return False
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = job.get("pid_started")
        return started is None or abs(process.create_time() - float(started)) < 1.0
    except psutil.Error:
        return False


def read_manifest(store: str, job_id: str) -> dict[str, Any] | None:
    """A job's manifest in its store (None when it has none)."""
    import fsspec.core

    try:
        fs, root = fsspec.core.url_to_fs(store)
        with fs.open(f"{root.rstrip('/')}/{job_id}/manifest.json", "rb") as f:
            data: dict[str, Any] = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ImportError) as exc:
        raise JobStoreError(f"cannot read job {job_id}'s manifest in {store}: {type(exc).__name__}: {exc}") from None
    return data


def reconcile(registry: JobRegistry, job: dict[str, Any]) -> dict[str, Any]:
    """A job whose supervisor is gone while the registry says it runs: adopt the state its
    worker wrote to the store, or call it ``lost``. Returns the job as it is now."""
    if job["state"] in FINAL or supervisor_alive(job):
        return job
    if job["state"] == "submitted" and time.time() - float(job.get("created") or 0) < 30:
        return job  # the supervisor is still starting up
    try:
        manifest = read_manifest(job["store"], job["id"])
    except JobStoreError:
        manifest = None
    if manifest is not None and manifest.get("complete"):
        registry.finish(job["id"], str(manifest.get("state", "failed")), error=manifest.get("error"),
                        names=json.dumps(sorted(manifest.get("names") or {})))
    else:
        registry.finish(job["id"], "lost", error=(
            "the job's supervisor process ended before the job finished (killed, or its "
            "machine restarted); its results were not stored"))
    return registry.get(job["id"])


def prune(registry: JobRegistry, now: float | None = None) -> list[str]:
    """Forget final jobs past their ``ttl`` and delete their results. Returns their ids."""
    import fsspec.core

    now = time.time() if now is None else now
    gone = []
    for job in registry.rows():
        if job["state"] not in FINAL or job.get("ended") is None or job.get("ttl") is None:
            continue
        if now < float(job["ended"]) + float(job["ttl"]):
            continue
        try:
            fs, root = fsspec.core.url_to_fs(job["store"])
            folder = f"{root.rstrip('/')}/{job['id']}"
            if fs.exists(folder):
                fs.rm(folder, recursive=True)
        except Exception:
            continue  # kept, and tried again next time
        registry.delete(job["id"])
        shutil.rmtree(os.path.join(runtime_dir(), "jobs", job["id"]), ignore_errors=True)
        gone.append(job["id"])
    return gone


def list_jobs(registry: JobRegistry | None = None) -> list[dict[str, Any]]:
    """Every job as JSON (reconciled, expired ones pruned), oldest first."""
    registry = registry or JobRegistry()
    prune(registry)
    return [job_json(reconcile(registry, job)) for job in registry.rows()]


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    """A job row as the API and ``%gpu jobs --json`` report it."""
    ended = job.get("ended")
    started = job.get("started")
    elapsed = None
    if started is not None:
        elapsed = (float(ended) if ended is not None else time.time()) - float(started)
    names = job.get("names")
    return {
        "id": job["id"], "name": job.get("name"), "notebook": job.get("notebook"),
        "state": job["state"], "created": job.get("created"), "started": started, "ended": ended,
        "elapsed": elapsed, "gpu_seconds": float(job.get("gpu_seconds") or 0.0),
        "cost": float(job.get("cost") or 0.0), "currency": job.get("currency") or "",
        "backend": job.get("backend"), "cluster_id": job.get("cluster_id"),
        "store": job["store"], "error": job.get("error"), "source": job.get("source") or "",
        "worker": job.get("worker"), "names": json.loads(names) if names else [],
        "expires": (float(ended) + float(job["ttl"])) if ended is not None and job.get("ttl") else None,
        "control_plane": job.get("control_plane"),
        "trigger": json.loads(job["trigger"]) if job.get("trigger") else None,
        "runs": int(job.get("runs") or 0), "last_state": job.get("last_state"),
        "retries": int(job.get("retries") or 0), "timeout": job.get("timeout"),
        "attempts": json.loads(job["attempts"]) if job.get("attempts") else [],
    }


def get_job(id_or_name: str, registry: JobRegistry | None = None) -> dict[str, Any]:
    registry = registry or JobRegistry()
    return job_json(reconcile(registry, registry.get(id_or_name)))


def cancel_job(id_or_name: str, registry: JobRegistry | None = None) -> dict[str, Any]:
    """Ask the job's supervisor to stop it (SIGTERM: it interrupts the cell on its worker,
    restarts the worker if the cell does not stop, and records ``cancelled``)."""
    registry = registry or JobRegistry()
    job = reconcile(registry, registry.get(id_or_name))
    if job["state"] in FINAL:
        return job_json(job)
    registry.update(job["id"], state="cancelling")
    try:
        os.kill(int(job["pid"]), signal.SIGTERM)
    except (OSError, TypeError, ValueError):
        registry.finish(job["id"], "cancelled", error="cancelled before its supervisor ran")
    return job_json(registry.get(job["id"]))


def results_metadata(id_or_name: str, registry: JobRegistry | None = None) -> dict[str, Any]:
    """What the store holds for a job: names with formats, dtypes, shapes and sizes."""
    job = get_job(id_or_name, registry)
    manifest = read_manifest(job["store"], job["id"])
    if manifest is None:
        return {"id": job["id"], "state": job["state"], "complete": False, "names": {}}
    return {"id": job["id"], "state": manifest.get("state"), "complete": bool(manifest.get("complete")),
            "names": manifest.get("names") or {}, "value": manifest.get("value"),
            "deleted": manifest.get("deleted") or [], "error": manifest.get("error"),
            "history": manifest.get("history")}
