"""The REST API against its OpenAPI document: the document is valid, covers every route, is
served by the server, and a schemathesis run against a live server finds no 5xx, no reply
off the schema and no slow request.

The server is a real Jupyter server with the extension (pytest-jupyter's ``jp_serverapp``,
token auth on, 127.0.0.1) whose local backend is the in-memory one (``memory_backend``), so
starting a cluster costs nothing and thousands of generated requests take seconds.
Schemathesis runs in a worker thread (its HTTP client is blocking) while the server keeps
answering on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import jsonschema
import pytest
from elastic_testing import memory_backend  # noqa: F401 - a fixture
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate as validate_spec
from test_handlers import call

from jupyter_elastic.server import handlers
from jupyter_elastic.server.handlers import OPENAPI_PATH, default_handlers
from jupyter_elastic.server.jobs import job_handlers

pytest_plugins = ["pytest_jupyter.jupyter_server"]

DOCUMENT = json.loads(Path(OPENAPI_PATH).read_text())
REPO = Path(__file__).resolve().parent.parent
#: Requests that start a cluster may take longer than the others (the latency bound).
STARTS_A_CLUSTER = {"createCluster", "acquireLease"}
LATENCY = 1.0
EXAMPLES = 40


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_elastic": True},
            "allow_unauthenticated_access": False,
        },
        "ElasticExtension": {"max_gpus_per_user": 1000},
    }


# ---------------------------------------------------------------------------- the document
def test_the_document_is_valid_openapi():
    validate_spec(DOCUMENT)


def _route_paths():
    """Each route of ``default_handlers`` as an OpenAPI path with its methods."""
    for pattern, handler in default_handlers + job_handlers:
        path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern).removeprefix(handlers.API_PREFIX)
        methods = {m for m in ("get", "post", "put", "delete") if m in vars(handler)}
        yield path, methods


def test_the_document_lists_every_route_and_method():
    documented = {
        path: {m for m in item if m in ("get", "post", "put", "delete")}
        for path, item in DOCUMENT["paths"].items()
    }
    assert dict(_route_paths()) == documented


def test_the_docs_point_at_the_one_document():
    text = (REPO / "docs" / "rest-api.md").read_text()
    assert "../jupyter_elastic/server/openapi.json" in text
    assert not (REPO / "docs" / "openapi.json").exists()  # no second copy to drift


def _nullable_to_jsonschema(schema):
    """OpenAPI 3.0's ``nullable`` as JSON Schema (``type: [T, "null"]``)."""
    if isinstance(schema, dict):
        out = {k: _nullable_to_jsonschema(v) for k, v in schema.items() if k != "nullable"}
        if schema.get("nullable"):
            if "type" in out:
                out["type"] = [out["type"], "null"]
                if "enum" in out:
                    out["enum"] = [*out["enum"], None]
            else:
                out = {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(schema, list):
        return [_nullable_to_jsonschema(v) for v in schema]
    return schema


def schema_of(name):
    """A JSON Schema validator for ``components.schemas[name]`` (refs resolved in place)."""
    components = _nullable_to_jsonschema(DOCUMENT["components"])
    return jsonschema.Draft7Validator({**components["schemas"][name], "components": components})


async def test_the_server_serves_the_document(jp_fetch, jp_base_url):
    code, served = await call(jp_fetch, "openapi.json")
    assert code == 200
    assert served["servers"] == [{"url": f"{jp_base_url}jupyter-elastic/api"}]
    assert {**served, "servers": DOCUMENT["servers"]} == DOCUMENT


async def test_replies_match_the_schemas(jp_fetch, memory_backend):  # noqa: F811
    """The models' real JSON (not a hand-written sample) against the document."""
    code, cluster = await call(jp_fetch, "clusters", method="POST", body={"workers": 1})
    assert code == 201
    schema_of("Cluster").validate(cluster)
    code, detailed = await call(jp_fetch, "clusters", cluster["id"])
    assert code == 200 and detailed["worker_details"]
    schema_of("Cluster").validate(detailed)
    response = await jp_fetch(*handlers.API_PATH.split("/"), "leases", method="POST",
                              body=json.dumps({"session": "k1"}))
    events = [json.loads(line) for line in response.body.decode().splitlines()]
    for event in events:
        schema_of("LeaseEvent").validate(event)
    assert events[-1]["event"] == "lease"
    lease = events[-1]["lease"]
    secret = {"X-Elastic-Lease-Secret": lease["lease_secret"]}
    code, _ = await call(jp_fetch, "cells", "finish", method="POST", headers=secret, body={
        "lease_id": lease["lease_id"],
        "row": {"id": "c1", "cell": 1, "started": "2026-11-29T05:01:02+00:00", "backend": "local",
                "cluster_id": lease["cluster_id"], "worker": None, "device": "cpu", "seconds": 1.0,
                "compute_seconds": 1.0, "gpus": 0, "cpus": 2, "status": "ok"}})
    assert code == 204
    code, rows = await call(jp_fetch, "history")
    assert code == 200 and len(rows) == 1
    for row in rows:
        schema_of("HistoryRow").validate(row)
    code, usage = await call(jp_fetch, "usage")
    schema_of("UsageTotals").validate(usage)
    code, quota = await call(jp_fetch, "quota")
    assert code == 200 and quota["available"] is False and quota["quota"] is None
    schema_of("QuotaReport").validate(quota)
    code, heartbeat = await call(jp_fetch, "leases", lease["lease_id"], "heartbeat", method="POST",
                                 body="{}", headers=secret)
    assert code == 200
    schema_of("Heartbeat").validate(heartbeat)
    code, error = await call(jp_fetch, "clusters", "nope")
    assert code == 404
    schema_of("Error").validate(error)


async def test_job_replies_match_the_schemas(jp_fetch, tmp_path):
    """A job as the registry and the result store really hold it (the store's own writer)."""
    import time

    import numpy as np

    from jupyter_elastic.controlplane.jobs import JobRegistry
    from jupyter_elastic.execution.store import ResultStore

    store = ResultStore(str(tmp_path / "store"))
    row = {"id": "j1", "cell": 1, "status": "ok", "seconds": 1.0}
    store.write_results("j1", state="done", outputs={"x": np.arange(3.0), "note": {"a": 1}},
                        deleted=[], value=np.float64(2.0), events=[], row=row)
    now = time.time()
    JobRegistry().insert({"id": "j1", "name": "nightly", "notebook": "long.ipynb", "state": "done",
                          "created": now - 5, "started": now - 4, "ended": now, "store": store.url,
                          "ttl": 3600.0, "names": json.dumps(["note", "x"]), "source": "x = 1",
                          "attempts": json.dumps([{"attempt": 1, "state": "done"}])})
    code, jobs = await call(jp_fetch, "jobs")
    assert code == 200 and [j["id"] for j in jobs["jobs"]] == ["j1"]
    schema_of("JobList").validate(jobs)
    code, job = await call(jp_fetch, "jobs", "nightly")
    assert code == 200 and job["state"] == "done" and job["names"] == ["note", "x"]
    schema_of("Job").validate(job)
    code, results = await call(jp_fetch, "jobs", "j1", "results")
    assert code == 200 and results["names"]["x"]["format"] == "npy"
    assert results["names"]["note"]["format"] == "pickle"
    schema_of("JobResults").validate(results)
    code, cancelled = await call(jp_fetch, "jobs", "j1", method="DELETE")
    assert code == 200 and cancelled["state"] == "done"  # already ended: returned as it is
    schema_of("Job").validate(cancelled)
    code, error = await call(jp_fetch, "jobs", "nope")
    assert code == 404
    schema_of("Error").validate(error)


# ---------------------------------------------------------------------------- defects found
async def test_deeply_nested_bodies_are_a_400_not_a_500(jp_fetch):
    code, body = await call(jp_fetch, "clusters", method="POST", body="[" * 100_000 + "]" * 100_000)
    assert code == 400 and "nested too deeply" in body["message"]


async def test_huge_numbers_are_a_short_400(jp_fetch):
    code, body = await call(jp_fetch, "clusters", method="POST", body='{"workers": ' + "9" * 4000 + "}")
    assert code == 400 and len(body["message"]) < 300 and "at most 1000000" in body["message"]


async def test_long_ids_are_a_short_404(jp_fetch):
    code, body = await call(jp_fetch, "clusters", "a" * 5000, "scale", method="POST", body={"n": 1})
    assert code == 404 and len(body["message"]) < 300


async def test_usage_is_strict_json_even_if_a_total_is_not_finite(jp_fetch, jp_serverapp):
    """The guard behind the bounds: an infinite total is never written as ``Infinity``."""
    manager = jp_serverapp.web_app.settings["jupyter_elastic_manager"]
    manager._closed_usage.cost = math.inf
    code, body = await call(jp_fetch, "usage")
    assert code == 500 and "not finite" in body["message"]


# ---------------------------------------------------------------------------- schemathesis
def _fuzz(strategy, name: str, base_url: str, headers: dict, slowest: dict) -> None:
    """EXAMPLES requests of one operation: no 5xx, every schemathesis check, the latency."""
    from schemathesis.checks import positive_data_acceptance

    lease_event = schema_of("LeaseEvent")

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case):
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        assert response.status_code < 500, (response.status_code, response.text[:500])
        # Schema-valid requests may still break a server rule (workers above max-workers,
        # a duplicate name): a 400 for them is right, so that one check is left out.
        case.validate_response(response, headers=headers, excluded_checks=[positive_data_acceptance])
        elapsed = response.elapsed
        slowest[name] = max(slowest.get(name, 0.0), elapsed)
        if name not in STARTS_A_CLUSTER:
            assert elapsed < LATENCY, f"{name} took {elapsed:.2f}s"
        if "application/x-ndjson" in str(response.headers.get("content-type")):
            for line in response.text.splitlines():
                lease_event.validate(json.loads(line))

    check()


