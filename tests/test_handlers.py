"""The server extension's REST API through a real Jupyter server (``jp_fetch``, auth on).

Clusters here are real local-backend Dask clusters (CPU workers on this machine), with a
short idle timeout; every test that starts one stops it and checks nothing is left running.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_elastic.protocol import IN_PROCESS_ADDRESS, SERVER_TOKEN_ENV, SERVER_URL_ENV

pytest_plugins = ["pytest_jupyter.jupyter_server"]

SECRET = "X-Elastic-Lease-Secret"
API = ("jupyter-elastic", "api")








async def call(jp_fetch, *path, method="GET", body=None, **kwargs):
    """Fetch an API path; (status, decoded JSON body or None). Never raises on 4xx."""
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    try:
        response = await jp_fetch(*API, *path, method=method, body=body, **kwargs)
    except HTTPClientError as exc:
        response = exc.response
        assert response is not None, exc
    raw = response.body
    return response.code, (json.loads(raw) if raw else None)


async def wait_until(predicate, what, timeout=60.0):
    """Await ``predicate()`` (async) until truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------- empty server
async def test_empty_server_lists_nothing(jp_fetch):
    assert await call(jp_fetch, "clusters") == (200, {"clusters": []})
    assert await call(jp_fetch, "history") == (200, [])
    code, usage = await call(jp_fetch, "usage")
    assert code == 200
    assert usage["cells"]["count"] == 0
    assert usage["clusters"]["cost"] == 0
    assert set(usage) >= {"clusters", "cells", "currency", "pricing"}


async def test_timeline_serves_the_reapers_samples(jp_fetch):
    code, timeline = await call(jp_fetch, "timeline")
    assert code == 200
    assert (timeline["interval"], timeline["window"]) == (10.0, 3600.0)
    assert timeline["now"].endswith("+00:00")

    async def sampled():
        return (await call(jp_fetch, "timeline"))[1]["samples"]

    samples = await wait_until(sampled, "a timeline sample")
    assert samples[-1]["workers"] == 0 and samples[-1]["busy"] is False
    assert set(samples[-1]) == {"time", "workers", "gpus", "cost", "busy"}


async def test_kernels_are_told_where_the_control_plane_is(jp_serverapp, jp_fetch, jp_base_url):
    url = os.environ[SERVER_URL_ENV]
    assert url == f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}"
    token = os.environ[SERVER_TOKEN_ENV]
    assert len(token) >= 32 and token != jp_serverapp.identity_provider.token
    # The kernel token authenticates on its own (no Jupyter token, no XSRF cookie) ...
    code, body = await call(
        jp_fetch, "clusters", headers={"Authorization": f"token {token}"}
    )
    assert (code, body) == (200, {"clusters": []})
    code, _ = await call(
        jp_fetch, "cells", "start", method="POST", body={"lease_id": "x"},
        headers={"Authorization": f"token {token}"},
    )
    assert code == 404  # authenticated; but no lease "x" (and no secret for it)
    # ... and a wrong one is refused.
    code, body = await call(
        jp_fetch, "clusters", headers={"Authorization": f"token {token}x"}
    )
    assert code == 403


# ---------------------------------------------------------------------------- auth
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "clusters"),
        ("POST", "clusters"),
        ("GET", "history"),
        ("GET", "usage"),
        ("DELETE", "clusters/abc"),
        ("POST", "clusters/abc/scale"),
        ("POST", "leases"),
        ("POST", "cells/finish"),
    ],
)
async def test_requests_without_a_token_are_refused(
    http_server_client, jp_base_url, jp_serverapp, method, path
):
    url = f"{jp_base_url}jupyter-elastic/api/{path}"
    response = await http_server_client.fetch(
        url, method=method, body="{}" if method == "POST" else None, raise_error=False
    )
    assert response.code in (401, 403), response.code
    assert b"clusters" not in response.body


