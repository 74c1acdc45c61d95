"""`%gpu history`'s per-notebook cost line: billed seconds against an always-on worker."""

from __future__ import annotations

import datetime as dt

from jupyter_elastic.kernel.display import history_text, savings_lines

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def row(minute: float, notebook: str | None, cluster: str, gpu_seconds: float,
        device: str = "gpu") -> dict:
    started = (T0 + dt.timedelta(minutes=minute)).isoformat()
    return {"cell": 1, "started": started, "device": device, "seconds": 1.0,
            "gpu_seconds": gpu_seconds if device == "gpu" else 0.0,
            "cpu_seconds": 0.0 if device == "gpu" else gpu_seconds,
            "gpus": 1.0 if device == "gpu" else 0.0, "cpus": 0.0 if device == "gpu" else 2.0,
            "cost": 0.0, "status": "ok", "notebook": notebook, "cluster_id": cluster}


def test_saved_so_far_uses_the_clusters_metered_usage_against_an_always_on_worker():
    rows = [row(0, "a.ipynb", "c1", 30.0), row(10, "a.ipynb", "c1", 60.0),
            row(5, "b.ipynb", "c2", 100.0)]
    clusters = [{"id": "c1", "usage": {"gpu_seconds": 360.0, "cpu_seconds": 0.0}}]
    now = (T0 + dt.timedelta(hours=1)).timestamp()
    a, b = savings_lines(rows, clusters, now)
    # a: 360 GPU-s billed (idle included) vs 3600 s x 1 GPU since its first cell
    assert a.startswith("a.ipynb: 360.0 GPU-s billed (cells held 90.0) vs 3600.0")
    assert a.endswith("saved so far: 90%")
    # b's cluster is gone: only its cells' seconds are known, and the line says so
    assert b.startswith("b.ipynb: 100.0 GPU-s billed") and "vs 3300.0" in b
    assert "saved so far: 97%" in b and "stopped clusters" in b


def test_cpu_cells_compare_core_seconds_and_local_cells_are_left_out():
    rows = [row(0, None, "c1", 10.0, device="cpu"), row(1, None, "", 5.0, device="local")]
    clusters = [{"id": "c1", "usage": {"gpu_seconds": 0.0, "cpu_seconds": 120.0}}]
    now = (T0 + dt.timedelta(minutes=10)).timestamp()
    (line,) = savings_lines(rows, clusters, now)
    assert line == ("this kernel: 120.0 CPU-s billed (cells held 10.0) vs 1200.0 on an always-on "
                    "worker since its first cell; saved so far: 90%")
    text = history_text(rows, "USD", clusters, now)
    assert "total cost of 2 cell(s)" in text and text.endswith("saved so far: 90%")
