"""The worker task of a detached cell (``%%gpu --detach``): run it, write its results.

:func:`run_job` runs the cell exactly as :func:`~.worker.run_cell` does (same inputs, same
output routing, device values moved to the host unless ``--keep-on-device``) and then
writes the names it bound, its output and its history row to the result store *from the
worker* (``store.py``), so the results survive the kernel and reach object storage on
Kubernetes. It returns only a short summary: the values never travel back through Dask.
"""

from __future__ import annotations

import time
from typing import Any

from .store import ResultStore
from .worker import run_cell

#: Output events kept in the store (``started`` and ``end`` are the kernel's protocol).
_KEPT = ("stream", "display", "clear")


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Run a detached cell and store its results; never raises for the cell's or the
    store's errors. Returns ``{"status": done|failed|cancelled|mismatch|cache-miss, ...}``."""
    job = payload["job"]
    events: list[dict[str, Any]] = []
    result = run_cell(payload, record=events)
    if result["status"] in ("mismatch", "cache-miss"):
        return result
    kept = [e for e in events if e.get("kind") in _KEPT]
    row = dict(job.get("row") or {}, compute_seconds=result.get("compute_seconds", 0.0),
               worker=result.get("worker"), device=result.get("device"), finished=time.time())
    if result["status"] == "ok":
        state, error = "done", None
    elif result["status"] == "cancelled":  # stopped before its body began
        state, error = "cancelled", "stopped before the cell began on its worker"
    else:
        state = "cancelled" if result.get("ename") == "KeyboardInterrupt" else "failed"
        error = f"{result.get('ename')}: {result.get('evalue')}"[:2000]
        row["traceback"] = result.get("traceback") or []
    row.update(status=state, error=error)
    summary = {"status": state, "error": error, "compute_seconds": result.get("compute_seconds", 0.0),
               "worker": result.get("worker"), "device": result.get("device"),
               "traceback": result.get("traceback") or []}
    try:
        store = ResultStore(job["store"])
        if state == "done":
            manifest = store.write_results(
                job["id"], state=state, outputs=result["outputs"], deleted=result["deleted"],
                value=result["value"], events=kept, row=row,
            )
            summary["names"] = sorted(n for n, e in manifest["names"].items() if e["format"] != "module")
        else:
            store.write_failure(job["id"], state=state, error=error or "", events=kept, row=row)
    except Exception as exc:
        message = (f"the result store {job['store']} could not be written: "
                   f"{type(exc).__name__}: {exc}")[:2000]
        summary.update(status="failed", error=message, store_error=True)
        try:  # say so in the store if it takes anything at all; never leave it looking complete
            store = ResultStore(job["store"])
            store.write_failure(job["id"], state="failed", error=message, events=kept,
                                row=dict(row, status="failed", error=message))
        except Exception:
            pass
    return summary