async def test_cookie_session_post_without_xsrf_is_refused(
    http_server_client, jp_base_url, jp_serverapp
):
    # A browser-style request (no token header) that only carries a stale _xsrf-less cookie.
    response = await http_server_client.fetch(
        f"{jp_base_url}jupyter-elastic/api/clusters",
        method="POST",
        body="{}",
        headers={"Cookie": "username-127-0-0-1=forged"},
        raise_error=False,
    )
    assert response.code == 403


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "method, path, body, word",
    [
        ("POST", ("clusters",), "{not json", "JSON"),
        ("POST", ("clusters",), "[1, 2]", "JSON object"),
        ("POST", ("clusters",), {"workers": -1}, "'workers'"),
        ("POST", ("clusters",), {"workers": "two"}, "'workers'"),
        ("POST", ("clusters",), {"workers": True}, "'workers'"),
        ("POST", ("clusters",), {"backend": "mainframe"}, "backend"),
        ("POST", ("clusters",), {"name": "Not A DNS Name"}, "name"),
        ("POST", ("clusters",), {"gpus": "lots"}, "gpus"),
        ("POST", ("clusters",), {"colour": "red"}, "'colour'"),
        ("POST", ("clusters", "abc", "scale"), {}, "'n'"),
        ("POST", ("clusters", "abc", "scale"), {"n": -2}, "'n'"),
        ("POST", ("clusters", "abc", "adapt"), {"minimum": 1}, "'maximum'"),
        ("POST", ("clusters", "abc", "adapt"), {"minimum": 3, "maximum": 1}, "'minimum'"),
        ("PUT", ("clusters", "abc", "idle-timeout"), {}, "'seconds'"),
        ("PUT", ("clusters", "abc", "idle-timeout"), {"seconds": "soon"}, "seconds"),
        ("POST", ("leases",), {}, "'session'"),
        ("POST", ("leases",), {"session": "k", "backend": "mainframe"}, "backend"),
        ("POST", ("cells", "start"), {}, "'lease_id'"),
        ("POST", ("cells", "start"), {"cluster_id": "c"}, "'cluster_id'"),
        ("POST", ("cells", "start"), {"lease_id": "l", "timeout": "soon"}, "'timeout'"),
        ("POST", ("cells", "finish"), {"lease_id": "c"}, "'row'"),
        ("POST", ("cells", "finish"), {"row": {"id": "r"}}, "'row' lacks"),
    ],
)
async def test_bad_requests_get_400_naming_the_field(jp_fetch, method, path, body, word):
    code, reply = await call(jp_fetch, *path, method=method, body=body)
    assert code == 400, reply
    assert word in reply["message"], reply


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", ("clusters", "nope"), None),
        ("DELETE", ("clusters", "nope"), None),
        ("POST", ("clusters", "nope", "scale"), {"n": 1}),
        ("POST", ("clusters", "nope", "adapt"), {"minimum": 0, "maximum": 1}),
        ("PUT", ("clusters", "nope", "idle-timeout"), {"seconds": 30}),
        ("POST", ("leases", "nope", "heartbeat"), {}),
    ],
)
async def test_unknown_ids_get_404(jp_fetch, method, path, body):
    code, reply = await call(jp_fetch, *path, method=method, body=body)
    assert code == 404, reply
    assert "'nope'" in reply["message"]


