"""``%%gpu --local``: the same semantics as a remote cell, run inside this kernel.

For debugging, or with no cluster at hand: inputs are copies (as on any worker), names come
back all at once only if the cell succeeds, ``--retries`` re-runs it with a note, and
``--timeout`` is an alarm on the kernel's main thread. The body runs through the same
runner as on workers (``execution/runner.py``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import CellCancelled, CellTimeout, ConfigError, RemoteCellError
from ..execution import runner

if TYPE_CHECKING:
    from .dispatch import CellRun

#: What a successful ``--local`` run gives back: value, bound names, deleted names, row.
LocalResult = tuple[Any, dict[str, Any], list[str], dict[str, Any]]


def run_local(run: CellRun, inputs: dict[str, Any],
              report: Callable[[dict[str, Any]], dict[str, Any]]) -> LocalResult:
    """Run ``run``'s cell here on copies of ``inputs``; ``report`` records its history row."""
    import cloudpickle
    from IPython.display import display

    plan, options = run.plan, run.options
    filename = f"<%%gpu --local {run.name}>"
    attempts = 1 + max(0, options.retries or 0)
    compute = 0.0

    def finish(status: str, error: BaseException | None) -> dict[str, Any]:
        return report(run.row(None, "local", compute, status, error))

    with runner.cell_source(filename, plan.source, plan.line_offset):
        for attempt in range(1, attempts + 1):
            copies = {name: (value if isinstance(value, types.ModuleType)
                             else cloudpickle.loads(cloudpickle.dumps(value)))
                      for name, value in inputs.items()}
            globals_ = runner.fresh_globals(copies, display)
            t = time.perf_counter()
            try:
                with _alarm(options.timeout):
                    value = runner.execute(plan.source, plan.line_offset, filename, globals_)
            except CellTimeout as exc:
                compute += time.perf_counter() - t
                finish("timeout", exc)
                raise
            except KeyboardInterrupt:
                compute += time.perf_counter() - t
                stop = CellCancelled("interrupted: the --local cell was stopped")
                finish("cancelled", stop)
                raise stop from None
            except Exception as exc:
                compute += time.perf_counter() - t
                if attempt < attempts:
                    print(f"jupyter-elastic: {type(exc).__name__} on attempt {attempt} of {attempts}; "
                          "retrying (--retries)", file=sys.stderr)
                    continue
                finish("error", exc)
                raise RemoteCellError(type(exc).__name__, str(exc),
                                      runner.format_traceback(exc, filename), "local") from None
            compute += time.perf_counter() - t
            outputs, deleted = runner.collect(globals_, plan.outputs, inputs)
            return value, outputs, deleted, finish("ok", None)
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextlib.contextmanager
def _alarm(seconds: float | None) -> Iterator[None]:
    """Raise CellTimeout in this (the kernel's main) thread after ``seconds``."""
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise ConfigError("--timeout with --local needs the kernel's main thread; drop one of them")

    def expire(signum: int, frame: Any) -> None:
        raise CellTimeout(f"the cell ran past --timeout {seconds:g}s and was stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
