"""Safe on a shared machine: what another local user (or another kernel) cannot do.

The first tests run a real local cluster: a Dask client without the cluster's TLS
credentials is refused by its scheduler and workers, so it can run nothing there
(``run_on_scheduler`` included), and the credentials appear in no report. The rest use
the in-memory backend of ``test_manager.py``: lease secrets, the per-user cluster cap,
and lease expiry under a running cell.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from jupyter_elastic.config import load_settings
from jupyter_elastic.models import client_security


def _write_marker(path: str) -> str:
    with open(path, "w") as f:
        f.write("ran")
    return "ran"


def _refused(address: str, marker: str, **client_kwargs) -> BaseException:
    """Try to run code on the scheduler at ``address``; the error that refused it."""
    from jupyter_elastic.controlplane.cells import new_client

    try:
        with new_client(address, timeout="3s", **client_kwargs) as client:
            client.run_on_scheduler(_write_marker, marker)
    except Exception as exc:  # what refused it differs: no TLS context, bad certificate, ...
        return exc
    pytest.fail(f"a client without the cluster's credentials ran code on {address}")


def test_local_cluster_refuses_clients_without_its_credentials(tmp_path, no_leaked_processes):
    from distributed import Client
    from distributed.security import Security

    from jupyter_elastic.controlplane.embedded import EmbeddedControlPlane

    settings = load_settings({"idle-timeout": "5s", "max-workers": 1,
                              "worker": {"gpus": 0, "cpus": 1, "memory": "512MiB"}})
    cp = EmbeddedControlPlane(settings)
    try:
        lease = cp.acquire("kernel-a")
        address = lease["scheduler_address"]
        creds = lease["client"]
        assert address.startswith("tls://127.0.0.1:")
        assert creds["kind"] == "tls" and "PRIVATE KEY" in creds["tls_key"]
        marker = tmp_path / "marker"

        # The owner's kernel (the lease's credentials) gets a worker and runs code.
        with Client(address, set_as_default=False, timeout="30s",
                    security=client_security(creds)) as client:
            cp.cell_started(lease["cluster_id"])
            assert client.submit(lambda: 6 * 7, resources={"CELL": 1}).result(timeout=60) == 42
            worker = next(iter(client.scheduler_info()["workers"]))
            assert worker.startswith("tls://127.0.0.1:")

            # Anyone else: no credentials, plain TCP, or credentials of their own making.
            _refused(address, str(marker))
            _refused(address.replace("tls://", "tcp://"), str(marker))
            _refused(address, str(marker), security=Security.temporary())
            _refused(worker, str(marker), security=Security.temporary())
            assert not marker.exists(), "run_on_scheduler ran without the credentials"
            assert client.run_on_scheduler(_write_marker, str(marker)) == "ran"  # the owner can

        # The credentials are handed out in the lease only: no report, repr or row has them.
        scheduler = cp.manager.records()[0].handle.cluster.scheduler
        reports = json.dumps([cp.clusters(details=True), cp.history(), cp.usage(),
                              repr(cp.manager.records()[0]), repr(scheduler)])
        for secret in (creds["tls_key"], creds["tls_cert"]):
            assert secret.splitlines()[1] not in reports
        assert lease["dashboard_link"] is None  # off by default on the local backend

        # The scheduler's HTTP port answers /health only: no JSON, info or proxy routes.
        port = scheduler.http_server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.read() == b"ok"
        for path in ("json/index.html", "info/main/workers.html", "status", "metrics"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10)
            assert info.value.code == 404, path
    finally:
        cp.close()


# ---------------------------------------------------------------------------- leases
ROW = {"id": "c1", "cell": 1, "started": "2026-12-03T10:00:00+00:00", "backend": "local",
       "cluster_id": None, "worker": None, "device": "cpu", "seconds": 0.1,
       "compute_seconds": 0.1, "gpus": 0.0, "status": "ok"}


def test_only_the_kernel_that_acquired_a_lease_can_use_it():
    from test_manager import make_manager, run

    from jupyter_elastic.errors import ClusterNotFound

    async def scenario():
        manager, backend = make_manager(**{"lease-ttl": "1h", "shutdown-after": "1h"})
        mine = await manager.acquire("kernel-a", name="nb-a")
        lid, secret = mine["lease_id"], mine["lease_secret"]
        assert len(secret) >= 32 and secret not in repr(manager._leases[lid])
        for wrong in (None, "", "guess", secret + "x", mine["lease_id"]):
            assert manager.heartbeat(lid, wrong) is False
            assert await manager.release(lid, wrong) is False
            with pytest.raises(ClusterNotFound):
                manager.cell_started(lid, wrong)
            with pytest.raises(ClusterNotFound):
                manager.cell_finished(lid, wrong, ROW)
        assert manager.history() == [] and manager.list_clusters()[0]["running_cells"] == 0
        assert [lease.id for lease in manager.leases_of(mine["cluster_id"])] == [lid]

        # A restarted kernel reconnects by name: a new lease on the same cluster, whose
        # secret differs; the old kernel's lease stays its own.
        other = await manager.acquire("kernel-b", name="nb-a")
        assert other["cluster_id"] == mine["cluster_id"] and other["lease_secret"] != secret
        assert manager.heartbeat(lid, other["lease_secret"]) is False
        assert manager.heartbeat(lid, secret) is True
        manager.cell_started(lid, secret, 30.0)
        assert manager.list_clusters()[0]["running_cells"] == 1
        manager.cell_finished(lid, secret, ROW)
        assert manager.list_clusters()[0]["running_cells"] == 0 and len(manager.history()) == 1
        assert await manager.release(lid, secret, keep=True) is True
        assert manager.heartbeat(lid, secret) is False
        await manager.close_all()

    run(scenario())


def test_a_session_holds_one_lease():
    from test_manager import make_manager, run

    async def scenario():
        manager, backend = make_manager(**{"lease-ttl": "1h", "shutdown-after": "1h"})
        first = await manager.acquire("kernel-a", name="nb-one")
        second = await manager.acquire("kernel-a", name="nb-two")
        assert [lease.id for lease in manager._leases.values()] == [second["lease_id"]]
        assert manager.heartbeat(first["lease_id"], first["lease_secret"]) is False
        # the cluster nobody holds any more is orphaned: it goes after lease-ttl
        orphaned = manager.find("nb-one")
        assert orphaned.orphaned_since is not None
        await manager.close_all()

    run(scenario())


# ---------------------------------------------------------------------------- cluster cap
def test_clusters_per_user_are_capped_with_one_clear_error():
    from test_manager import make_manager, run

    from jupyter_elastic.errors import ConfigError

    async def scenario():
        manager, backend = make_manager(**{"lease-ttl": "1h", "shutdown-after": "1h"})
        manager.max_clusters = 2
        a = await manager.acquire("kernel-a")
        b = await manager.acquire("kernel-b")
        for attempt in (manager.acquire("kernel-c"), manager.create_cluster(name="extra")):
            with pytest.raises(ConfigError) as info:
                await attempt
            message = str(info.value)
            assert "at most 2 clusters per user" in message and "max_clusters_per_user" in message
            assert a["name"] in message and b["cluster_id"] in message and "\n" not in message
        assert len(manager.list_clusters()) == 2
        again = await manager.acquire("kernel-a")  # a session's own cluster is not a new one
        assert again["cluster_id"] == a["cluster_id"]
        await manager.close_cluster(b["cluster_id"])
        assert (await manager.acquire("kernel-c"))["cluster_id"] not in (a["cluster_id"], b["cluster_id"])
        await manager.close_all()

    run(scenario())


# ---------------------------------------------------------------------------- lease expiry
def test_lease_expiry_waits_for_a_stalled_kernels_running_cell():
    """A kernel that stops heartbeating mid-cell keeps its cluster for lease-ttl plus the
    cell's timeout (shutdown-after for a cell without one). Elapsed time is simulated by
    moving the lease's clocks back, so nothing depends on how fast this machine is."""
    from test_manager import make_manager, run

    async def scenario():
        manager, backend = make_manager(**{"lease-ttl": "10s", "shutdown-after": "1h"})
        timed = await manager.acquire("kernel-a", name="nb-timed")
        untimed = await manager.acquire("kernel-b", name="nb-untimed")
        manager.cell_started(timed["lease_id"], timed["lease_secret"], 60.0)
        manager.cell_started(untimed["lease_id"], untimed["lease_secret"], None)

        def age(lease, seconds):
            held = manager._leases[lease["lease_id"]]
            held.last_heartbeat -= seconds
            held.cells = [(started - seconds, timeout) for started, timeout in held.cells]

        def names():
            return sorted(c["name"] for c in manager.list_clusters())

        age(timed, 30)      # past lease-ttl, within lease-ttl + the cell's 60 s
        age(untimed, 600)   # past lease-ttl, within lease-ttl + shutdown-after
        await manager.reap_once()
        assert names() == ["nb-timed", "nb-untimed"], "a running cell's cluster was stopped"
        assert manager.heartbeat(timed["lease_id"], timed["lease_secret"]) is True
        age(timed, 71)      # now past lease-ttl + timeout since its last heartbeat
        age(untimed, 3100)  # 3700 s in all: past lease-ttl + shutdown-after (3610 s)
        await manager.reap_once()
        assert names() == [], "a lapsed lease kept its cluster past lease-ttl + timeout"
        assert sorted(backend.closed) == ["nb-timed", "nb-untimed"]

    run(scenario())


