"""The two timers the gateway quota module turns on: the default idle timeout and the lease.

A real dask-gateway-server on 127.0.0.1 with ``quota_backend(UnsafeLocalBackend)``, a 3 s
default idle timeout and a 3 s lease (checked every 0.5 s). Each test tells the two apart:
the idle cluster keeps a Dask client connected (so its lease holds), the leased cluster asks
for a long idle timeout.
"""

from __future__ import annotations

import pytest
from elastic_testing import async_wait_for

pytest.importorskip("dask_gateway_server", reason="the quota module runs in dask-gateway-server")
pytest.importorskip("dask_gateway", reason="the tests talk to the gateway with dask-gateway")

from dask_gateway.client import ClusterStatus  # noqa: E402

from .conftest import quota_config, run, start_gateway, stop_gateway, user_gateway  # noqa: E402
from .test_quota import _options  # noqa: E402

pytestmark = pytest.mark.gateway


@pytest.fixture(scope="module")
def timed_gateway(tmp_path_factory: pytest.TempPathFactory):
    server = start_gateway(tmp_path_factory.mktemp("lease-gateway"), quota_config(idle=3, lease=3))
    try:
        yield server
    finally:
        stop_gateway(server)


async def _stopped(gateway, name: str) -> bool:
    report = await gateway.get_cluster(name)
    return report.status in (ClusterStatus.STOPPED, ClusterStatus.STOPPING)


def test_the_default_idle_timeout_stops_an_idle_cluster(timed_gateway, no_leaked_processes):
    """No idle timeout asked for (dask-gateway's default is off): the hub's default applies."""
    server = timed_gateway

    async def scenario() -> None:
        alice = user_gateway(server, "alice")
        cluster = await alice.new_cluster(await _options(alice), shutdown_on_close=True)
        client = await cluster.get_client(set_as_default=False)  # its lease holds
        try:
            await async_wait_for(lambda: _stopped(alice, cluster.name), "the idle cluster to stop")
        finally:
            await client.close()
            await cluster.shutdown()
            await alice.close()
        assert f"stopping cluster {cluster.name}" not in server.log.read_text()  # not the lease

    run(scenario())
    assert server.clusters("alice") == []


def test_a_cluster_whose_client_went_away_is_stopped_after_the_lease(
        timed_gateway, no_leaked_processes):
    server = timed_gateway

    async def scenario() -> None:
        alice = user_gateway(server, "alice")
        cluster = await alice.new_cluster(await _options(alice, idle_timeout=100),
                                          shutdown_on_close=True)
        try:
            client = await cluster.get_client(set_as_default=False)
            try:
                # a connected client holds the lease: wait out several lease checks
                marks = server.log.read_text().count("heartbeat [count")
                await async_wait_for(lambda: server.log.read_text().count("heartbeat [count") > marks + 6,
                             "six more scheduler heartbeats")
                assert not await _stopped(alice, cluster.name)
            finally:
                await client.close()
            await async_wait_for(lambda: _stopped(alice, cluster.name), "the lease to lapse")
            assert (f"lease lapsed: stopping cluster {cluster.name} of alice, no Dask client "
                    "for 3s") in server.log.read_text()
        finally:
            await cluster.shutdown()
            await alice.close()

    run(scenario())
    assert server.clusters("alice") == []
