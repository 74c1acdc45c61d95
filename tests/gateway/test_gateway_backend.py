"""The Dask Gateway backend against a real dask-gateway-server on 127.0.0.1: start, a cell
on a gateway worker through the TLS proxy, scaling, adaptive scale-down, reconnect by name,
shutdown, and one clear error per fault with nothing left on the gateway."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytest.importorskip("dask_gateway", reason="the gateway backend needs dask-gateway")

from distributed import Client  # noqa: E402
from elastic_testing import wait_for  # noqa: E402

from jupyter_elastic.backends.gateway import GatewayBackend  # noqa: E402
from jupyter_elastic.controlplane.manager import ElasticClusterManager  # noqa: E402
from jupyter_elastic.errors import BackendUnavailable, ClusterStartError, ConfigError  # noqa: E402
from jupyter_elastic.execution import payload as wire  # noqa: E402
from jupyter_elastic.models import ClusterSpec, client_security  # noqa: E402

from .conftest import free_port, run, worker_module  # noqa: E402

runner = worker_module()

pytestmark = pytest.mark.gateway


def payload(source: str, cell_id: str = "c1", outputs: list[str] | None = None) -> dict[str, Any]:
    """A cell payload as the session builds it."""
    return {"cell_id": cell_id, "source": source, "line_offset": 0, "filename": f"<%%gpu {cell_id}>",
            "inputs": {}, "outputs": outputs or [], "topic": f"t-{cell_id}",
            "keep_on_device": False, "versions": wire.versions()}


async def run_cell(address: str, client_info: dict[str, Any], source: str, resource: str = "CELL",
                   outputs: list[str] | None = None) -> dict[str, Any]:
    """Run a cell the way the session does: a Client on the lease's address and credentials."""
    async with Client(address, asynchronous=True, timeout="20s",
                      security=client_security(client_info)) as client:
        future = client.submit(runner.run_cell, payload(source, outputs=outputs),
                               key="gpu-cell-test", resources={resource: 1}, pure=False)
        result = await future
        del future
        return result  # type: ignore[no-any-return]


async def until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def test_start_runs_a_cell_scales_and_shuts_down(gateway_server, no_leaked_processes):
    settings = gateway_server.settings()
    backend = GatewayBackend(settings)
    spec = ClusterSpec.from_settings(settings, name="nb-lifecycle", backend="gateway")
    phases: list[tuple[str, str]] = []
    numbers: dict[str, float] = {}

    async def scenario() -> None:
        t0 = time.monotonic()
        handle = await backend.start(spec, lambda phase, detail: phases.append((phase, detail)))
        numbers["start"] = time.monotonic() - t0
        try:
            assert handle.scheduler_address.startswith("gateway://127.0.0.1:")
            assert handle.scheduler_address.endswith("/" + handle.extra["gateway_name"])
            assert handle.dashboard_link and handle.extra["gateway_name"] in handle.dashboard_link
            assert handle.has_gpu is False and handle.extra["resource"] == "CELL"
            assert set(handle.extra["client"]) == {"kind", "tls_cert", "tls_key"}
            assert handle.extra["client"]["kind"] == "gateway"

            result = await run_cell(handle.scheduler_address, handle.extra["client"],
                                    "import os\nanswer = 6 * 7\nanswer", outputs=["answer"])
            assert result["status"] == "ok", result
            assert result["value"] == 42 and result["outputs"] == {"answer": 42}

            t1 = time.monotonic()
            await backend.scale(handle, 2)
            workers = await until(lambda: _count(backend, handle, 2), what="two gateway workers")
            numbers["scale 1->2"] = time.monotonic() - t1
            assert all(w.gpus == 0.0 and w.memory == 2**30 for w in workers)
            await backend.scale(handle, 0)
            await until(lambda: _count(backend, handle, 0), what="the workers to go")
            assert gateway_server.clusters() == [handle.extra["gateway_name"]]
        finally:
            await backend.close(handle)
        assert gateway_server.clusters() == []
        await backend.close(handle)  # a second close of a gone cluster does not raise

    run(scenario())
    assert [p for p, _ in phases] == ["scheduler", "scheduler", "workers"]
    created = phases[1][1]
    # cores and memory are clamped to what the gateway allows; it offers no GPU option
    assert "worker_cores=2 (the gateway's maximum; asked for 4)" in created
    assert "worker_memory=1.0 GiB (the gateway's maximum; asked for 2)" in created
    assert "this gateway offers no option for gpus" in created
    print(f"\ngateway numbers: {', '.join(f'{k} {v:.2f}s' for k, v in numbers.items())}")


async def _count(backend: GatewayBackend, handle: Any, n: int) -> Any:
    workers = await backend.workers(handle)
    return (workers or True) if len(workers) == n else None


