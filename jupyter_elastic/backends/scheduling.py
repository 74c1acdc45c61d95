"""The one scaling policy every backend's autoscaler follows, written once.

Dask's autoscalers (``distributed``'s ``Adaptive`` for local clusters, the Dask operator's
``DaskAutoscaler`` on Kubernetes) ask the scheduler two questions: how many workers now
(the *target*), and which workers may go. Both are answered here, for scheduler-side code
only (a local cluster's scheduler in the control plane's process, or the Kubernetes
scheduler preload):

* the target is at least enough workers for the GPU (or CELL) slots that waiting and
  running ``%%gpu`` cells ask for, so two concurrent cells get two workers;
* no worker is retired until no cell has run for ``idle-timeout``, measured from cell
  activity (Dask's own count of idle checks would retire a worker between two quick cells).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..protocol import CELL_PREFIX, CELL_WAITING_STATES

#: Above this many tasks the demand scan is skipped (a cell task is never among so many).
MAX_SCANNED_TASKS = 20000


def is_cell(key: Any) -> bool:
    """Whether a task key is a ``%%gpu`` cell."""
    return isinstance(key, str) and key.startswith(CELL_PREFIX)


class CellActivity(SchedulerPlugin):
    """Remembers when a cell task last changed state, and which cells are in flight."""

    name = "jupyter-elastic-activity"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self.in_flight: set[str] = set()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if is_cell(key):
            self.last = self.clock()
            if finish in ("memory", "erred", "released", "forgotten", "cancelled"):
                self.in_flight.discard(key)
            else:
                self.in_flight.add(key)

    def idle_for(self) -> float:
        """Seconds since the last cell ended (0 while one runs)."""
        return 0.0 if self.in_flight else self.clock() - self.last


def cell_workers_needed(scheduler: Any, resource: str, slots_per_worker: float) -> int:
    """Workers needed for the ``resource`` slots that waiting or running cells ask for."""
    tasks = getattr(scheduler, "tasks", None)
    if not tasks or len(tasks) > MAX_SCANNED_TASKS:
        return 0
    demand = 0.0
    for key, ts in list(tasks.items()):
        if is_cell(key) and ts.state in CELL_WAITING_STATES:
            demand += (ts.resource_restrictions or {}).get(resource, 0.0)
    return math.ceil(demand / max(slots_per_worker, 1e-9) - 1e-9)


class IdleGuard:
    """Retire nothing while a cell ran less than ``idle_timeout`` seconds ago."""

    def __init__(self, activity: CellActivity, idle_timeout: float) -> None:
        self.activity = activity
        self.idle_timeout = idle_timeout

    def may_retire(self) -> bool:
        """True once no cell has run for ``idle_timeout``."""
        return self.activity.idle_for() >= self.idle_timeout