def test_an_idle_lease_still_lapses_after_lease_ttl():
    from test_manager import make_manager, run

    async def scenario():
        manager, backend = make_manager(**{"lease-ttl": "10s", "shutdown-after": "1h"})
        lease = await manager.acquire("kernel-a", name="nb-idle")
        manager.cell_started(lease["lease_id"], lease["lease_secret"], 60.0)
        manager.cell_finished(lease["lease_id"], lease["lease_secret"], ROW)
        manager._leases[lease["lease_id"]].last_heartbeat -= 11
        await manager.reap_once()
        assert manager.list_clusters() == [] and backend.closed == ["nb-idle"]

    run(scenario())


def test_a_client_that_fails_to_connect_is_collected_before_the_error_goes_up():
    """A failed Client left in a reference cycle deadlocked the next Client's start when
    the garbage collector finalized it there (Dask's loop-runner lock): new_client collects
    it at once."""
    import gc
    import socket

    from distributed import Client

    from jupyter_elastic.controlplane.cells import new_client

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, Client)}
    gc.disable()  # only new_client's own collection may run
    try:
        with pytest.raises(OSError):
            new_client(f"tcp://127.0.0.1:{port}", timeout="1s")
        left = [o for o in gc.get_objects() if isinstance(o, Client) and id(o) not in before]
        assert left == [], "the failed Client is still alive, waiting for a later collection"
    finally:
        gc.enable()
