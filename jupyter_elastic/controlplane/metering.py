"""Metering: what a cluster and each cell cost, in GPU-seconds, CPU-seconds and money.

A cluster is billed for every second each worker exists (that is what a cloud charges);
seconds in which no cell ran are also counted as ``idle_seconds`` — money that bought
nothing, the number this project exists to drive to zero. A cell is charged for the
seconds its task computed, times the GPUs (or CPU cores) it held. Both are priced here,
by the control plane, with its prices (an admin's ``c.ElasticExtension.gpu_hour_price``
included): kernels report what happened, never what it cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Pricing
from ..models import MAX_NUMBER, HistoryRow, Usage


@dataclass
class ClusterMeter:
    """Integrates worker-seconds over time for one cluster."""

    pricing: Pricing
    gpus_per_worker: float
    cpus_per_worker: int
    usage: Usage
    _last: float | None = None

    def __init__(self, pricing: Pricing, gpus_per_worker: float, cpus_per_worker: int) -> None:
        self.pricing = pricing
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.usage = Usage()
        self._last = None
        self.gpu_type: str | None = None  # priced per type (pricing.gpu-hour as a table)

    def tick(self, now: float, workers: int, busy: bool) -> None:
        """Account for the time since the last tick, with ``workers`` alive throughout."""
        if self._last is None or now <= self._last:
            self._last = now
            return
        dt = now - self._last
        self._last = now
        if workers <= 0:
            return
        worker_seconds = dt * workers
        self.usage.gpu_seconds += worker_seconds * self.gpus_per_worker
        self.usage.cpu_seconds += worker_seconds * self.cpus_per_worker
        if busy:
            self.usage.busy_seconds += worker_seconds
        else:
            self.usage.idle_seconds += worker_seconds
        self.usage.cost = self.pricing.cost(self.usage.gpu_seconds, self.usage.cpu_seconds, self.gpu_type)


def cell_charge(
    pricing: Pricing, compute_seconds: float, gpus: float, cpus: float, on_gpu: bool,
    gpu_type: str | None = None,
) -> tuple[float, float, float]:
    """GPU-seconds, CPU-seconds and cost of one cell that computed ``compute_seconds``.

    A cell on a GPU worker holds ``gpus`` GPUs (a fraction when packed); a cell on a CPU
    worker holds ``cpus`` cores. Local (``--local``) cells cost nothing.

    Examples
    --------
    >>> cell_charge(Pricing(gpu_hour=3600.0, cpu_hour=0.0), 2.0, 0.5, 1, True)
    (1.0, 0.0, 1.0)
    """
    gpu_seconds = compute_seconds * gpus if on_gpu else 0.0
    cpu_seconds = 0.0 if on_gpu else compute_seconds * cpus
    return gpu_seconds, cpu_seconds, pricing.cost(gpu_seconds, cpu_seconds, gpu_type)


def price_row(pricing: Pricing, row: HistoryRow) -> HistoryRow:
    """Fill a reported cell's GPU-seconds, CPU-seconds and cost from its compute seconds.

    ``--local`` cells ran in the kernel and cost nothing.
    """
    if row.device == "local":
        row.gpu_seconds = row.cpu_seconds = row.cost = 0.0
        return row
    charge = cell_charge(pricing, row.compute_seconds, row.gpus, row.cpus, row.device == "gpu",
                         row.gpu_type)
    # Each factor is bounded (HistoryRow.from_json, MAX_PRICE), so the product is finite;
    # capping it at MAX_NUMBER keeps the priced row readable by HistoryRow.from_json and
    # the sum over HISTORY_LIMIT rows far from overflow.
    row.gpu_seconds, row.cpu_seconds, row.cost = (min(value, MAX_NUMBER) for value in charge)
    return row
