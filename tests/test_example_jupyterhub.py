"""The shared-hub recipe (``examples/jupyterhub/``) is valid and consistent.

Neither chart's values schema is shipped in an installed package here, so each values file
is checked against a small JSON schema of the keys the recipe uses, written after the
charts' own ``values.schema.yaml`` (zero-to-jupyterhub's ``jupyterhub/values.schema.yaml``,
dask-gateway's ``resources/helm/dask-gateway/values.schema.yaml``): the same nesting and
types, closed (``additionalProperties: false``) at every level the recipe writes, so a
misspelt key fails here as it would in ``helm install``. The Kubernetes objects embedded in
the values (tolerations, node selectors, resource limits, the options handler's pod and
container settings) are validated as a Pod with kubernetes-validate, and the gateway's
``extraConfig`` code runs against a traitlets ``Config`` and builds the quota module.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

pytest.importorskip("dask_gateway_server", reason="the gateway's extraConfig imports it")

RECIPE = pathlib.Path(__file__).parents[1] / "examples" / "jupyterhub"
K8S = "1.33.0"


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(required)}


STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
IMAGE = _closed({"name": {"type": "string"}, "tag": {"type": "string"}}, ("name", "tag"))
QUANTITY = {"type": ["string", "number", "null"]}
REQ_LIMIT = _closed({"request": QUANTITY, "limit": QUANTITY})
POD_EXTRA = {"type": "object"}  # any PodSpec fields: validated below as a Pod

Z2JH = _closed({
    "hub": _closed({
        "services": {"type": "object", "additionalProperties": _closed({
            "apiToken": {"type": ["string", "null"]}, "url": {"type": ["string", "null"]},
            "display": {"type": "boolean"}, "admin": {"type": "boolean"},
            "command": {"type": "array", "items": {"type": "string"}},
            "environment": STR_MAP,
        })},
        "loadRoles": {"type": "object", "additionalProperties": _closed({
            "description": {"type": "string"}, "scopes": {"type": "array"},
            "services": {"type": "array"}, "users": {"type": "array"},
            "groups": {"type": "array"},
        })},
        "extraConfig": STR_MAP,
    }),
    "singleuser": _closed({
        "image": IMAGE,
        "extraEnv": STR_MAP,
        "profileList": {"type": "array", "items": _closed({
            "display_name": {"type": "string"}, "description": {"type": "string"},
            "default": {"type": "boolean"},
            "kubespawner_override": _closed({
                "environment": STR_MAP, "extra_resource_limits": STR_MAP,
                "node_selector": STR_MAP, "tolerations": {"type": "array"},
            }),
        }, ("display_name",))},
    }),
    "cull": _closed({"enabled": {"type": "boolean"}, "timeout": {"type": "integer"}}),
})

GATEWAY = _closed({
    "gateway": _closed({
        "image": IMAGE,
        "prefix": {"type": "string"},
        "auth": _closed({
            "type": {"enum": ["simple", "kerberos", "jupyterhub", "custom"]},
            "jupyterhub": _closed({"apiToken": {"type": ["string", "null"]},
                                   "apiUrl": {"type": ["string", "null"]}}),
        }, ("type",)),
        "backend": _closed({
            "image": IMAGE,
            "scheduler": _closed({"cores": REQ_LIMIT, "memory": REQ_LIMIT,
                                  "extraPodConfig": POD_EXTRA}, ("cores", "memory")),
            "worker": _closed({"cores": REQ_LIMIT, "memory": REQ_LIMIT,
                               "extraPodConfig": POD_EXTRA,
                               "extraContainerConfig": {"type": "object"}},
                              ("cores", "memory")),
        }),
        "extraConfig": STR_MAP,
    }),
})


def _values(name: str) -> dict[str, Any]:
    return yaml.safe_load((RECIPE / name).read_text())


def _pod(spec: dict[str, Any], container: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
            "spec": {**spec, "containers": [{"name": "c", "image": "img:1", **(container or {})}]}}


def _gateway_config() -> Any:
    from traitlets.config import Config

    c = Config()
    for _key, code in sorted(_values("dask-gateway-values.yaml")["gateway"]["extraConfig"].items()):
        exec(compile(code, "extraConfig", "exec"), {"c": c})  # noqa: S102 - the recipe's own code
    return c


def test_values_follow_the_charts_schemas_for_the_keys_they_use():
    jsonschema.validate(_values("jupyterhub-values.yaml"), Z2JH)
    jsonschema.validate(_values("dask-gateway-values.yaml"), GATEWAY)
    broken = _values("dask-gateway-values.yaml")
    broken["gateway"]["backend"]["worker"]["memroy"] = broken["gateway"]["backend"]["worker"].pop("memory")
    with pytest.raises(jsonschema.ValidationError, match="memroy"):
        jsonschema.validate(broken, GATEWAY)


def test_embedded_kubernetes_objects_are_valid():
    for profile in _values("jupyterhub-values.yaml")["singleuser"]["profileList"]:
        override = profile["kubespawner_override"]
        kubernetes_validate.validate(_pod(
            {"nodeSelector": override.get("node_selector", {}),
             "tolerations": override.get("tolerations", [])},
            {"resources": {"limits": override.get("extra_resource_limits", {})},
             "env": [{"name": k, "value": v} for k, v in override.get("environment", {}).items()]},
        ), K8S, strict=True)
    worker = _values("dask-gateway-values.yaml")["gateway"]["backend"]["worker"]
    kubernetes_validate.validate(_pod(worker["extraPodConfig"]), K8S, strict=True)
    # what the cluster options handler makes of each GPU choice
    c = _gateway_config()
    options = c.Backend.cluster_options
    for gpu_type in ("t4", "a100"):
        out = options.get_configuration(options.parse_options({"gpu_type": gpu_type}), None)
        assert "--resources" in out["worker_cmd"] and "GPU=1" in out["worker_cmd"]
        kubernetes_validate.validate(_pod(out["worker_extra_pod_config"],
                                          out["worker_extra_container_config"]), K8S, strict=True)
    cpu = options.get_configuration(options.parse_options({"worker_gpus": 0}), None)
    assert cpu["worker_cmd"][-2:] == ["--resources", "CELL=1"]


def test_the_gateway_loads_the_quota_module_and_the_hub_agrees_with_it():
    from jupyter_elastic.hub.gateway import ElasticQuota, QuotaBackendMixin

    c = _gateway_config()
    backend = c.DaskGateway.backend_class
    assert issubclass(backend, QuotaBackendMixin) and backend.__name__ == "QuotaKubeBackend"
    quota = ElasticQuota(config=c)
    assert quota.when_full == "queue" and quota.pools_for(["students"]) == {
        "group:students": 8.0, "pool": 16.0}
    assert quota.limits_for(["staff"]).priority == 1

    hub = _values("jupyterhub-values.yaml")
    gw = _values("dask-gateway-values.yaml")["gateway"]
    # the hub's groups are the ones the quota table names
    scope: dict[str, Any] = {}
    config = type("C", (), {})()
    config.JupyterHub = type("J", (), {})()
    scope["c"] = config
    exec(hub["hub"]["extraConfig"]["10-groups"], scope)  # noqa: S102 - the recipe's own code
    assert set(config.JupyterHub.load_groups) == set(quota.groups)
    # the notebooks reach the gateway where the chart serves it, with hub auth
    env = hub["singleuser"]["extraEnv"]
    assert env["DASK_GATEWAY__ADDRESS"].endswith(gw["prefix"])
    assert env["DASK_JUPYTER_ELASTIC__GATEWAY__AUTH"] == "jupyterhub" == gw["auth"]["type"]
    # every GPU type a profile offers is a gateway option some group may use
    offered = set(c.Backend.cluster_options.fields[1].options)
    allowed = {t for g in quota.groups.values() for t in g.get("gpu_types", [])}
    for profile in hub["singleuser"]["profileList"]:
        gpu_type = profile["kubespawner_override"].get("environment", {}).get(
            "DASK_JUPYTER_ELASTIC__GATEWAY__CLUSTER_OPTIONS__GPU_TYPE")
        if gpu_type is not None:
            assert gpu_type in offered and gpu_type in allowed, profile["display_name"]
    # the admin usage service and its role
    assert "jupyter-elastic-hub" in hub["hub"]["services"]
    assert hub["hub"]["loadRoles"]["jupyter-elastic-hub"]["services"] == ["jupyter-elastic-hub"]
    # the service is given what its command refuses to start without (jupyter-elastic-hub's
    # main names these), and the gateway's usage route has a token to check
    env = hub["hub"]["services"]["jupyter-elastic-hub"]["environment"]
    assert {"JUPYTER_ELASTIC_GATEWAY_URL", "JUPYTER_ELASTIC_USAGE_TOKEN"} <= set(env)
    assert c.ElasticUsage.api_token and c.ElasticUsage.api_token != env["JUPYTER_ELASTIC_GATEWAY_URL"]
