"""The control plane's recent past: one sample per interval of workers, GPUs, cost and busy.

The reaper meters every cluster on each pass; after the pass it hands the cluster records
to :meth:`Timeline.record`, which folds them into the sample of the current interval (10 s
by default): the most workers and GPUs seen in it, whether any cell ran in it, and the money
every cluster has cost since the control plane started (a stopped cluster's cost stays in).
The samples live in a ring buffer one window long (an hour by default: 361 samples), so the
memory it takes is bounded whatever runs. ``GET /timeline`` serves :meth:`Timeline.to_json`;
the sidebar draws it.
"""

from __future__ import annotations

import datetime as _dt
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import ClusterRecord

#: Seconds per sample, and how far back samples are kept.
SAMPLE_INTERVAL = 10.0
WINDOW = 3600.0


def _iso(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Sample:
    """One interval: its start (wall-clock seconds), peak workers and GPUs, total cost so
    far, and whether a cell ran in it."""

    time: float
    workers: int
    gpus: float
    cost: float
    busy: bool

    def to_json(self) -> dict[str, Any]:
        gpus = int(self.gpus) if float(self.gpus).is_integer() else round(self.gpus, 3)
        return {"time": _iso(self.time), "workers": self.workers, "gpus": gpus,
                "cost": round(self.cost, 6), "busy": self.busy}


class Timeline:
    """A bounded series of :class:`Sample`, oldest first."""

    def __init__(self, interval: float = SAMPLE_INTERVAL, window: float = WINDOW) -> None:
        if interval <= 0 or window < interval:
            raise ValueError("interval must be > 0 and window at least one interval")
        self.interval = interval
        self.window = window
        self._samples: deque[Sample] = deque(maxlen=int(window // interval) + 1)
        self._cost = 0.0  # what every cluster has cost since this control plane started
        self._seen: dict[str, float] = {}  # each live cluster's cost at the last record

    def record(self, now: float, records: Iterable[ClusterRecord]) -> None:
        """Fold the clusters as they are at wall-clock ``now`` into the current sample."""
        workers, gpus, busy = 0, 0.0, False
        seen: dict[str, float] = {}
        for record in records:
            cost = record.meter.usage.cost
            self._cost += max(0.0, cost - self._seen.get(record.id, 0.0))
            seen[record.id] = cost
            if record.status == "running":
                workers += len(record.workers)
                gpus += sum(w.gpus for w in record.workers)
                busy = busy or record.running_cells > 0
        self._seen = seen  # a stopped cluster's cost stays in _cost
        start = now - now % self.interval
        last = self._samples[-1] if self._samples else None
        if last is not None and last.time == start:
            last.workers = max(last.workers, workers)
            last.gpus = max(last.gpus, gpus)
            last.busy = last.busy or busy
            last.cost = self._cost
        else:
            self._samples.append(Sample(start, workers, gpus, self._cost, busy))

    def samples(self, now: float) -> list[Sample]:
        """The samples of the last ``window`` seconds before ``now``, oldest first."""
        return [s for s in self._samples if s.time > now - self.window - self.interval]

    def to_json(self, now: float) -> dict[str, Any]:
        """What ``GET /timeline`` answers."""
        return {"now": _iso(now), "interval": self.interval, "window": self.window,
                "samples": [s.to_json() for s in self.samples(now)]}