def test_manager_lease_adaptive_from_zero_and_reconnect_after_restart(gateway_server, no_leaked_processes):
    settings = gateway_server.settings()
    phases: list[tuple[str, str]] = []

    async def scenario() -> None:
        first = ElasticClusterManager(settings, owner="alice", tick=0.2)
        lease = await first.acquire("kernel-1", name="nb-restart", progress=lambda p, d: phases.append((p, d)))
        assert lease["backend"] == "gateway" and lease["has_gpu"] is False
        assert set(lease["client"]) == {"kind", "tls_cert", "tls_key"}
        record = first.find("nb-restart")
        impl = first.backend("gateway")
        # the first worker stays for idle-timeout (1 s), then the gateway's adaptive
        # scaling (every 0.5 s here) takes the idle worker away
        await until(lambda: _count(impl, record.handle, 0), what="adaptive scale-down to zero")
        # a cell on the empty cluster: the gateway's adaptive loop starts a worker for it
        result = await run_cell(lease["scheduler_address"], lease["client"], "print('cold')\n1 + 1")
        assert result["status"] == "ok" and result["value"] == 2

        # the control plane restarts (kernel restart): a new manager finds the cluster by name
        second = ElasticClusterManager(settings, owner="alice", tick=0.2)
        again: list[tuple[str, str]] = []
        lease2 = await second.acquire("kernel-2", name="nb-restart", progress=lambda p, d: again.append((p, d)))
        assert lease2["scheduler_address"] == lease["scheduler_address"]
        assert any("reconnecting to gateway cluster" in d for _, d in again)
        result = await run_cell(lease2["scheduler_address"], lease2["client"], "'again'")
        assert result["value"] == "again"
        assert len(gateway_server.clusters()) == 1

        found = await GatewayBackend(settings).connect("nb-restart")
        assert found is not None and found.scheduler_address == lease["scheduler_address"]
        await found.cluster.close(shutdown=False)  # forget the object, keep the cluster
        assert await GatewayBackend(settings).connect("nb-nothing-here") is None

        await second.close_all("test over")
        assert gateway_server.clusters() == []
        await first.close_all("test over")  # its cluster is already gone: no error

    run(scenario())
    assert [p for p, _ in phases] == ["queued", "scheduler", "scheduler", "workers", "ready"]


def test_no_address_configured_says_which_key_to_set(no_gateway_env):
    from jupyter_elastic.config import load_settings

    settings = load_settings({"backend": "gateway", "gateway": {"address": None, "auth": "simple"}})
    spec = ClusterSpec.from_settings(settings, name="nb-noaddr", backend="gateway")
    with pytest.raises(ConfigError) as err:
        run(GatewayBackend(settings).start(spec, lambda p, d: None))
    message = err.value.message
    assert "no Dask Gateway address is configured" in message
    assert "jupyter-elastic.gateway.address" in message
    assert "DASK_JUPYTER_ELASTIC__GATEWAY__ADDRESS" in message and "DASK_GATEWAY__ADDRESS" in message


def test_unreachable_gateway_is_one_clear_error(gateway_server):
    address = f"http://127.0.0.1:{free_port()}"
    settings = gateway_server.settings(address=address)
    spec = ClusterSpec.from_settings(settings, name="nb-unreachable", backend="gateway")
    with pytest.raises(BackendUnavailable) as err:
        run(GatewayBackend(settings).start(spec, lambda p, d: None))
    assert f"the Dask Gateway at {address} is unreachable" in err.value.message
    assert "jupyter-elastic.gateway.address" in err.value.message


def test_wrong_password_is_an_auth_error_and_creates_nothing(gateway_server, no_leaked_processes):
    settings = gateway_server.settings(password="not-the-password")
    spec = ClusterSpec.from_settings(settings, name="nb-badauth", backend="gateway")
    with pytest.raises(BackendUnavailable) as err:
        run(GatewayBackend(settings).start(spec, lambda p, d: None))
    message = err.value.message
    assert f"the Dask Gateway at {gateway_server.address} rejected our credentials" in message
    assert "401" in message and "auth: simple" in message
    assert "jupyter-elastic.gateway.password" in message
    assert gateway_server.clusters() == []


def test_jupyterhub_auth_without_a_token_names_the_variable(gateway_server, no_gateway_env):
    settings = gateway_server.settings(auth="jupyterhub")
    spec = ClusterSpec.from_settings(settings, name="nb-hub", backend="gateway")
    with pytest.raises(ConfigError) as err:
        run(GatewayBackend(settings).start(spec, lambda p, d: None))
    assert "JUPYTERHUB_API_TOKEN is not set" in err.value.message


def test_unknown_auth_type_is_rejected_with_the_choices():
    from jupyter_elastic.config import load_settings

    with pytest.raises(ConfigError) as err:
        GatewayBackend(load_settings({"gateway": {"address": "http://gw", "auth": "ldap"}}))
    assert "jupyterhub, simple, basic, kerberos or null" in err.value.message


