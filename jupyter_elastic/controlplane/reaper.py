"""The control plane's timed passes: metering, lapsed leases, idle and empty clusters.

One :class:`Reaper` per manager runs on the manager's loop every ``tick`` seconds. Each pass,
for every running cluster: read its live workers and meter the time since the last pass;
drop leases whose kernel stopped heartbeating and, once no lease is left for ``lease-ttl``,
stop the cluster (nothing is left running that nobody owns) -- but a lease with a running
cell lapses only ``lease-ttl`` plus that cell's ``--timeout`` (``shutdown-after`` for a cell
without one) after its last heartbeat or the cell's start, so a live but stalled kernel's
cell is not cut off; return a fixed-size cluster
to adaptive scaling after ``idle-timeout`` without a cell; stop a cluster that has been
empty and idle for ``shutdown-after``, and a pre-warmed one no kernel leased within
``idle-timeout``. After each pass the clusters are sampled into the
manager's :class:`~jupyter_elastic.controlplane.timeline.Timeline`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manager import ElasticClusterManager
    from .records import ClusterRecord

log = logging.getLogger("jupyter_elastic.controlplane.reaper")


class Reaper:
    """Runs :meth:`pass_once` on the manager's loop every :attr:`tick` seconds."""

    def __init__(self, manager: ElasticClusterManager, *, tick: float | None = None) -> None:
        self.manager = manager
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    @property
    def tick(self) -> float:
        """Seconds between passes: fine enough for the shortest timer in use."""
        if self._tick is not None:
            return self._tick
        s = self.manager.settings
        return max(0.1, min(1.0, s.idle_timeout / 4, s.lease_ttl / 4, s.shutdown_after / 4))

    def start(self) -> None:
        """Start the passes (idempotent; needs a running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._forever())

    async def stop(self) -> None:
        """Stop the passes and wait for one under way to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _forever(self) -> None:
        while True:
            try:
                await self.pass_once()
            except Exception:
                log.exception("jupyter-elastic reaper pass failed")
            await asyncio.sleep(self.tick)

    async def pass_once(self) -> None:
        """One pass over every running cluster."""
        for record in self.manager.records():
            if record.status != "running":
                continue
            await self.manager.refresh_workers(record)
            now = self.manager.clock()
            record.meter.tick(now, len(record.workers), busy=record.running_cells > 0)
            if await self._expire_leases(record, now):
                continue
            await self._idle(record, now)
        self.manager.timeline.record(time.time(), self.manager.records())

    async def _expire_leases(self, record: ClusterRecord, now: float) -> bool:
        """Drop lapsed leases; stop the cluster once no kernel held it for ``lease-ttl``.
        True when the cluster was stopped."""
        manager = self.manager
        if not manager.leases_expire:
            return False
        ttl = manager.settings.lease_ttl
        untimed = manager.settings.shutdown_after  # a running cell without --timeout
        leases = manager.leases_of(record.id)
        live = [lease for lease in leases if now < lease.held_until(ttl, untimed)]
        for lease in leases:
            if lease not in live:
                manager.drop_lease(lease.id)
                if not live and record.orphaned_since is None:
                    manager.orphan(record, lease.held_until(ttl, untimed) - ttl)
        if record.leased and not live and record.orphaned_since is not None:
            if now - record.orphaned_since >= ttl:
                await manager.close_cluster(record.id, reason="lease expired: owning kernel gone")
                return True
        return False

    async def _idle(self, record: ClusterRecord, now: float) -> None:
        """Fixed size back to adaptive after ``idle-timeout``; stop after ``shutdown-after``;
        stop a pre-warmed cluster that no kernel leased within ``idle-timeout``."""
        idle = record.idle_seconds(now)
        if record.prewarmed and not record.leased and idle >= record.idle_timeout:
            await self.manager.close_cluster(
                record.id, reason="pre-warmed, and no kernel leased it within idle-timeout")
            return
        if record.workers:
            record.empty_since = None
        elif record.empty_since is None:
            record.empty_since = now
        size = max(record.requested, len(record.workers))
        if record.mode == "fixed" and size > record.minimum and idle >= record.idle_timeout:
            await self.manager.back_to_adaptive(record)
        if (
            not record.workers
            and record.empty_since is not None
            and min(idle, now - record.empty_since) >= record.shutdown_after
        ):
            await self.manager.close_cluster(record.id, reason="shutdown-after: empty and idle")
