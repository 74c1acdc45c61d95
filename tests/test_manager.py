"""The control plane: leases, reaping, scaling rules and metering.

Most tests use a small in-memory backend so the rules are checked exactly; the last ones
run the real local backend (processes) and check nothing is left behind.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from elastic_testing import MemoryBackend, wait_for

from jupyter_elastic.config import Pricing, load_settings
from jupyter_elastic.controlplane.manager import ElasticClusterManager
from jupyter_elastic.controlplane.metering import ClusterMeter, cell_charge
from jupyter_elastic.errors import ClusterNotFound, ClusterStartError, ConfigError
from jupyter_elastic.models import client_security


def make_manager(**settings_overrides):
    raw = {"backend": "local", "idle-timeout": "1s", "shutdown-after": "2s", "lease-ttl": "1s",
           "max-workers": 4, **settings_overrides}
    settings = load_settings(raw)
    manager = ElasticClusterManager(settings, tick=0.05, owner="tester")
    backend = MemoryBackend(settings)
    manager._backends["local"] = backend
    return manager, backend


def run(coro):
    return asyncio.run(coro)


def test_acquire_reuses_the_session_cluster_and_reports_phases():
    async def scenario():
        manager, backend = make_manager()
        phases = []
        lease = await manager.acquire("kernel-a", progress=lambda p, d: phases.append(p))
        again = await manager.acquire("kernel-a")
        other = await manager.acquire("kernel-b")
        assert phases == ["queued", "scheduler", "ready"]
        # the same cluster, on a new lease: the session's previous lease is revoked
        assert again["cluster_id"] == lease["cluster_id"] and again["lease_id"] != lease["lease_id"]
        assert manager.heartbeat(lease["lease_id"], lease["lease_secret"]) is False
        assert manager.heartbeat(again["lease_id"], again["lease_secret"]) is True
        assert other["cluster_id"] != lease["cluster_id"]
        assert [c[0] for c in backend.calls].count("start") == 2
        assert ("adapt", lease["name"], 0, 4, 1.0) in backend.calls
        await manager.close_all()
        assert sorted(backend.closed) == sorted([lease["name"], other["name"]])

    run(scenario())


def test_lapsed_lease_stops_its_cluster():
    async def scenario():
        manager, backend = make_manager(**{"shutdown-after": "1h"})
        lease = await manager.acquire("kernel-a")
        kept = await manager.acquire("kernel-b")
        t0 = time.monotonic()
        while manager.list_clusters() and len(manager.list_clusters()) > 1:
            manager.heartbeat(kept["lease_id"], kept["lease_secret"])
            await manager.reap_once()
            await asyncio.sleep(0.05)
            assert time.monotonic() - t0 < 5, "lease never lapsed"
        assert [c["id"] for c in manager.list_clusters()] == [kept["cluster_id"]]
        assert backend.closed == [lease["name"]]
        assert manager.heartbeat(lease["lease_id"], lease["lease_secret"]) is False
        assert manager.heartbeat(kept["lease_id"], kept["lease_secret"]) is True
        await manager.close_all()

    run(scenario())


def test_released_lease_leaves_time_to_reconnect_by_name():
    async def scenario():
        manager, backend = make_manager(**{"lease-ttl": "0.5s", "shutdown-after": "1h"})
        lease = await manager.acquire("kernel-a", name="my-run")
        assert await manager.release(lease["lease_id"], lease["lease_secret"], keep=True)
        await manager.reap_once()
        again = await manager.acquire("kernel-restarted", name="my-run")
        assert again["cluster_id"] == lease["cluster_id"]
        assert await manager.release(again["lease_id"], again["lease_secret"], keep=True)
        await asyncio.sleep(0.6)
        await manager.reap_once()
        assert manager.list_clusters() == []
        assert backend.closed == ["my-run"]

    run(scenario())


def test_released_lease_stops_its_cluster_at_once_unless_kept_or_shared():
    async def scenario():
        manager, backend = make_manager(**{"lease-ttl": "1h", "shutdown-after": "1h"})
        closed = await manager.acquire("kernel-a", name="closed-notebook")
        await manager.release(closed["lease_id"], closed["lease_secret"])  # a kernel that shut down
        assert [c["name"] for c in manager.list_clusters()] == []
        assert backend.closed == ["closed-notebook"]

        restarted = await manager.acquire("kernel-b", name="restarted-notebook")
        await manager.release(restarted["lease_id"], restarted["lease_secret"], keep=True)  # a kernel restarting
        await manager.reap_once()
        again = await manager.acquire("kernel-b2", name="restarted-notebook")
        assert again["cluster_id"] == restarted["cluster_id"]

        shared = await manager.acquire("kernel-c", name="restarted-notebook")
        await manager.release(again["lease_id"], again["lease_secret"])  # another kernel still holds it
        assert [c["name"] for c in manager.list_clusters()] == ["restarted-notebook"]
        await manager.release(shared["lease_id"], shared["lease_secret"])
        assert manager.list_clusters() == []
        await manager.release(shared["lease_id"], shared["lease_secret"])  # twice: nothing left to do
        await manager.close_all()

    run(scenario())


def test_empty_idle_cluster_shuts_down_after_shutdown_after():
    async def scenario():
        manager, backend = make_manager(**{"shutdown-after": "0.3s", "lease-ttl": "1h"})
        created = await manager.create_cluster()
        await manager.reap_once()
        assert manager.list_clusters()
        await asyncio.sleep(0.35)
        await manager.reap_once()
        assert manager.list_clusters() == []
        assert backend.closed == [created["name"]]

    run(scenario())


def test_busy_cluster_is_not_shut_down_and_fixed_size_returns_to_adaptive_when_idle():
    async def scenario():
        manager, backend = make_manager(**{"shutdown-after": "0.2s", "idle-timeout": "0.3s"})
        lease = await manager.acquire("kernel-a", name="busy")
        created = {"id": lease["cluster_id"]}
        await manager.scale(created["id"], 2)
        manager.cell_started(lease["lease_id"], lease["lease_secret"])
        await asyncio.sleep(0.4)
        await manager.reap_once()
        cluster = manager.list_clusters()[0]
        assert cluster["requested_workers"] == 2 and cluster["adapt"] is None
        assert cluster["running_cells"] == 1 and cluster["idle_seconds"] == 0
        manager.heartbeat(lease["lease_id"], lease["lease_secret"])
        manager.cell_finished(lease["lease_id"], lease["lease_secret"], {"id": "c1", "cell": 1, "started": "2026-12-03T10:00:00+00:00", "backend": "local",
                                             "cluster_id": created["id"], "worker": "0", "device": "gpu",
                                             "seconds": 0.4, "compute_seconds": 0.4, "gpus": 1.0,
                                             "gpu_seconds": 0.4, "cpu_seconds": 0.0, "cost": 0.1,
                                             "status": "ok"})
        await asyncio.sleep(0.35)
        await manager.reap_once()
        cluster = manager.list_clusters()[0]
        assert cluster["adapt"] == {"minimum": 0, "maximum": 4}, cluster
        assert backend.calls[-1][0] == "adapt"
        history = manager.history()
        assert history[-1]["cell"] == 1 and history[-1]["owner"] == "tester"
        assert manager.usage()["cells"]["gpu_seconds"] == pytest.approx(0.4)
        await manager.close_all()

    run(scenario())


def test_bad_requests_name_the_field():
    async def scenario():
        manager, _ = make_manager()
        created = await manager.create_cluster(name="named")
        with pytest.raises(ConfigError, match="n must be a whole number of workers >= 0, got -1"):
            await manager.scale(created["id"], -1)
        with pytest.raises(ConfigError, match="above max-workers=4"):
            await manager.scale(created["id"], 9)
        with pytest.raises(ConfigError, match=r"minimum \(3\) must not be above maximum \(1\)"):
            await manager.adapt(created["id"], 3, 1)
        with pytest.raises(ConfigError, match="minimum must be a whole number"):
            await manager.adapt(created["id"], "a", 1)
        with pytest.raises(ClusterNotFound, match="no cluster with id 'nope'"):
            await manager.scale("nope", 1)
        with pytest.raises(ConfigError, match="already exists"):
            await manager.create_cluster(name="named")
        with pytest.raises(ConfigError, match="cluster name 'Bad Name' is not valid"):
            await manager.create_cluster(name="Bad Name")
        with pytest.raises(ConfigError, match="unknown backend 'yarn'"):
            await manager.create_cluster(backend="yarn")
        await manager.close_all()

    run(scenario())


def test_gpu_budget_and_idle_timeout_bounds():
    async def scenario():
        manager, _ = make_manager()
        manager.max_gpus = 3
        manager.idle_timeout_bounds = (0.5, 60.0)
        created = await manager.create_cluster()
        await manager.scale(created["id"], 3)
        await manager.reap_once()
        with pytest.raises(ConfigError, match="allows at most 3 per user"):
            await manager.create_cluster(workers=1)
        with pytest.raises(ConfigError, match="outside the range this server allows"):
            await manager.set_idle_timeout(created["id"], 3600)
        await manager.close_all()

    run(scenario())


def test_meter_counts_billed_busy_and_idle_worker_seconds():
    meter = ClusterMeter(Pricing(gpu_hour=3600.0, cpu_hour=0.0), gpus_per_worker=1.0, cpus_per_worker=4)
    meter.tick(0.0, workers=2, busy=False)
    meter.tick(1.0, workers=2, busy=True)   # 2 worker-seconds busy
    meter.tick(4.0, workers=2, busy=False)  # 6 worker-seconds idle
    meter.tick(5.0, workers=0, busy=False)  # nothing billed
    usage = meter.usage
    assert usage.gpu_seconds == pytest.approx(8.0)
    assert usage.busy_seconds == pytest.approx(2.0)
    assert usage.idle_seconds == pytest.approx(6.0)
    assert usage.cost == pytest.approx(8.0)
    assert cell_charge(Pricing(gpu_hour=1.0, cpu_hour=2.0), 3600.0, 0.5, 4, True) == (1800.0, 0.0, 0.5)
    assert cell_charge(Pricing(gpu_hour=1.0, cpu_hour=2.0), 3600.0, 0.0, 2, False) == (0.0, 7200.0, 4.0)


def test_real_local_cluster_wakes_and_scales_to_zero(no_leaked_processes):
    from jupyter_elastic.controlplane.embedded import EmbeddedControlPlane

    settings = load_settings({"idle-timeout": "1s", "max-workers": 1})
    cp = EmbeddedControlPlane(settings)
    try:
        lease = cp.acquire("kernel-a")
        assert lease["has_gpu"] is False
        from distributed import Client

        with Client(lease["scheduler_address"], set_as_default=False,
                    security=client_security(lease["client"])) as client:
            cp.cell_started(lease["cluster_id"])
            task = client.submit(time.sleep, 0.5, key="gpu-cell-1", resources={"CELL": 1}, pure=False)
            wait_for(lambda: cp.cluster(lease["cluster_id"])["workers"] == 1, timeout=30, what="a worker on wake")
            detail = cp.cluster(lease["cluster_id"])["worker_details"][0]
            assert detail["gpus"] == 0.0 and detail["memory"] > 0
            task.result()
            del task
        cp.cell_finished(lease["cluster_id"], {"id": "x", "cell": None, "started": "2026-12-03T10:00:00+00:00", "backend": "local",
                                               "cluster_id": lease["cluster_id"], "worker": None,
                                               "device": "cpu", "seconds": 0, "compute_seconds": 0,
                                               "gpus": 0, "gpu_seconds": 0, "cpu_seconds": 0, "cost": 0,
                                               "status": "ok"})
        wait_for(lambda: cp.cluster(lease["cluster_id"])["workers"] == 0, timeout=30, what="scale to zero")
        usage = cp.cluster(lease["cluster_id"])["usage"]
        assert usage["idle_seconds"] > 0
        assert usage["gpu_seconds"] == 0 and usage["cpu_seconds"] > 0, "CPU workers bill no GPU time"
    finally:
        cp.close()


def test_fractional_gpus_pack_two_cells_on_one_worker(tmp_path, no_leaked_processes):
    from distributed import Client

    from jupyter_elastic.controlplane.embedded import EmbeddedControlPlane

    def both_started(me: str, other: str) -> str:
        import os
        import time as _t

        open(os.path.join(folder, me), "w").close()
        deadline = _t.monotonic() + 30
        while not os.path.exists(os.path.join(folder, other)):
            if _t.monotonic() > deadline:
                raise TimeoutError("the other cell never started alongside this one")
            _t.sleep(0.01)
        return os.environ.get("JUPYTER_ELASTIC_WORKER", "") + str(os.getpid())

    folder = str(tmp_path)
    cp = EmbeddedControlPlane(load_settings({"idle-timeout": "30s", "max-workers": 1}))
    try:
        lease = cp.acquire("kernel-a")
        with Client(lease["scheduler_address"], set_as_default=False,
                    security=client_security(lease["client"])) as client:
            cp.cell_started(lease["cluster_id"])
            a = client.submit(both_started, "a", "b", key="gpu-cell-a", resources={"CELL": 0.5}, pure=False)
            b = client.submit(both_started, "b", "a", key="gpu-cell-b", resources={"CELL": 0.5}, pure=False)
            first, second = client.gather([a, b])
            assert first == second and first.startswith("1"), "both halves ran in one worker process"
            del a, b
    finally:
        cp.close()


def test_waiting_cells_scale_the_cluster_out_to_max_workers(tmp_path, no_leaked_processes):
    from distributed import Client

    from jupyter_elastic.controlplane.embedded import EmbeddedControlPlane

    def hold(gate: str) -> int:
        import os
        import time as _t

        deadline = _t.monotonic() + 60
        while not os.path.exists(gate) and _t.monotonic() < deadline:
            _t.sleep(0.01)
        return os.getpid()

    gate = str(tmp_path / "gate")
    cp = EmbeddedControlPlane(load_settings({"idle-timeout": "30s", "max-workers": 2}))
    try:
        lease = cp.acquire("kernel-a")
        with Client(lease["scheduler_address"], set_as_default=False,
                    security=client_security(lease["client"])) as client:
            cp.cell_started(lease["cluster_id"])
            cells = [client.submit(hold, gate, key=f"gpu-cell-{i}", resources={"CELL": 1}, pure=False)
                     for i in range(3)]
            # two whole slots wanted at once -> two workers (max-workers caps the third)
            wait_for(lambda: cp.cluster(lease["cluster_id"])["workers"] == 2, timeout=60,
                     what="adaptive scaling to two workers for waiting cells")
            wait_for(lambda: sum(1 for keys in client.processing().values() if keys) == 2, timeout=30,
                     what="a queued cell to move to the new worker")
            open(gate, "w").close()
            pids = client.gather(cells)
            assert len(set(pids)) == 2
            assert cp.cluster(lease["cluster_id"])["workers"] == 2
            del cells
    finally:
        cp.close()


def test_a_dead_kernels_running_cell_does_not_keep_the_cluster_busy():
    async def scenario():
        manager, backend = make_manager(**{"shutdown-after": "0.3s", "lease-ttl": "1h"})
        first = await manager.acquire("kernel-1", name="nb-x")
        manager.cell_started(first["lease_id"], first["lease_secret"])  # the kernel dies mid-cell ...
        await manager.release(first["lease_id"], first["lease_secret"], keep=True)
        again = await manager.acquire("kernel-2", name="nb-x")  # ... its restart reconnects
        assert again["cluster_id"] == first["cluster_id"]
        assert manager.list_clusters()[0]["running_cells"] == 0
        await manager.reap_once()
        await asyncio.sleep(0.35)
        await manager.reap_once()
        assert manager.list_clusters() == [], "an idle, empty cluster is stopped after shutdown-after"

    run(scenario())


def test_named_cluster_on_another_backend_is_a_clear_error():
    async def scenario():
        manager, _ = make_manager()
        await manager.acquire("kernel-1", name="nb-x")
        with pytest.raises(ConfigError, match="runs on the local backend, not gateway"):
            await manager.acquire("kernel-1", name="nb-x", backend="gateway")
        await manager.close_all()

    run(scenario())


def test_cpu_clusters_bill_no_gpu_seconds_and_closed_clusters_keep_their_cost():
    async def scenario():
        manager, backend = make_manager(**{"pricing": {"gpu-hour": 3600.0, "cpu-hour": 3600.0}})
        backend.has_gpu = False
        created = await manager.create_cluster(workers=2)
        await manager.reap_once()
        await asyncio.sleep(0.2)
        await manager.reap_once()
        usage = manager.list_clusters()[0]["usage"]
        assert usage["gpu_seconds"] == 0.0 and usage["cpu_seconds"] > 0
        assert usage["cost"] == pytest.approx(usage["cpu_seconds"])
        await manager.close_cluster(created["id"])
        kept = manager.usage()["clusters"]
        assert kept["cost"] >= usage["cost"] > 0, "a stopped cluster's cost stays in the totals"

    run(scenario())


def test_gpu_cap_limits_how_far_adaptive_clusters_may_grow():
    async def scenario():
        manager, backend = make_manager()
        manager.max_gpus = 3
        first = await manager.create_cluster()            # adaptive, up to 3 of 4 GPUs
        assert manager.list_clusters()[0]["adapt"] == {"minimum": 0, "maximum": 3}
        with pytest.raises(ConfigError, match="no GPU left for a new cluster"):
            await manager.create_cluster()
        assert len(manager.list_clusters()) == 1 and len(backend.closed) == 1
        await manager.close_cluster(first["id"])
        await manager.close_all()

    run(scenario())


class SlowBackend(MemoryBackend):
    """A backend whose start takes a while (a cold Kubernetes start, say)."""

    delay = 0.5

    async def start(self, spec, progress):
        await asyncio.sleep(self.delay)
        return await super().start(spec, progress)


def test_stopping_a_starting_cluster_closes_it_when_the_start_returns():
    async def scenario():
        manager, _ = make_manager()
        backend = SlowBackend(manager.settings)
        manager._backends["local"] = backend
        acquiring = asyncio.ensure_future(manager.acquire("kernel-1"))
        await asyncio.sleep(0.1)
        [starting] = manager.list_clusters()
        assert starting["status"] == "starting"
        await manager.close_cluster(starting["id"])
        with pytest.raises(Exception, match="stopped while it started"):
            await acquiring
        assert backend.closed == [starting["name"]], "the backend cluster was closed, not leaked"
        assert manager.list_clusters() == []

    run(scenario())


def test_one_slow_start_does_not_hold_up_other_kernels_leases():
    async def scenario():
        manager, _ = make_manager()
        backend = SlowBackend(manager.settings)
        manager._backends["local"] = backend
        ready = await manager.acquire("kernel-a")          # kernel A has a running cluster
        backend.delay = 2.0
        slow = asyncio.ensure_future(manager.acquire("kernel-b"))  # B starts one slowly
        await asyncio.sleep(0.1)
        t = time.monotonic()
        again = await manager.acquire("kernel-a")
        assert again["cluster_id"] == ready["cluster_id"]
        assert time.monotonic() - t < 1.0, "A waited for B's start"
        twin = asyncio.ensure_future(manager.acquire("kernel-b"))  # B again: joins the same start
        first, second = await slow, await twin
        assert first["cluster_id"] == second["cluster_id"]
        assert [c[0] for c in backend.calls].count("start") == 2
        await manager.close_all()

    run(scenario())


def test_history_rows_are_checked_field_by_field():
    manager, _ = make_manager()
    good = {"id": "c1", "cell": 1, "started": "2026-12-03T10:00:00+00:00", "backend": "local", "cluster_id": None,
            "worker": None, "device": "cpu", "seconds": 1, "compute_seconds": 1, "gpus": 0, "cpus": 1,
            "gpu_seconds": 0, "cpu_seconds": 1, "cost": 0.1, "status": "ok"}
    manager.cell_finished(None, None, good)
    for bad, message in [({"seconds": "fast"}, "seconds must be a finite number"),
                         ({"cost": float("nan")}, "cost must be a finite number"),
                         ({"cell": "3"}, "cell must be a whole number"),
                         ({"status": 1}, "status must be a string")]:
        with pytest.raises(ConfigError, match=message):
            manager.cell_finished(None, None, {**good, **bad})
    with pytest.raises(ConfigError, match="missing field"):
        manager.cell_finished(None, None, {"id": "x"})
    # the control plane prices the row itself (the kernel's 0.1 is not trusted)
    expected = round(manager.settings.pricing.cost(0.0, 1.0), 6)
    assert len(manager.history()) == 1 and manager.usage()["cells"]["cost"] == expected


def test_local_gpu_groups_give_each_worker_whole_devices():
    from jupyter_elastic.backends.local import gpu_groups

    assert gpu_groups([0, 1, 2, 3], 1) == ["0", "1", "2", "3"]
    assert gpu_groups([0, 1, 2, 3], 2) == ["0,1", "2,3"]
    assert gpu_groups([0, 1, 2], 2) == ["0,1"]
    assert gpu_groups([0], 2) == []


def test_new_settings_reach_the_options_a_backend_derives_from_them():
    from jupyter_elastic.backends.kubernetes.backend import KubernetesBackend

    manager, _ = make_manager(kubernetes={"image": "old/img:1"})
    manager._backends["kubernetes"] = KubernetesBackend(manager.settings)
    assert manager._backends["kubernetes"].options.image == "old/img:1"
    manager.update_settings(load_settings({"kubernetes": {"image": "new/img:2"}}))
    assert manager._backends["kubernetes"].options.image == "new/img:2"


def test_the_control_plane_prices_every_cell_with_its_own_prices():
    """An admin's price reaches each cell's charge: the kernel reports seconds, not cost."""
    manager, _ = make_manager()
    manager.update_settings(manager.settings.with_overrides(
        pricing=Pricing(gpu_hour=3600.0, cpu_hour=360.0, currency="EUR")))
    row = {"id": "c1", "cell": 1, "started": "2026-12-03T10:00:00+00:00", "backend": "local",
           "cluster_id": None, "worker": "w", "device": "gpu", "seconds": 3, "compute_seconds": 2,
           "gpus": 0.5, "status": "ok", "gpu_seconds": 99, "cost": 123.0}
    recorded = manager.cell_finished(None, None, row)
    assert recorded["gpu_seconds"] == 1.0 and recorded["cost"] == 1.0
    cpu = manager.cell_finished(None, None, {**row, "id": "c2", "device": "cpu", "gpus": 0, "cpus": 2})
    assert cpu["gpu_seconds"] == 0 and cpu["cpu_seconds"] == 4.0 and cpu["cost"] == 0.4
    local = manager.cell_finished(None, None, {**row, "id": "c3", "device": "local"})
    assert local["cost"] == 0
    assert [r["cost"] for r in manager.history()] == [1.0, 0.4, 0.0]


def test_local_workers_report_and_bill_what_they_really_hold(no_leaked_processes):
    """Asked for more cores and memory than this machine has, a local worker holds (and is
    billed for) what it really gets: the machine's cores, a share of its memory."""
    import os

    import psutil
    from distributed import Client

    from jupyter_elastic.controlplane.embedded import EmbeddedControlPlane

    cores = os.cpu_count() or 1
    total = psutil.virtual_memory().total
    settings = load_settings({"idle-timeout": "30s", "max-workers": 2, "worker": {
        "gpus": 0, "cpus": cores + 3, "memory": f"{total // 2**30 + 64}GiB"}})
    cp = EmbeddedControlPlane(settings)
    try:
        lease = cp.acquire("kernel-a")
        assert lease["cpus_per_worker"] == cores
        assert lease["memory_per_worker"] == total // 2
        cp.scale(lease["cluster_id"], 1)
        with Client(lease["scheduler_address"], set_as_default=False,
                    security=client_security(lease["client"])) as client:
            client.wait_for_workers(1, timeout=60)
            (worker,) = client.scheduler_info()["workers"].values()
            assert worker["memory_limit"] == lease["memory_per_worker"]
        meter = cp.manager._get(lease["cluster_id"]).meter
        assert meter.cpus_per_worker == cores, "CPU-seconds are billed for the cores a worker has"
    finally:
        cp.close()