# ---------------------------------------------------------------------------- happy paths
async def test_cluster_lifecycle(jp_fetch, jp_base_url, no_leaked_processes):
    code, cluster = await call(
        jp_fetch, "clusters", method="POST", body={"name": "api-test", "workers": 1}
    )
    assert code == 201, cluster
    cid = cluster["id"]
    try:
        assert cluster["name"] == "api-test"
        assert cluster["backend"] == "local"
        assert cluster["status"] == "running"
        assert cluster["idle_timeout"] == 5.0
        assert set(cluster["usage"]) >= {"gpu_seconds", "cpu_seconds", "idle_seconds", "cost"}
        # The dashboard is reached through this server (jupyter-server-proxy).
        port = cluster["dashboard_link"].split("/proxy/")[1].split("/")[0]
        assert cluster["dashboard_link"] == f"{jp_base_url}proxy/{port}/status"

        code, listing = await call(jp_fetch, "clusters")
        assert code == 200 and [c["id"] for c in listing["clusters"]] == [cid]

        async def workers(n):
            code, detail = await call(jp_fetch, "clusters", cid)
            assert code == 200
            return detail if len(detail["worker_details"]) == n else None

        detail = await wait_until(lambda: workers(1), "one worker")
        assert detail["workers"] == 1
        worker = detail["worker_details"][0]
        assert set(worker) >= {"name", "gpus", "memory", "gpu_utilization", "gpu_memory"}
        assert worker["memory"] > 0

        code, scaled = await call(jp_fetch, "clusters", cid, "scale", method="POST", body={"n": 2})
        assert code == 200 and scaled["requested_workers"] == 2
        await wait_until(lambda: workers(2), "two workers")

        code, adapted = await call(
            jp_fetch, "clusters", cid, "adapt", method="POST", body={"minimum": 0, "maximum": 2}
        )
        assert code == 200 and adapted["adapt"] == {"minimum": 0, "maximum": 2}

        code, timed = await call(
            jp_fetch, "clusters", cid, "idle-timeout", method="PUT", body={"seconds": "30s"}
        )
        assert code == 200 and timed["idle_timeout"] == 30.0

        # More workers than max-workers is a user mistake, not a server error.
        code, reply = await call(jp_fetch, "clusters", cid, "scale", method="POST", body={"n": 9})
        assert code == 400 and "max-workers" in reply["message"]
        # A second cluster with the same name is refused.
        code, reply = await call(jp_fetch, "clusters", method="POST", body={"name": "api-test"})
        assert code == 400 and "api-test" in reply["message"]
    finally:
        code, body = await call(jp_fetch, "clusters", cid, method="DELETE")
    assert (code, body) == (204, None)
    code, reply = await call(jp_fetch, "clusters", cid)
    assert code == 404 and cid in reply["message"]
    assert await call(jp_fetch, "clusters") == (200, {"clusters": []})


async def test_dashboard_link_resolves_through_the_server(
    jp_fetch, http_server_client, jp_auth_header, no_leaked_processes
):
    code, cluster = await call(jp_fetch, "clusters", method="POST", body={"workers": 0})
    assert code == 201, cluster
    try:
        link = cluster["dashboard_link"]
        assert "/proxy/" in link
        response = await http_server_client.fetch(link, headers=jp_auth_header)
        assert response.code == 200
        assert b"Dask" in response.body
    finally:
        await call(jp_fetch, "clusters", cluster["id"], method="DELETE")


async def test_lease_stream_heartbeat_cells_and_history(jp_fetch, no_leaked_processes):
    response = await jp_fetch(*API, "leases", method="POST", body=json.dumps({"session": "k1"}))
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in response.body.decode().splitlines() if line]
    phases = [e["phase"] for e in events if e["event"] == "progress"]
    assert phases[0] == "queued" and phases[-1] == "ready" and "scheduler" in phases
    assert events[-1]["event"] == "lease"
    lease = events[-1]["lease"]
    assert lease["session"] == "k1" and lease["backend"] == "local"
    assert lease["scheduler_address"].startswith("tls://127.0.0.1:")
    # the server's scheduler takes no in-process clients: kernels are other processes
    assert IN_PROCESS_ADDRESS not in (lease["client"] or {}), lease["client"].keys()
    cid, lid = lease["cluster_id"], lease["lease_id"]
    try:
        # Acquiring again from the same session reuses the cluster, with no start-up.
        again = await jp_fetch(*API, "leases", method="POST", body=json.dumps({"session": "k1"}))
        lines = [json.loads(line) for line in again.body.decode().splitlines() if line]
        assert [e["event"] for e in lines] == ["lease"]
        assert lines[0]["lease"]["cluster_id"] == cid
        # ... on a new lease: the session's previous one is revoked
        code, _ = await call(jp_fetch, "leases", lid, "heartbeat", method="POST", body={},
                             headers={SECRET: lease["lease_secret"]})
        assert code == 404
        lease = lines[0]["lease"]
        lid, mine = lease["lease_id"], {SECRET: lease["lease_secret"]}

        code, body = await call(jp_fetch, "leases", lid, "heartbeat", method="POST", body={},
                                headers=mine)
        assert (code, body) == (200, {"lease_id": lid, "alive": True})

        assert (await call(jp_fetch, "cells", "start", method="POST",
                           body={"lease_id": lid, "timeout": "10m"}, headers=mine))[0] == 204
        code, detail = await call(jp_fetch, "clusters", cid)
        assert detail["running_cells"] == 1
        row = {
            "id": "row-1", "cell": 3, "started": "2026-11-29T05:00:00+00:00",
            "backend": "local", "cluster_id": cid, "worker": "w0", "device": "cpu",
            "seconds": 1.5, "compute_seconds": 1.25, "gpus": 0.0, "cpus": 1.0, "gpu_seconds": 0.0,
            "cpu_seconds": 1.25, "cost": 0.0001, "status": "ok", "source": "x = 1",
        }
        assert (await call(jp_fetch, "cells", "finish", method="POST",
                           body={"lease_id": lid, "row": row}, headers=mine))[0] == 204
        code, history = await call(jp_fetch, "history")
        assert code == 200 and len(history) == 1
        assert history[0]["id"] == "row-1" and history[0]["cluster_id"] == cid
        assert history[0]["compute_seconds"] == 1.25
        code, detail = await call(jp_fetch, "clusters", cid)
        assert detail["running_cells"] == 0 and detail["cells"] == 1
        code, usage = await call(jp_fetch, "usage")
        assert usage["cells"]["count"] == 1 and usage["cells"]["cpu_seconds"] == 1.25

        assert (await call(jp_fetch, "leases", lid, method="DELETE", headers=mine))[0] == 204
        code, reply = await call(jp_fetch, "leases", lid, "heartbeat", method="POST", body={},
                                 headers=mine)
        assert code == 404 and lid in reply["message"]
        code, _ = await call(jp_fetch, "clusters", cid)
        assert code == 404, "the last lease given up: its cluster stopped at once"
    finally:
        await call(jp_fetch, "clusters", cid, method="DELETE")


