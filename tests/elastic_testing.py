"""Helpers shared by the tests (a module name no other conftest can shadow)."""

from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

#: Python's own per-process helpers: started once, they live until the test process exits.
_PYTHON_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _is_helper(process: psutil.Process) -> bool:
    try:
        return any(h in " ".join(process.cmdline()) for h in _PYTHON_HELPERS)
    except psutil.Error:
        return True


def children() -> set[int]:
    """PIDs of this process's live descendants (Python's multiprocessing helpers aside)."""
    try:
        return {
            p.pid
            for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE and not _is_helper(p)
        }
    except psutil.Error:
        return set()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cell_text(cell: dict) -> str:
    """A notebook cell's outputs as text: streams, text/plain, the other MIME types' names,
    and errors as ``ename: evalue``."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
            parts.extend(k for k in out["data"] if k != "text/plain")
        elif out.get("output_type") == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "\n".join(parts)


def unexpected_stderr(nb: Any, expected: tuple[str, ...]) -> list[str]:
    """The stderr lines of an executed notebook that do not start with one of ``expected``
    (what the notebook prints itself): log lines of workers and warnings, e.g."""
    lines = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines.extend(line for line in out["text"].splitlines()
                             if line.strip() and not line.startswith(expected))
    return lines