class QueuedBackend(MemoryBackend):
    """A backend whose start waits in a queue (a hub's gateway, Kueue) until cancelled."""

    withdrawn = 0

    async def start(self, spec, progress):
        progress("queued", "place 2 of 3 in the queue")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.withdrawn += 1
            raise
        return await super().start(spec, progress)


def test_stopping_a_cluster_waiting_in_a_queue_cancels_its_start():
    async def scenario():
        manager, _ = make_manager()
        backend = QueuedBackend(manager.settings)
        manager._backends["local"] = backend
        acquiring = asyncio.ensure_future(manager.acquire("kernel-1"))
        await asyncio.sleep(0.1)
        [starting] = manager.list_clusters()
        assert (starting["phase"], starting["phase_detail"]) == ("queued", "place 2 of 3 in the queue")
        await manager.close_cluster(starting["id"])
        with pytest.raises(ClusterStartError, match="was stopped while it started"):
            await acquiring
        assert backend.withdrawn == 1 and backend.closed == []
        assert manager.list_clusters() == []

    run(scenario())


def test_prewarm_starts_only_the_scheduler_and_the_notebooks_kernel_leases_it():
    async def scenario():
        manager, _ = make_manager(**{"shutdown-after": "1h"})
        backend = SlowBackend(manager.settings)
        backend.delay = 0.2
        manager._backends["local"] = backend
        assert await manager.prewarm("nb-demo-1234") is True
        assert await manager.prewarm("nb-demo-1234") is False  # one start per name
        # The kernel's first %%gpu cell asks while the pre-warm start is under way: it waits
        # for that same start rather than starting a second cluster.
        lease = await manager.acquire("kernel-a", name="nb-demo-1234")
        assert [c[0] for c in backend.calls].count("start") == 1
        assert ("adapt", "nb-demo-1234", 0, 4, 1.0) in backend.calls  # from zero workers
        assert not any(c[0] == "scale" for c in backend.calls)
        assert await manager.prewarm("nb-demo-1234") is False  # running: nothing to do
        # Leased: the idle-timeout rule for unclaimed pre-warmed clusters no longer applies.
        manager.clock = lambda: time.monotonic() + 10
        assert manager.heartbeat(lease["lease_id"], lease["lease_secret"])
        await manager.reap_once()
        assert [c["id"] for c in manager.list_clusters()] == [lease["cluster_id"]]
        await manager.close_all()

    run(scenario())


def test_unclaimed_prewarmed_cluster_stops_after_idle_timeout_and_min_workers_are_kept():
    async def scenario():
        now = [1000.0]
        manager, backend = make_manager(**{"shutdown-after": "1h", "idle-timeout": "90s",
                                           "min-workers": 1})
        manager.clock = lambda: now[0]
        assert await manager.prewarm("nb-nobody-claims")
        while not manager.list_clusters() or manager.list_clusters()[0]["status"] != "running":
            await asyncio.sleep(0.01)
        # min-workers set by the admin: the pre-warmed cluster holds that many.
        assert ("adapt", "nb-nobody-claims", 1, 4, 90.0) in backend.calls
        now[0] += 89
        await manager.reap_once()
        assert len(manager.list_clusters()) == 1
        now[0] += 2
        await manager.reap_once()
        assert manager.list_clusters() == [] and backend.closed == ["nb-nobody-claims"]
        # An ordinary cluster nobody leased (POST /clusters) is not stopped by that rule.
        plain = await manager.create_cluster(name="by-hand")
        now[0] += 600
        await manager.reap_once()
        assert [c["id"] for c in manager.list_clusters()] == [plain["id"]]
        await manager.close_all()

    run(scenario())
