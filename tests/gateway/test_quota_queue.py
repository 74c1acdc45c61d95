"""The gateway's fair queue (``c.ElasticQuota.when_full = "queue"``).

The queue's order is tested alone first, then against a real dask-gateway-server on
127.0.0.1 (``UnsafeLocalBackend`` wrapped by ``quota_backend``) with a pool of 2 GPUs: alice
is a student (2 GPUs), bob is staff (4 GPUs). Workers advertise ``GPU=1`` (no GPU needed).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
from elastic_testing import async_wait_for

pytest.importorskip("dask_gateway_server", reason="the quota module runs in dask-gateway-server")
pytest.importorskip("dask_gateway", reason="the tests talk to the gateway with dask-gateway")

from dask_gateway import BasicAuth, Gateway  # noqa: E402
from traitlets.config import Config  # noqa: E402

from jupyter_elastic.backends.gateway import GatewayBackend  # noqa: E402
from jupyter_elastic.hub.gateway import ElasticQuota  # noqa: E402
from jupyter_elastic.hub.queue import POOL, FairQueue, Ticket  # noqa: E402
from jupyter_elastic.models import ClusterSpec  # noqa: E402
from jupyter_elastic.protocol import QUOTA_ROUTE  # noqa: E402

from .conftest import PASSWORD, quota_config, run, start_gateway, stop_gateway, user_gateway  # noqa: E402

pytestmark = pytest.mark.gateway


# --------------------------------------------------------------------------- the order alone
def _ticket(cluster: str, user: str, count: int = 1, priority: int = 0,
            scopes: tuple[str, ...] = ()) -> Ticket:
    return Ticket(cluster, user, count, 1.0, frozenset({POOL, f"user:{user}", *scopes}),
                  priority)


def test_order_is_round_robin_by_user_with_group_priority_first():
    queue = FairQueue()
    for name, user in [("a1", "alice"), ("a2", "alice"), ("a3", "alice"), ("b1", "bob"),
                       ("c1", "carol"), ("b2", "bob")]:
        queue.put(_ticket(name, user))
    assert [t.cluster for t in queue.order()] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    # alice served: she goes behind bob and carol
    assert [t.cluster for t in queue.admit(lambda t: None if t.cluster == "a1" else POOL)] == ["a1"]
    assert [t.cluster for t in queue.order()] == ["b1", "c1", "a2", "b2", "a3"]
    # a higher group priority goes first; re-queueing keeps a cluster's place
    queue.put(_ticket("d1", "dave", priority=5))
    queue.put(_ticket("b1", "bob", count=2))
    assert [t.cluster for t in queue.order()][:2] == ["d1", "b1"]
    assert queue.get("b1") is not None and queue.get("b1").count == 2  # type: ignore[union-attr]
    assert queue.positions()["a3"] == 6 and len(queue) == 6
    assert queue.withdraw("d1") is not None and "d1" not in queue


def test_a_blocked_scope_holds_later_requests_in_it_but_not_others():
    queue = FairQueue()
    queue.put(_ticket("a1", "alice", count=4, scopes=("group:lab",)))
    queue.put(_ticket("b1", "bob", scopes=("group:lab",)))
    queue.put(_ticket("c1", "carol"))
    queue.put(_ticket("a2", "alice", scopes=("group:lab",)))
    # a1 does not fit its group's pool: b1 and a2 (same group) wait behind it although they
    # would fit; carol (not in the group) does not wait
    free = {"group:lab": 2}

    def blocked_by(ticket: Ticket) -> str | None:
        return "group:lab" if "group:lab" in ticket.scopes and ticket.count > free["group:lab"] \
            else None

    assert [t.cluster for t in queue.admit(blocked_by)] == ["c1"]
    assert [t.cluster for t in queue.order()] == ["a1", "b1", "a2"]
    free["group:lab"] = 5  # room for all three, in order
    assert [t.cluster for t in queue.admit(blocked_by)] == ["a1", "b1", "a2"]


def test_pool_and_queue_settings_are_parsed():
    config = Config()
    config.ElasticQuota.pool_gpus = 8
    config.ElasticQuota.when_full = "queue"
    config.ElasticQuota.groups = {"lab": {"gpus": 2, "pool_gpus": 3, "priority": 1}}
    quota = ElasticQuota(config=config)
    assert quota.pools_for(["lab", "other"]) == {"group:lab": 3.0, POOL: 8.0}
    assert quota.limits_for(["lab"]).priority == 1 and quota.limits_for([]).priority == 0
    config.ElasticQuota.when_full = "wait"
    from traitlets import TraitError

    with pytest.raises(TraitError, match="when_full"):
        ElasticQuota(config=config)


# --------------------------------------------------------------------------- a real gateway
QUEUE_CONFIG = '''
c.ElasticQuota.when_full = "queue"
c.ElasticQuota.pool_gpus = 2
# a scheduler starved of CPU on a loaded CI machine must not be failed for a late heartbeat
c.UnsafeLocalBackend.cluster_heartbeat_timeout = 60
'''


@pytest.fixture(scope="module")
def queue_gateway(tmp_path_factory: pytest.TempPathFactory):
    server = start_gateway(tmp_path_factory.mktemp("queue-gateway"),
                           quota_config(idle=60, lease=0) + QUEUE_CONFIG)
    try:
        yield server
    finally:
        stop_gateway(server)


async def _cluster(gateway: Gateway, gpus: int = 1) -> Any:
    options = await gateway.cluster_options()
    options["worker_gpus"] = gpus
    return await gateway.new_cluster(options, shutdown_on_close=True)


def _granted(server: Any, user: str) -> dict[str, int]:
    return {c["name"]: c["workers"] for c in server.clusters(user, QUOTA_ROUTE)["clusters"]}


def _places(server: Any, user: str) -> dict[str, int]:
    return {q["cluster"]: q["position"] for q in server.clusters(user, QUOTA_ROUTE)["queue"]}


def test_a_queued_cell_shows_its_place_leaves_on_stop_and_starts_when_room_frees(
        queue_gateway, no_leaked_processes):
    """alice holds her 2 GPUs; her %%gpu cell (the project's gateway backend) waits in the
    queue with its place in the start-up phase; cancelling the start (the stop button)
    withdraws it; a second one starts once her other cluster stops."""
    server = queue_gateway
    settings = server.settings(user="alice")
    spec = replace(ClusterSpec.from_settings(settings, name="nb-queued", backend="gateway"),
                   gpus_per_worker=1.0)

    async def scenario() -> None:
        alice = user_gateway(server, "alice")
        first = await _cluster(alice)
        backend = GatewayBackend(settings)
        phases: list[tuple[str, str]] = []
        try:
            await first.scale(2)
            await async_wait_for(lambda: _granted(server, "alice").get(first.name) == 2, "2 GPUs held")

            start = asyncio.ensure_future(backend.start(spec, lambda p, d: phases.append((p, d))))
            await async_wait_for(lambda: any(p == "queued" for p, _ in phases), "the queued phase")
            detail = next(d for p, d in phases if p == "queued")
            assert detail.startswith("place 1 of 1 in the hub's GPU queue, waiting ")
            assert "stop the cell to leave the queue" in detail
            queued = next(iter(_places(server, "alice")))
            assert queued != first.name
            start.cancel()  # what stopping the cell does to a start
            with pytest.raises(asyncio.CancelledError):
                await start
            await async_wait_for(lambda: not _places(server, "alice"), "the request to leave the queue")
            await async_wait_for(lambda: queued not in server.clusters("alice"), "the cluster to stop")
            assert "left the queue (stopped)" in server.log.read_text()

            phases.clear()
            start = asyncio.ensure_future(backend.start(spec, lambda p, d: phases.append((p, d))))
            await async_wait_for(lambda: any(p == "queued" for p, _ in phases), "the queued phase")
            await first.shutdown()
            handle = await asyncio.wait_for(start, 60)
            try:
                assert handle.has_gpu
                assert ("workers", "the hub's queue admitted it; starting the first worker") \
                    in phases
                assert _granted(server, "alice") == {handle.extra["gateway_name"]: 1}
            finally:
                await backend.close(handle)
        finally:
            await first.shutdown()
            await alice.close()

    run(scenario())
    assert server.clusters("alice") == []


def test_two_users_over_a_full_pool_are_served_round_robin(queue_gateway, no_leaked_processes):
    """bob fills the 2-GPU pool; alice then bob each queue two one-GPU requests; as GPUs
    free up they are granted alice, bob, alice, bob."""
    server = queue_gateway

    async def scenario() -> None:
        alice, bob = user_gateway(server, "alice"), user_gateway(server, "bob")
        clusters: list[Any] = []
        try:
            full = await _cluster(bob)
            clusters.append(full)
            await full.scale(2)
            await async_wait_for(lambda: _granted(server, "bob").get(full.name) == 2, "the pool full")
            a1, a2 = await _cluster(alice), await _cluster(alice)
            b1, b2 = await _cluster(bob), await _cluster(bob)
            clusters += [a1, a2, b1, b2]
            for cluster in (a1, a2, b1, b2):
                await cluster.scale(1)  # returns at once: the request waits at the gateway
            assert _places(server, "alice") == {a1.name: 1, a2.name: 3}
            assert _places(server, "bob") == {b1.name: 2, b2.name: 4}
            quota = server.clusters("alice", QUOTA_ROUTE)
            assert quota["queue_length"] == 4 and quota["when_full"] == "queue"
            assert quota["pools"] == [{"name": "the hub's GPU pool", "gpus": 2.0,
                                       "holding": 2.0}]
            assert "the hub's GPU pool has 2 GPUs and 2 are held" in quota["queue"][0]["reason"]

            await full.scale(1)  # one GPU frees: alice's first request
            await async_wait_for(lambda: _granted(server, "alice").get(a1.name) == 1, "a1 admitted")
            await full.scale(0)  # the next: bob's first, not alice's second
            await async_wait_for(lambda: _granted(server, "bob").get(b1.name) == 1, "b1 admitted")
            assert _places(server, "alice") == {a2.name: 1}
            assert _places(server, "bob") == {b2.name: 2}
            await a1.shutdown()  # then alice's second
            await async_wait_for(lambda: _granted(server, "alice").get(a2.name) == 1, "a2 admitted")
            assert _places(server, "bob") == {b2.name: 1}
            await b1.shutdown()
            await async_wait_for(lambda: _granted(server, "bob").get(b2.name) == 1, "b2 admitted")
            # the admitted requests really run their workers
            await async_wait_for(lambda: len((b2.scheduler_info or {}).get("workers") or {}) == 1,
                         "b2's worker")
        finally:
            for cluster in clusters:
                await cluster.shutdown()
            await alice.close()
            await bob.close()

    run(scenario())
    assert server.clusters("alice") == [] and server.clusters("bob") == []


def test_the_stop_button_while_queued_withdraws_the_request(queue_gateway, no_leaked_processes):
    """A kernel whose %%gpu cell waits in the hub's queue is interrupted: the cell ends with
    one line, the control plane stops the starting cluster and the gateway withdraws it."""
    import _thread
    import threading

    from jupyter_elastic.controlplane.embedded import EmbeddedControlPlane
    from jupyter_elastic.errors import CellCancelled
    from jupyter_elastic.kernel.session import ElasticSession

    server = queue_gateway
    holder_gateway = Gateway(address=server.address, auth=BasicAuth("alice", PASSWORD))
    options = holder_gateway.cluster_options()
    options["worker_gpus"] = 2  # alice's whole quota in one worker
    holder = holder_gateway.new_cluster(options, shutdown_on_close=True)
    plane = EmbeddedControlPlane(server.settings(user="alice"), owner="alice")
    session = ElasticSession(plane, session_id="nb-stop-button")
    done = threading.Event()

    def press_stop_when_queued() -> None:
        while not done.wait(0.1):
            starting = [c for c in plane.clusters() if c["status"] == "starting"]
            if starting and starting[0]["phase"] == "queued" and starting[0]["phase_detail"]:
                _thread.interrupt_main()  # what the stop button does to a kernel
                return

    left_before = server.log.read_text().count("left the queue (stopped)")
    try:
        holder.scale(1)
        assert _granted(server, "alice") == {holder.name: 1}
        presser = threading.Thread(target=press_stop_when_queued, daemon=True)
        presser.start()
        try:
            with pytest.raises(CellCancelled) as stopped:
                session.ensure_cluster("gateway")
        finally:
            done.set()
            presser.join()
        assert "stopped while waiting in the queue: the request left it" in str(stopped.value)
        # the control plane cancels the start; the backend then stops the gateway cluster
        deadline = time.monotonic() + 60
        while server.log.read_text().count("left the queue (stopped)") == left_before \
                or plane.clusters():
            assert time.monotonic() < deadline, "the request did not leave the queue"
            time.sleep(0.1)
        assert _places(server, "alice") == {}
        assert server.clusters("alice") == [holder.name]
        assert [c for c in plane.clusters() if c["status"] != "stopped"] == []
    finally:
        done.set()
        session.close()
        plane.close()
        holder.shutdown()
        holder.close()
        holder_gateway.close()
    assert server.clusters("alice") == []
