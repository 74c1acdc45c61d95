"""What the kernel's dispatcher and a detached job's supervisor both do to a cell running on
a cluster: calls that may not hang, finding the worker that runs the cell, killing it."""

from __future__ import annotations

from typing import Any

from ..protocol import WORKER_ENV


def bounded(client: Any, fn: Any, *args: Any, timeout: float, **kwargs: Any) -> Any:
    """``client.sync(fn, ...)`` given at most ``timeout`` seconds; None if it failed or took
    longer (a worker busy in C holding the GIL, or a scheduler gone, answers nobody)."""
    try:
        return client.sync(fn, *args, callback_timeout=max(0.05, timeout), **kwargs)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return None


# Functions run on the scheduler get it as the keyword ``dask_scheduler`` after the
# positional arguments given to ``run_on_scheduler``: it must come last.
def processing_on(key: str, dask_scheduler: Any = None) -> tuple[str | None, int | None]:
    """Run on the scheduler: the worker (address, pid) processing ``key``, if any."""
    ts = dask_scheduler.tasks.get(key)
    ws = getattr(ts, "processing_on", None)
    if ws is None:
        return None, None
    return ws.address, ws.pid


def kill_local(address: str, pid: Any) -> bool:
    """SIGKILL ``pid`` if it is a jupyter-elastic worker process on this machine."""
    import psutil

    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if not isinstance(pid, int) or host not in ("127.0.0.1", "localhost", "::1"):
        return False
    try:
        process = psutil.Process(pid)
        if process.environ().get(WORKER_ENV) != "1":
            return False
        process.kill()
    except (psutil.Error, OSError):
        return False
    return True