def test_scheduler_that_fails_to_start_leaves_nothing_behind(gateway_server, no_leaked_processes):
    settings = gateway_server.settings(**{"cluster-options": {"scheduler": "broken"}})
    spec = ClusterSpec.from_settings(settings, name="nb-broken", backend="gateway")
    with pytest.raises(ClusterStartError) as err:
        run(GatewayBackend(settings).start(spec, lambda p, d: None))
    assert "failed to start" in err.value.message and "gateway's logs" in err.value.message
    wait_for(lambda: gateway_server.clusters() == [], timeout=20, what="no cluster left on the gateway")


def test_workers_without_a_cell_or_gpu_resource_are_refused(gateway_server, no_leaked_processes):
    settings = gateway_server.settings(**{"cluster-options": {"resources": "none"}})
    spec = ClusterSpec.from_settings(settings, name="nb-nores", backend="gateway")
    with pytest.raises(ClusterStartError) as err:
        run(GatewayBackend(settings).start(spec, lambda p, d: None))
    assert "offer neither a GPU nor a CELL resource" in err.value.message
    assert "--resources GPU=1" in err.value.message
    wait_for(lambda: gateway_server.clusters() == [], timeout=20, what="no cluster left on the gateway")


def test_gpu_workers_make_a_gpu_cluster_and_unknown_options_are_config_errors(gateway_server, no_leaked_processes):
    settings = gateway_server.settings(**{"cluster-options": {"resources": "gpu"}})
    backend = GatewayBackend(settings)
    spec = ClusterSpec.from_settings(settings, name="nb-gpu", backend="gateway")

    async def scenario() -> None:
        handle = await backend.start(spec, lambda p, d: None)
        try:
            assert handle.has_gpu is True and handle.extra["slots"] == 1.0
            workers = await backend.workers(handle)
            assert [w.gpus for w in workers] == [1.0]
        finally:
            await backend.close(handle)

    run(scenario())
    assert gateway_server.clusters() == []
    bad = gateway_server.settings(**{"cluster-options": {"resources": "tpu"}})
    with pytest.raises(ConfigError) as err:
        run(GatewayBackend(bad).start(ClusterSpec.from_settings(bad, name="nb-tpu", backend="gateway"),
                                      lambda p, d: None))
    assert "jupyter-elastic.gateway.cluster-options" in err.value.message and "'tpu'" in err.value.message
    assert gateway_server.clusters() == []


def test_gateway_scheduler_refuses_clients_without_the_clusters_credentials(
        gateway_server, tmp_path, no_leaked_processes):
    from dask_gateway.client import GatewaySecurity
    from distributed.security import Security

    settings = gateway_server.settings()
    backend = GatewayBackend(settings)
    spec = ClusterSpec.from_settings(settings, name="nb-refuse", backend="gateway")
    marker = tmp_path / "marker"
    stranger = Security.temporary()  # a certificate of the intruder's own making

    def _write_marker(path: str) -> str:  # defined here: sent by value, not by module name
        with open(path, "w") as f:
            f.write("ran")
        return "ran"

    async def attempt(**kwargs: Any) -> None:
        try:
            async with Client(address, asynchronous=True, timeout="3s", **kwargs) as client:
                await client.run_on_scheduler(_write_marker, str(marker))
        except Exception:
            return
        pytest.fail(f"a client without the cluster's credentials ran code ({kwargs})")

    async def scenario() -> None:
        nonlocal address
        handle = await backend.start(spec, lambda phase, detail: None)
        address = handle.scheduler_address
        try:
            await attempt()
            await attempt(security=GatewaySecurity(tls_key=stranger.tls_client_key,
                                                   tls_cert=stranger.tls_client_cert))
            assert not marker.exists()
            async with Client(address, asynchronous=True, timeout="20s",
                              security=client_security(handle.extra["client"])) as client:
                assert await client.run_on_scheduler(_write_marker, str(marker)) == "ran"
        finally:
            await backend.close(handle)

    address = ""
    run(scenario())
    assert marker.read_text() == "ran"  # the owner could: the refusals were about credentials


def test_doctor_against_a_gateway_without_quotas_says_so(gateway_server, capsys):
    import dask.config

    from jupyter_elastic import cli

    from .conftest import PASSWORD, USER

    with dask.config.set({"jupyter-elastic.backend": "gateway",
                          "jupyter-elastic.gateway": {"address": gateway_server.address,
                                                      "auth": "simple", "username": USER,
                                                      "password": PASSWORD}}):
        code = cli.main(["doctor", "--backend", "gateway"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Dask Gateway at {gateway_server.address} answers; user {USER}; 0 cluster(s)" in out
    assert "this gateway reports no quota" in out
    with dask.config.set({"jupyter-elastic.gateway": {"address": gateway_server.address,
                                                      "auth": "simple", "username": USER,
                                                      "password": "wrong"}}):
        assert cli.main(["doctor", "--backend", "gateway"]) == 1
    assert "rejected our credentials" in capsys.readouterr().out