async def test_lease_bad_name_is_refused_before_streaming(jp_fetch):
    body = json.dumps({"session": "k2", "name": "Bad_Name"})
    code, reply = await call(jp_fetch, "leases", method="POST", body=body)
    assert code == 400 and "Bad_Name" in reply["message"]


async def test_lease_start_failure_is_reported_in_the_stream(jp_serverapp, jp_fetch):
    # An admin bound the idle timeout to >= 10 s; the config asks for 5 s: refused in-band.
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_elastic"]
    app.manager.idle_timeout_bounds = (10.0, 100.0)
    response = await jp_fetch(*API, "leases", method="POST", body=json.dumps({"session": "k3"}))
    events = [json.loads(line) for line in response.body.decode().splitlines() if line]
    assert events[-1]["event"] == "error"
    assert events[-1]["status_code"] == 400
    assert "idle-timeout 5s" in events[-1]["message"]
    assert await call(jp_fetch, "clusters") == (200, {"clusters": []})


async def test_server_shutdown_closes_clusters(jp_serverapp, jp_fetch, no_leaked_processes):
    code, cluster = await call(jp_fetch, "clusters", method="POST", body={"workers": 1})
    assert code == 201
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_elastic"]
    await app.stop_extension()
    assert app.manager.list_clusters() == []
    assert SERVER_URL_ENV not in os.environ
    await app.stop_extension()  # twice is harmless


