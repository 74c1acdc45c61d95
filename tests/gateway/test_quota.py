"""Quotas enforced by the gateway itself (``jupyter_elastic.hub.gateway``).

The rules are tested alone first, then against a real dask-gateway-server on 127.0.0.1 with
``UnsafeLocalBackend`` wrapped by ``quota_backend``: alice is a student (2 GPUs, 3 workers,
T4 only), bob is staff (4 GPUs). Users talk to the gateway with dask-gateway's own client,
as a notebook cell could, bypassing any limit in their Jupyter server. GPUs are counted
without GPUs: workers advertise ``--resources GPU=<worker_gpus>``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from elastic_testing import async_wait_for

pytest.importorskip("dask_gateway_server", reason="the quota module runs in dask-gateway-server")
pytest.importorskip("dask_gateway", reason="the tests talk to the gateway with dask-gateway")

from dask_gateway import Gateway  # noqa: E402
from dask_gateway.client import GatewayClusterError  # noqa: E402
from traitlets.config import Config  # noqa: E402

from jupyter_elastic.backends.gateway import GatewayBackend  # noqa: E402
from jupyter_elastic.errors import ConfigError, QuotaExceeded  # noqa: E402
from jupyter_elastic.hub.gateway import ElasticQuota, Held, QuotaRefusal  # noqa: E402
from jupyter_elastic.models import ClusterSpec  # noqa: E402
from jupyter_elastic.protocol import QUOTA_MARK, QUOTA_ROUTE  # noqa: E402

from .conftest import PASSWORD, quota_config, run, start_gateway, stop_gateway, user_gateway  # noqa: E402

pytestmark = pytest.mark.gateway


def _quota(**settings: Any) -> ElasticQuota:
    config = Config()
    for key, value in settings.items():
        setattr(config.ElasticQuota, key, value)
    return ElasticQuota(config=config)


# --------------------------------------------------------------------------- the rules alone
def test_limits_are_the_most_generous_group_else_the_default():
    quota = _quota(user_gpus=1, user_workers=4, groups={
        "students": {"gpus": 2, "gpu_types": ["t4"]}, "lab": {"gpus": 3, "workers": 1,
                                                           "gpu_types": ["a100"]}})
    default = quota.limits_for(["nobody-has-this"])
    assert (default.gpus, default.workers, default.gpu_types) == (1, 4, None)
    student = quota.limits_for({"students"})
    assert (student.gpus, student.workers, student.gpu_types, student.source) == \
        (2, 4, ("t4",), "group students")  # workers: the default fills what a group omits
    both = quota.limits_for({"students", "lab"})
    assert (both.gpus, both.workers, both.gpu_types) == (3, 4, ("a100", "t4"))
    assert both.source == "groups lab, students"


def test_bad_tables_and_files_fail_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"groups\['x'\] has unknown key\(s\) 'gpu'"):
        _quota(groups={"x": {"gpu": 1}})
    with pytest.raises(ConfigError, match=r"groups\['x'\].gpus must be a non-negative number"):
        _quota(groups={"x": {"gpus": -1}})
    path = tmp_path / "quota.yaml"
    path.write_text("user_gpus: 3\ngroups:\n  staff: {gpus: 8}\ncontact: ops@example.org\n")
    quota = _quota(quota_file=str(path), user_gpus=1)
    assert quota.limits_for([]).gpus == 3 and quota.limits_for(["staff"]).gpus == 8
    assert quota.who == "ops@example.org"
    path.write_text("user_gpus: [1\n")  # a broken edit keeps the limits read before
    assert quota.limits_for([]).gpus == 3
    path.write_text("user_gpus: 5\nfoo: 1\n")
    assert quota.limits_for([]).gpus == 3
    path.write_text("user_gpus: 5\n")  # a good edit is read without a restart
    assert quota.limits_for([]).gpus == 5
    with pytest.raises(ConfigError, match="cannot read ElasticQuota.quota_file"):
        _quota(quota_file=str(tmp_path / "missing.yaml"))


def test_refusals_name_the_limit_the_holders_and_who_to_ask():
    quota = _quota(user_gpus=2, user_workers=3, contact="hub-admins@example.org",
                   groups={"students": {"gpu_types": ["t4"]}})
    limits = quota.limits_for(["students"])
    held = [Held("c1", 1.0, 2)]
    with pytest.raises(QuotaRefusal) as info:
        quota.check_new("alice", limits, 1.0, "t4", held)
    line = str(info.value)
    assert line.startswith(QUOTA_MARK) and "\n" not in line
    assert "alice may hold 2 GPUs (group students) and holds 2: cluster c1 (2 worker(s) x 1 GPU)" \
        in line and "ask hub-admins@example.org" in line
    with pytest.raises(QuotaRefusal, match="GPU type 'a100' is not allowed for alice"):
        quota.check_new("alice", limits, 1.0, "a100", [])
    with pytest.raises(QuotaRefusal, match="one worker with 4 GPUs is over alice's limit of 2"):
        quota.check_new("alice", limits, 4.0, "t4", [])
    with pytest.raises(QuotaRefusal, match="may run 3 workers .* and runs 3"):
        quota.check_new("alice", limits, 0.0, None, [Held("c1", 0.0, 3)])
    quota.check_new("alice", limits, 1.0, "t4", [Held("c1", 1.0, 1)])  # fits: no error
    assert quota.allowed_workers(limits, 1.0, [Held("c1", 1.0, 1)]) == 1
    assert quota.allowed_workers(limits, 0.5, []) == 3  # 4 by GPUs, 3 by workers
    assert quota.allowed_workers(quota.limits_for([]).__class__(None, None, None, ""), 1.0, []) is None
    refusal = quota.scale_refusal("alice", "c2", 3, 1, limits, 1.0, [Held("c1", 1.0, 1)])
    assert "cannot scale cluster c2 to 3: 3 workers x 1 GPU need 3 GPUs; alice may hold 2" \
        in str(refusal) and "At most 1 worker(s) fit here" in str(refusal)


def test_idle_timeout_defaults_on_and_is_capped():
    quota = _quota(idle_timeout=600, max_idle_timeout=3600)
    assert quota.idle_for(0) == 600
    assert quota.idle_for(100) == 100
    assert quota.idle_for(10**6) == 3600


# --------------------------------------------------------------------------- a real gateway
@pytest.fixture(scope="module")
def quota_gateway(tmp_path_factory: pytest.TempPathFactory):
    server = start_gateway(tmp_path_factory.mktemp("quota-gateway"),
                           quota_config(idle=60, lease=0))
    try:
        yield server
    finally:
        stop_gateway(server)


async def _options(gateway: Gateway, **values: Any) -> Any:
    options = await gateway.cluster_options()
    for key, value in values.items():
        options[key] = value
    return options


def _gpu_workers(cluster: Any) -> int:
    workers = (cluster.scheduler_info or {}).get("workers") or {}
    return sum(1 for w in workers.values() if (w.get("resources") or {}).get("GPU") == 1)


def test_gpu_quota_counts_across_clusters_refuses_with_one_line_and_spares_bob(
        quota_gateway, no_leaked_processes):
    server = quota_gateway

    async def scenario() -> None:
        alice, bob = user_gateway(server, "alice"), user_gateway(server, "bob")
        clusters: list[Any] = []
        try:
            one_gpu = await _options(alice, worker_gpus=1)
            first = await alice.new_cluster(one_gpu, shutdown_on_close=True)
            clusters.append(first)
            await first.scale(2)
            # the two workers advertise GPU=1 each: alice now holds her 2 GPUs
            await async_wait_for(lambda: _gpu_workers(first) == 2, "two GPU=1 workers")
            quota = server.clusters("alice", QUOTA_ROUTE)
            assert quota["limits"]["gpus"] == 2 and quota["limits"]["source"] == "group students"
            assert quota["holding"] == {"gpus": 2.0, "workers": 2}

            # a second cluster does not fit: refused at creation, one line naming the holder
            with pytest.raises(ValueError) as refused:
                await alice.submit(one_gpu)
            line = str(refused.value)
            assert "\n" not in line and line.startswith(QUOTA_MARK)
            assert (f"alice may hold 2 GPUs (group students) and holds 2: cluster {first.name} "
                    "(2 worker(s) x 1 GPU)") in line
            assert "ask hub-admins@example.org for more" in line
            assert [c.name for c in await alice.list_clusters()] == [first.name]

            # a GPU type her group does not allow is refused whatever her usage
            with pytest.raises(ValueError, match="GPU type 'a100' is not allowed for alice "
                                                 r"\(group students allows: t4\)"):
                await alice.submit(await _options(alice, worker_gpus=1, gpu_type="a100"))

            # bob (staff, 4 GPUs) is not affected by alice's usage
            bobs = await bob.new_cluster(await _options(bob, worker_gpus=2),
                                         shutdown_on_close=True)
            clusters.append(bobs)
            await bobs.scale(2)
            assert server.clusters("bob", QUOTA_ROUTE)["holding"] == {"gpus": 4.0, "workers": 2}

            # scale-ups past the quota are refused (not clamped) and change nothing
            await first.scale(1)
            # a worker being retired still holds its GPU until it has stopped: wait for that
            await async_wait_for(lambda: server.clusters("alice", QUOTA_ROUTE)["holding"]
                         == {"gpus": 1.0, "workers": 1}, "the retired worker to free its GPU")
            second = await alice.new_cluster(one_gpu, shutdown_on_close=True)
            clusters.append(second)
            with pytest.raises(GatewayClusterError) as over:
                await second.scale(2)
            line = str(over.value)
            assert f"cannot scale cluster {second.name} to 2: 2 workers x 1 GPU need 2 GPUs; " \
                   "alice may hold 2 (group students) and the other clusters hold 1" in line
            assert f"cluster {first.name} (1 worker(s) x 1 GPU)" in line
            assert "At most 1 worker(s) fit here" in line
            await second.scale(1)
            assert server.clusters("alice", QUOTA_ROUTE)["holding"] == {"gpus": 2.0, "workers": 2}
        finally:
            for cluster in clusters:
                await cluster.shutdown()
            await alice.close()
            await bob.close()

    run(scenario())
    assert server.clusters("alice") == [] and server.clusters("bob") == []


def test_a_count_set_on_the_scheduler_itself_is_clamped_by_the_gateway(
        quota_gateway, no_leaked_processes):
    """A user can reach their own scheduler and ask it for more workers; the gateway's
    heartbeat handler clamps the count to the quota before it starts any worker."""
    server = quota_gateway

    async def bypass(dask_scheduler: Any) -> None:
        await dask_scheduler.services["gateway"]._scale(5)

    async def scenario() -> None:
        alice = user_gateway(server, "alice")
        cluster = await alice.new_cluster(await _options(alice, worker_gpus=1),
                                          shutdown_on_close=True)
        try:
            client = await cluster.get_client(set_as_default=False)
            try:
                await client.run_on_scheduler(bypass)
            finally:
                await client.close()
            await async_wait_for(lambda: "asked for 5 workers; its quota leaves 2" in server.log.read_text(),
                         "the gateway to clamp the heartbeat")
            await async_wait_for(lambda: _gpu_workers(cluster) == 2, "the two workers the quota allows")
            assert server.clusters("alice", QUOTA_ROUTE)["holding"] == {"gpus": 2.0, "workers": 2}
        finally:
            await cluster.shutdown()
            await alice.close()

    run(scenario())


def test_the_gateway_backend_shows_the_refusal_as_one_line(quota_gateway, no_leaked_processes):
    """The project's backend (what a %%gpu cell uses) turns the refusal into QuotaExceeded."""
    server = quota_gateway
    settings = server.settings(user="alice")
    backend = GatewayBackend(settings)
    spec = replace(ClusterSpec.from_settings(settings, name="nb-quota", backend="gateway"),
                   gpus_per_worker=4.0)
    phases: list[str] = []

    async def start() -> None:
        handle = await backend.start(spec, lambda phase, detail: phases.append(detail))
        await backend.close(handle)  # not reached when the quota works

    with pytest.raises(QuotaExceeded) as info:
        run(start())
    assert "worker_gpus=4" in phases[-1]
    rendered = info.value._render_traceback_()
    assert len(rendered) == 1 and "\n" not in rendered[0]
    assert "QuotaExceeded" in rendered[0] and QUOTA_MARK not in rendered[0]
    assert "one worker with 4 GPUs is over alice's limit of 2 GPUs (group students)" in rendered[0]
    assert "ask hub-admins@example.org" in rendered[0]
    assert server.clusters("alice") == []


def _doctor(server: Any, user: str, capsys: Any) -> tuple[int, str]:
    import dask.config

    from jupyter_elastic import cli

    with dask.config.set({"jupyter-elastic.backend": "gateway",
                          "jupyter-elastic.gateway": {"address": server.address,
                                                      "auth": "simple", "username": user,
                                                      "password": PASSWORD}}):
        code = cli.main(["doctor", "--backend", "gateway"])
    return code, capsys.readouterr().out


def test_doctor_reports_the_user_and_their_quota(quota_gateway, capsys):
    code, out = _doctor(quota_gateway, "alice", capsys)
    assert code == 0, out
    assert (f"Dask Gateway at {quota_gateway.address} answers as user alice (groups: students); "
            "0 cluster(s) of yours running or pending") in out
    assert ("quota (group students): 2 GPU, 3 worker, GPU types t4; holding 0 GPU(s) in 0 "
            "worker(s); idle timeout 60s (at most 120s), lease 0s; for more ask "
            "hub-admins@example.org") in out
    code, out = _doctor(quota_gateway, "bob", capsys)
    assert "quota (group staff): 4 GPU, no worker limit, GPU types any" in out
