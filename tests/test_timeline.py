"""The control plane's timeline: one bounded sample per interval, fed by the reaper."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_manager import make_manager

from jupyter_elastic.config import Pricing
from jupyter_elastic.controlplane.metering import ClusterMeter
from jupyter_elastic.controlplane.records import ClusterRecord
from jupyter_elastic.controlplane.timeline import Timeline
from jupyter_elastic.models import ClusterSpec, WorkerDetail

T0 = 1_780_000_000.0  # a wall-clock time on an interval boundary (divisible by 10)


def record(cluster_id: str, workers: int, cost: float, *, gpus: float = 1.0, busy: bool = False,
           status: str = "running") -> ClusterRecord:
    meter = ClusterMeter(Pricing(gpu_hour=1.0, cpu_hour=1.0), gpus, 1)
    meter.usage.cost = cost
    return ClusterRecord(
        id=cluster_id, spec=ClusterSpec(name=f"c-{cluster_id}"), backend="local", owner="me",
        created="", created_at=0.0, idle_timeout=90.0, shutdown_after=1200.0, meter=meter,
        status=status, running_cells=1 if busy else 0,
        workers=[WorkerDetail(name=str(i), gpus=gpus, memory=1) for i in range(workers)],
    )


def test_passes_within_an_interval_fold_into_one_sample_of_peaks():
    timeline = Timeline(interval=10, window=60)
    timeline.record(T0 + 1, [record("a", 1, 0.10)])
    timeline.record(T0 + 4, [record("a", 3, 0.20, busy=True)])
    timeline.record(T0 + 8, [record("a", 2, 0.30)])
    timeline.record(T0 + 12, [record("a", 2, 0.35)])
    data = timeline.to_json(T0 + 12)
    assert data["interval"] == 10 and data["window"] == 60
    first, second = data["samples"]
    assert first["workers"] == 3 and first["gpus"] == 3 and first["busy"] is True
    assert first["cost"] == pytest.approx(0.30)
    assert second["workers"] == 2 and second["busy"] is False
    assert second["cost"] == pytest.approx(0.35)
    assert first["time"].endswith("+00:00") and first["time"] < second["time"]


def test_cost_adds_up_over_clusters_and_keeps_a_stopped_clusters_cost():
    timeline = Timeline(interval=10, window=60)
    timeline.record(T0, [record("a", 1, 0.5), record("b", 1, 0.25, gpus=0.0)])
    timeline.record(T0 + 10, [record("b", 1, 0.5, gpus=0.0)])  # a stopped
    samples = timeline.to_json(T0 + 10)["samples"]
    assert [s["cost"] for s in samples] == [pytest.approx(0.75), pytest.approx(1.0)]
    assert [s["gpus"] for s in samples] == [1, 0]
    # A cluster still starting holds no workers yet, but what it cost counts.
    timeline.record(T0 + 20, [record("b", 1, 0.5, gpus=0.0), record("c", 0, 0.1, status="starting")])
    assert timeline.to_json(T0 + 20)["samples"][-1]["cost"] == pytest.approx(1.1)


def test_the_buffer_keeps_one_window_whatever_runs():
    timeline = Timeline(interval=10, window=60)
    for step in range(100):
        timeline.record(T0 + 10 * step, [record("a", step % 3, 0.01 * step)])
    samples = timeline.to_json(T0 + 990)["samples"]
    assert len(samples) == 7  # 60 s of 10 s samples, and the current one
    assert samples[-1]["workers"] == 99 % 3
    assert len(timeline._samples) <= 7
    # Long after the last pass, nothing older than the window is served.
    assert timeline.to_json(T0 + 5000)["samples"] == []


def test_bad_intervals_are_refused():
    with pytest.raises(ValueError):
        Timeline(interval=0)
    with pytest.raises(ValueError):
        Timeline(interval=10, window=5)


def test_the_reaper_samples_every_pass():
    async def scenario():
        manager, _ = make_manager()
        lease = await manager.acquire("kernel-a")
        await manager.scale(lease["cluster_id"], 2)
        manager.cell_started(lease["lease_id"], lease["lease_secret"])
        await manager.reap_once()
        sample = manager.timeline.samples(time.time())[-1]
        assert sample.workers == 2 and sample.gpus == 2 and sample.busy is True
        await manager.close_all("done")

    asyncio.run(scenario())