# ---------------------------------------------------------------------------- check_auth
def test_no_endpoint_without_auth(tmp_path):
    """A server with only this extension loaded raises no JupyterServerAuthWarning."""
    script = textwrap.dedent(
        """
        import warnings
        from jupyter_server.serverapp import ServerApp
        from jupyter_server.utils import JupyterServerAuthWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            app = ServerApp.instance(
                jpserver_extensions={"jupyter_elastic": True},
                open_browser=False, allow_root=True, ip="127.0.0.1", port=0,
            )
            app.initialize(argv=[], new_httpserver=False)
            loaded = sorted(app.extension_manager.extension_apps)
        bad = [str(w.message) for w in caught if issubclass(w.category, JupyterServerAuthWarning)]
        print("LOADED", loaded)
        print("AUTH-WARNINGS", len(bad))
        for message in bad:
            print(message)
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "JUPYTER_NO_CONFIG": "1", "JUPYTER_CONFIG_DIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    env.pop(SERVER_URL_ENV, None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED ['jupyter_elastic']" in result.stdout, result.stdout
    assert "AUTH-WARNINGS 0" in result.stdout, result.stdout


async def test_a_bad_history_row_is_refused_and_history_keeps_working(jp_fetch):
    row = {"id": "bad", "cell": 1, "started": "2026-12-03T10:00:00+00:00", "backend": "local", "cluster_id": None,
           "worker": None, "device": "cpu", "seconds": "fast", "compute_seconds": 1, "gpus": 0,
           "gpu_seconds": 0, "cpu_seconds": 1, "cost": 0, "status": "ok"}
    code, body = await call(jp_fetch, "cells", "finish", method="POST", body={"row": row})
    assert code == 400 and "seconds must be a finite number" in body["message"]
    for path in ("history", "usage"):
        code, _ = await call(jp_fetch, path)
        assert code == 200, f"GET /{path} still answers after a bad row was refused"
    code, body = await call(jp_fetch, "clusters", method="POST", body={"gpus": 10**400})
    assert code == 400 and "gpus" in body["message"]
    code, body = await call(jp_fetch, "clusters", method="POST", body={"gpus": True})
    assert code == 400 and "gpus" in body["message"]


# ---------------------------------------------------------------------------- shared machine
async def test_another_token_holder_cannot_touch_a_kernels_lease(jp_fetch, no_leaked_processes):
    token = {"Authorization": f"token {os.environ[SERVER_TOKEN_ENV]}"}  # every kernel has it
    response = await jp_fetch(*API, "leases", method="POST", body=json.dumps({"session": "k9"}),
                              headers=token)
    lease = [json.loads(line) for line in response.body.decode().splitlines() if line][-1]["lease"]
    lid, secret = lease["lease_id"], lease["lease_secret"]
    try:
        assert lease["client"]["kind"] == "tls"
        for wrong in ({}, {SECRET: "guess"}, {SECRET: secret[:-1]}):
            headers = {**token, **wrong}
            for method, path, body in (
                ("POST", ("leases", lid, "heartbeat"), {}),
                ("DELETE", ("leases", lid), None),
                ("POST", ("cells", "start"), {"lease_id": lid}),
                ("POST", ("cells", "finish"), {"lease_id": lid, "row": {
                    "id": "r", "cell": 1, "started": "2026-12-03T10:00:00+00:00", "backend": "local",
                    "cluster_id": None, "worker": None, "device": "cpu", "seconds": 1,
                    "compute_seconds": 1, "gpus": 0, "status": "ok"}}),
            ):
                code, reply = await call(jp_fetch, *path, method=method, body=body, headers=headers)
                assert code == 404, (path, reply)
                assert secret not in reply["message"] and SECRET in reply["message"]
        code, cluster = await call(jp_fetch, "clusters", lease["cluster_id"])
        assert cluster["running_cells"] == 0
        assert (await call(jp_fetch, "history"))[1] == []
        # the lease is intact: its own kernel still heartbeats it
        code, _ = await call(jp_fetch, "leases", lid, "heartbeat", method="POST", body={},
                             headers={**token, SECRET: secret})
        assert code == 200
        # neither the secret nor the TLS key is in any report
        code, listing = await call(jp_fetch, "clusters", params={"details": "1"})
        text = json.dumps(listing) + json.dumps((await call(jp_fetch, "usage"))[1])
        assert secret not in text and "PRIVATE KEY" not in text
    finally:
        await call(jp_fetch, "clusters", lease["cluster_id"], method="DELETE")


async def test_clusters_per_user_cap_is_one_clear_400(jp_serverapp, jp_fetch, no_leaked_processes):
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_elastic"]
    assert app.max_clusters_per_user == 8 and app.manager.max_clusters == 8
    app.manager.max_clusters = 1
    code, first = await call(jp_fetch, "clusters", method="POST", body={"name": "only-one"})
    assert code == 201, first
    try:
        code, reply = await call(jp_fetch, "clusters", method="POST", body={"name": "one-more"})
        assert code == 400
        assert "at most 1 clusters per user" in reply["message"]
        assert "only-one" in reply["message"] and "\n" not in reply["message"]
        response = await jp_fetch(*API, "leases", method="POST", body=json.dumps({"session": "k8"}))
        event = [json.loads(line) for line in response.body.decode().splitlines() if line][-1]
        assert event["event"] == "error" and event["status_code"] == 400
        assert "only-one" in event["message"]
    finally:
        await call(jp_fetch, "clusters", first["id"], method="DELETE")
