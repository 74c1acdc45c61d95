"""What the kernel's dispatcher and a detached job's supervisor both do with a cluster and a
cell running on it: connect (a client, with no silent re-runs), calls that may not hang,
finding the worker that runs the cell, killing it."""

from __future__ import annotations

from typing import Any

from ..models import client_address, client_security


def bounded(client: Any, fn: Any, *args: Any, timeout: float, **kwargs: Any) -> Any:
    """``client.sync(fn, ...)`` given at most ``timeout`` seconds; None if it failed or took
    longer (a worker busy in C holding the GIL, or a scheduler gone, answers nobody)."""
    try:
        return client.sync(fn, *args, callback_timeout=max(0.05, timeout), **kwargs)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return None


def new_client(address: str, *, security: Any = None, timeout: str = "30s") -> Any:
    """A ``distributed.Client`` of the cluster at ``address`` (``security``: its TLS
    settings, or None).

    A Client that fails to connect stays behind in a reference cycle. If the garbage
    collector finalizes it later, it may do so inside another Client's start, on a thread
    that holds Dask's loop-runner lock. Its ``close`` then waits on that lock, and the thread
    deadlocks (seen in the test suite: the next client hung forever). So a failed Client is
    collected here and now, with its traceback dropped, before the error goes up.
    """
    import gc

    from distributed import Client

    kwargs: dict[str, Any] = {"security": security} if security is not None else {}
    try:
        return Client(address, set_as_default=False, timeout=timeout, **kwargs)
    except Exception as exc:
        failure = exc
    failure.__traceback__ = None  # its frames hold the half-made Client
    gc.collect()
    raise failure


def lease_client(lease: dict[str, Any]) -> Any:
    """A client, in this process, of the cluster ``lease`` names: in-process when its
    scheduler runs in this very process (an embedded control plane's local cluster), over
    TLS with the lease's credentials otherwise (``models.client_address``)."""
    security = client_security(lease["client"]) if lease.get("client") else None
    return new_client(client_address(lease), security=security)


def no_silent_reruns(client: Any) -> bool:
    """Set the cluster's scheduler to fail a task whose worker dies rather than re-run it
    (Dask's ``allowed-failures``, 3 by default): a cell is re-run only when the user asked
    (``--retries``). The local and Kubernetes schedulers start so configured; a Gateway's
    scheduler runs with whatever its admin set, so every client says it again on connect.
    False when the scheduler did not take it (it refuses to run functions, or no answer)."""
    return bounded(client, client._run_on_scheduler, _no_reruns, timeout=5.0) == 0


def _no_reruns(dask_scheduler: Any = None) -> int:
    dask_scheduler.allowed_failures = 0
    return int(dask_scheduler.allowed_failures)


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
    """SIGKILL ``pid`` if it is the worker process at ``address`` on this machine: the
    process listening on that address's port. (Its environment cannot tell: a worker forked
    from the fork server shows the fork server's environment in ``/proc``, which lacks what
    the nanny set in the worker, so such a check refused every forked worker and a stop
    fell back to asking the scheduler, which a silent network does not answer.)"""
    import psutil

    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if (not isinstance(pid, int) or isinstance(pid, bool)
            or host.strip("[]") not in ("127.0.0.1", "localhost", "::1") or not port.isdigit()):
        return False
    try:
        process = psutil.Process(pid)
        listening = any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == int(port)
                        for c in process.net_connections(kind="inet"))  # psutil >= 6
        if not listening:
            return False
        process.kill()
    except (psutil.Error, OSError):
        return False
    return True


def kill_worker(client: Any, address: str, pid: Any, on_nanny: Any) -> bool:
    """Kill a worker process now: SIGKILL by pid when it is a worker on this machine
    (``kill_local``), else through its nanny (``client.run(on_nanny, nanny=True)``, where
    ``on_nanny(dask_worker)`` kills the nanny's process and returns its pid), else ask the
    scheduler to close it. Each call is bounded; nothing waits for a replacement. True only
    when the process is known to be killed."""
    if pid and kill_local(address, pid):
        return True
    done = bounded(client, client._run, on_nanny, workers=[address], nanny=True,
                   on_error="return", timeout=1.0)
    if isinstance(done, dict) and any(isinstance(v, int) for v in done.values()):
        return True
    bounded(client, client.scheduler.close_worker, worker=address, timeout=0.5)
    return False


#: How a stop ended, as the cell's (or job's) error line says it.
STOPPED = {
    "cancelled": "cancelled before it started",
    "before-body": "stopped before its code began on its worker (none of it ran)",
    "interrupted": "interrupted",
    "restarted": ("interrupted, and as it did not stop within interrupt-grace its worker "
                  "was restarted to free the GPU"),
    "unreachable": ("interrupted, but it did not stop within interrupt-grace and its worker "
                    "could not be killed from here (its scheduler was asked to close it): it "
                    "may still run and hold its GPU"),
}


def stop_reached(state: Any, worker: str | None) -> str | None:
    """What a worker's answer to ``interrupt_cell`` (``client.run``'s dict) says of a stop:
    ``before-body`` (the cell's body never ran there and now never will), ``interrupted``
    (its body had already ended), or None (it was running and was interrupted, or the
    worker did not answer: the stop waits out the grace period to see)."""
    said = state.get(worker) if isinstance(state, dict) else None
    if said == "never":
        return "before-body"
    if said == "ended":
        return "interrupted"
    return None