def _run_schemathesis(base_url: str, token: str, cluster_id: str, lease_id: str) -> dict:
    """Every operation, positive and negative cases, with random ids and with live ones.

    Returns per-operation counts; raises on the first failed check (with the request)."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    # The token is sent with every request (auth itself: test_handlers.py), so the security
    # requirement is left out: negative cases would "omit" a header the caller adds back.
    schema = schemathesis.openapi.from_dict({k: v for k, v in DOCUMENT.items() if k != "security"})
    headers = {"Authorization": f"token {token}"}
    slowest: dict[str, float] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    # Stopping the live cluster goes last, so the other operations meet it running.
    operations.sort(key=lambda op: op.definition.raw.get("operationId") == "deleteCluster")

    for operation in operations:
        name = operation.definition.raw["operationId"]
        path_options = [None]
        if "{cluster_id}" in operation.path:
            path_options.append({"cluster_id": cluster_id})
        if "{lease_id}" in operation.path:
            path_options.append({"lease_id": lease_id})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in path_options:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                try:
                    _fuzz(strategy, name, base_url, headers, slowest)
                except Unsatisfiable:
                    if mode is GenerationMode.POSITIVE:
                        raise  # only an operation with nothing to negate may have no cases

    return slowest


async def test_schemathesis_finds_no_5xx_and_no_reply_off_the_schema(
    jp_serverapp, jp_fetch, jp_base_url, memory_backend  # noqa: F811
):
    code, cluster = await call(jp_fetch, "clusters", method="POST", body={"workers": 1})
    assert code == 201
    response = await jp_fetch("jupyter-elastic", "api", "leases", method="POST",
                              body=json.dumps({"session": "schemathesis"}))
    lease = json.loads(response.body.decode().splitlines()[-1])["lease"]
    base_url = f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}jupyter-elastic/api"
    token = jp_serverapp.identity_provider.token
    slowest = await asyncio.to_thread(_run_schemathesis, base_url, token, cluster["id"], lease["lease_id"])
    assert set(slowest) == {op["operationId"] for item in DOCUMENT["paths"].values()
                            for op in item.values() if isinstance(op, dict) and "operationId" in op}
