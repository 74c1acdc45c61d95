"""Scheduler preload for Kubernetes clusters: what the Dask operator's autoscaler asks.

The operator's ``DaskAutoscaler`` polls the scheduler's ``adaptive_target`` and, to scale
down, asks ``workers_to_close`` which workers to retire, then deletes exactly those worker
pods. Pods still pulling an image or starting have not joined the scheduler, so they are
never chosen. This preload (``dask scheduler --preload jupyter_elastic.backends.kubernetes.scheduler``;
the older path ``jupyter_elastic.k8s_scheduler`` still works) applies the project's
scaling policy (``backends/scheduling.py``):

* the target counts the GPU (or CELL) slots that waiting ``%%gpu`` cells ask for;
* no worker is given up while a task runs or until the cluster has been idle for
  ``idle-timeout`` (env ``JUPYTER_ELASTIC_IDLE_TIMEOUT``, changed at run time through the
  ``elastic_set_idle_timeout`` handler);
* a worker that is running a task is never offered for retirement.
"""

from __future__ import annotations

import os
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ...protocol import GPU_RESOURCE, IDLE_TIMEOUT_ENV, RESOURCE_ENV, SLOTS_ENV
from ..scheduling import CellActivity, IdleGuard, cell_workers_needed


class ElasticScaling(SchedulerPlugin):
    """Scale-down guard and cell-aware target for the operator's autoscaler."""

    name = "jupyter-elastic-scaling"

    def __init__(self, idle_timeout: float, resource: str, slots: float) -> None:
        self.resource = resource
        self.slots = max(slots, 1e-9)
        self.activity = CellActivity()
        self.guard = IdleGuard(self.activity, idle_timeout)
        self.scheduler: Any = None
        self._target: Any = None
        self._to_close: Any = None

    @property
    def idle_timeout(self) -> float:
        return self.guard.idle_timeout

    def install(self, scheduler: Any) -> None:
        """Put this plugin's target and retirement choice in place of the scheduler's."""
        self.scheduler = scheduler
        self._target = scheduler.adaptive_target
        self._to_close = scheduler.workers_to_close
        scheduler.adaptive_target = self.adaptive_target
        scheduler.workers_to_close = self.workers_to_close
        scheduler.handlers["adaptive_target"] = self.adaptive_target
        scheduler.handlers["workers_to_close"] = self.workers_to_close
        scheduler.handlers["elastic_set_idle_timeout"] = self.set_idle_timeout

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        self.activity.transition(key, start, finish, *args, **kwargs)

    def set_idle_timeout(self, seconds: float | None = None) -> float:
        """RPC handler: change the idle timeout (seconds); returns the value in force."""
        if seconds is not None:
            self.guard.idle_timeout = max(0.0, float(seconds))
        return self.idle_timeout

    def cell_demand(self) -> int:
        """Workers needed for the slots requested by waiting or running cells."""
        return cell_workers_needed(self.scheduler, self.resource, self.slots)

    def busy(self) -> bool:
        """A task is running or waiting, or a cell ended less than ``idle_timeout`` ago."""
        s = self.scheduler
        if s.unrunnable or s.queued or any(ws.processing for ws in s.workers.values()):
            return True
        return not self.guard.may_retire()

    def adaptive_target(self, target_duration: Any = None) -> int:
        current = len(self.scheduler.workers)
        want = max(int(self._target(target_duration)), self.cell_demand())
        if want < current and self.busy():
            return current
        return want

    def workers_to_close(self, *args: Any, attribute: str = "address", **kwargs: Any) -> list[Any]:
        addresses = self._to_close(*args, attribute="address", **kwargs)
        workers = self.scheduler.workers
        keep = [a for a in addresses if a in workers and not workers[a].processing]
        return [getattr(workers[a], attribute) for a in keep]


def dask_setup(scheduler: Any) -> None:
    """Preload entry point: install :class:`ElasticScaling` on this scheduler."""
    plugin = ElasticScaling(
        idle_timeout=float(os.environ.get(IDLE_TIMEOUT_ENV, "90")),
        resource=os.environ.get(RESOURCE_ENV, GPU_RESOURCE),
        slots=float(os.environ.get(SLOTS_ENV, "1")),
    )
    plugin.install(scheduler)
    scheduler.add_plugin(plugin)
