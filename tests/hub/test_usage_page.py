"""The admins' GPU usage page: ``jupyter-elastic-hub`` runs as a managed service of the real
hub, reads the quota module's per-user metering from the gateway (``USAGE_ROUTE``, the
service's own token) and the groups from the hub. carol (a hub admin) sees alice's and bob's
usage per user and per group, and as CSV; bob, and anyone on the gateway route without the
service's token or the admin flag, is refused."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from elastic_testing import wait_for

pytest.importorskip("dask_gateway", reason="the tests talk to the gateway with dask-gateway")

from dask_gateway import Gateway, JupyterHubAuth  # noqa: E402

from jupyter_elastic.protocol import USAGE_ROUTE  # noqa: E402

pytestmark = pytest.mark.hub

PAGE = "services/jupyter-elastic-hub/"


def fetch(url: str, authorization: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def page(hub: Any, user: str, path: str = "") -> tuple[int, str]:
    """The service's page through the hub's proxy, as ``user`` (their hub token)."""
    return fetch(hub.url + PAGE + path, f"token {hub.token(user)}")


def usage(hub: Any) -> dict[str, Any]:
    status, body = fetch(hub.gateway.address + USAGE_ROUTE, f"token {hub.usage_token}")
    assert status == 200, body
    return {u["user"]: u for u in json.loads(body)["users"]}


@pytest.fixture(scope="module")
def busy_users(hub: Any):
    """alice and bob each hold one GPU worker on the gateway while the tests look."""

    async def start() -> list[tuple[Gateway, Any]]:
        held = []
        for user in ("alice", "bob"):
            gateway = Gateway(hub.gateway.address, asynchronous=True,
                              auth=JupyterHubAuth(api_token=hub.token(user)))
            options = await gateway.cluster_options()
            options["worker_gpus"] = 1
            cluster = await gateway.new_cluster(options, shutdown_on_close=True)
            await cluster.scale(1)
            held.append((gateway, cluster))
        return held

    async def stop(held: list[tuple[Gateway, Any]]) -> None:
        for gateway, cluster in held:
            await cluster.shutdown()
            await gateway.close()

    loop = asyncio.new_event_loop()
    held = loop.run_until_complete(start())
    try:
        wait_for(lambda: all(u in usage(hub) and usage(hub)[u]["gpu_seconds_today"] > 0
                             for u in ("alice", "bob")), timeout=60,
                 what="the gateway to meter alice's and bob's GPU-seconds")
        yield
    finally:
        loop.run_until_complete(stop(held))
        loop.close()


def test_usage_rolls_over_by_utc_day_and_month():
    from jupyter_elastic.hub.gateway import UserUsage

    record = UserUsage()
    jan31 = 1769817600.0 + 3600  # 2026-01-31 01:00 UTC
    record.add(jan31, 100.0, 40.0)
    record.add(jan31 + 60, 50.0, 0.0)
    assert (record.day, record.gpu_seconds_day, record.idle_gpu_seconds_day) == \
        ("2026-01-31", 150.0, 40.0)
    record.add(jan31 + 86400, 10.0, 10.0)  # February: a new day and a new month
    assert (record.day, record.month) == ("2026-02-01", "2026-02")
    assert (record.gpu_seconds_day, record.gpu_seconds_month) == (10.0, 10.0)
    record.add(jan31 + 2 * 86400, 5.0, 0.0)  # a new day, the same month
    assert (record.gpu_seconds_day, record.gpu_seconds_month) == (5.0, 15.0)
    assert record.idle_gpu_seconds_month == 10.0


def test_idle_is_read_from_the_schedulers_processing_tasks():
    from jupyter_elastic.hub.gateway import _processing

    body = (b'# HELP dask_scheduler_tasks Number of tasks known by scheduler\n'
            b'dask_scheduler_tasks{state="memory"} 4.0\n'
            b'dask_scheduler_tasks{state="processing"} %s\n')
    assert _processing(body % b"0.0") == 0
    assert _processing(body % b"3.0") == 3
    assert _processing(b"dask_scheduler_clients 1.0\n") is None  # unknown: not counted idle
    assert _processing(None) is None


def test_an_admin_sees_every_users_usage(hub, busy_users):
    # alice's and bob's clusters run no task: their GPUs are idle, as the page says
    wait_for(lambda: usage(hub)["alice"]["idle_gpu_seconds_today"] > 0, timeout=60,
             what="the gateway to meter alice's idle GPU-seconds")
    status, html = page(hub, "carol")
    assert status == 200, html
    assert "<h1>GPU usage by user</h1>" in html and "3.60 USD per GPU-hour" in html
    report = usage(hub)
    for user, group, limit in (("alice", "students", "2.00"), ("bob", "staff", "4.00")):
        row = report[user]
        assert row["groups"] == [group] and row["gpus_now"] == 1.0
        assert row["gpu_headroom"] == float(limit) - 1
        assert row["cost_today"] == pytest.approx(row["gpu_seconds_today"] / 3600 * 3.6)
        assert row["queued"] == 0
        assert 0 <= row["idle_gpu_seconds_today"] <= row["gpu_seconds_today"]
        assert f"<td>{user}</td><td>{group}</td><td>1.00</td>" in html

    status, text = page(hub, "carol", "usage.csv?view=user")
    assert status == 200, text
    rows = list(csv.DictReader(io.StringIO(text)))
    by_user = {r["user"]: r for r in rows}
    assert {"alice", "bob"} <= set(by_user)
    assert float(by_user["bob"]["gpus_now"]) == 1.0 and by_user["bob"]["gpu_limit"] == "4.0"
    assert float(by_user["alice"]["gpu_seconds_month"]) >= float(
        by_user["alice"]["gpu_seconds_today"]) > 0

    status, text = page(hub, "carol", "usage.csv?view=group")
    groups = {r["group"]: r for r in csv.DictReader(io.StringIO(text))}
    assert status == 200 and set(groups) == {"students", "staff"}
    assert float(groups["students"]["gpus_now"]) == 1.0
    assert float(groups["staff"]["gpu_headroom"]) == 3.0


def test_everyone_else_is_refused(hub, busy_users):
    status, body = page(hub, "bob")
    assert status == 403 and "for hub admins only" in body
    status, body = page(hub, "bob", "usage.csv")
    assert status == 403
    status, body = page(hub, "carol", "?view=" + "x" * 5000)
    assert status == 400 and "view must be one of user, group" in body
    # the gateway's route: alice's own hub token is not an admin's, a wrong token is nothing
    status, _ = fetch(hub.gateway.address + USAGE_ROUTE, f"jupyterhub {hub.token('alice')}")
    assert status == 403
    status, _ = fetch(hub.gateway.address + USAGE_ROUTE, "token not-the-usage-token")
    assert status in (401, 403, 500)  # the hub answers 403 for an unknown token
