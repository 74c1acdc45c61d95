"""Helpers shared by the tests (a module name no other conftest can shadow)."""

from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

from jupyter_elastic.backends.base import ClusterHandle, ElasticBackend
from jupyter_elastic.models import WorkerDetail

#: Python's own per-process helpers: started once, they live until the test process exits.
_PYTHON_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _is_helper(process: psutil.Process) -> bool:
    """Python's fork server or resource tracker itself; not a process the fork server forked
    (a local cluster's worker: it has the fork server's command line, and it is counted)."""
    try:
        if not any(h in " ".join(process.cmdline()) for h in _PYTHON_HELPERS):
            return False
        parent = process.parent()
        return parent is None or not any(h in " ".join(parent.cmdline()) for h in _PYTHON_HELPERS)
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


async def async_wait_for(predicate, what: str = "condition", timeout: float = 60.0,
                         interval: float = 0.05):
    """``wait_for`` on an event loop: ``predicate`` may return a value or an awaitable."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


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


class MemoryBackend(ElasticBackend):
    """Clusters as plain records: every call is logged, workers appear at once."""

    name = "local"

    def __init__(self, settings, has_gpu=True):
        super().__init__(settings)
        self.calls: list[tuple] = []
        self.sizes: dict[str, int] = {}
        self.has_gpu = has_gpu
        self.closed: list[str] = []

    async def start(self, spec, progress):
        progress("scheduler", "")
        self.calls.append(("start", spec.name))
        self.sizes[spec.name] = 0
        return ClusterHandle(name=spec.name, scheduler_address="tcp://127.0.0.1:1", has_gpu=self.has_gpu)

    async def scale(self, handle, n):
        self.calls.append(("scale", handle.name, n))
        self.sizes[handle.name] = n

    async def adapt(self, handle, minimum, maximum, idle_timeout):
        self.calls.append(("adapt", handle.name, minimum, maximum, idle_timeout))

    async def close(self, handle):
        self.closed.append(handle.name)

    async def workers(self, handle):
        return [WorkerDetail(name=str(i), gpus=1.0 if self.has_gpu else 0.0, memory=1)
                for i in range(self.sizes.get(handle.name, 0))]


@pytest.fixture
def memory_backend(jp_serverapp):
    """The server extension's backends (local, kubernetes, gateway) swapped for one
    :class:`MemoryBackend` (CPU workers): clusters start at once and nothing is started. Needs the test module to
    enable the extension in ``jp_server_config``; import this fixture into it."""
    manager = jp_serverapp.web_app.settings["jupyter_elastic_manager"]
    backend = MemoryBackend(manager.settings, has_gpu=False)
    for name in ("local", "kubernetes", "gateway"):
        manager._backends[name] = backend
    return backend  # kept until the server stops, which closes its clusters through it


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
