"""The scheduler's plain-HTTP port (8787: dashboard and Dask's HTTP API, unauthenticated) is
closed by default: each cluster gets a NetworkPolicy ``<name>-scheduler-http`` that leaves
the TLS port open and admits 8787 only from the Dask operator's namespace and the notebook
pods. Its settings, its manifest, and its life with the real operator and the stand-in:
created after the Secret and before the DaskCluster, owned by the DaskCluster and gone with
it; never asked for when the setting is off; a 403 on it ends the start with the RBAC error
and how to fix it, and nothing is left behind.

The API server double stores NetworkPolicies but, like a cluster whose CNI does not enforce
them, does not enforce them: what these tests check is the object, not the traffic. The
real-operator test is skipped, with the reason, when kopf is not installed."""

from __future__ import annotations

import asyncio
from typing import Any

import dask.config
import kubernetes_validate
import pytest
from elastic_testing import wait_for

from jupyter_elastic.backends.kubernetes.backend import KubernetesBackend
from jupyter_elastic.backends.kubernetes.manifests import (
    DASHBOARD_PORT,
    HELM_INSTALL,
    RBAC_RULES,
    SCHEDULER_PORT,
    kubernetes_options,
    network_policy_manifest,
    network_policy_name,
    rbac_rules,
    render,
    validate_manifest,
)
from jupyter_elastic.config import load_settings
from jupyter_elastic.errors import BackendUnavailable, ConfigError
from jupyter_elastic.models import ClusterSpec

from .apiserver import DASK
from .conftest import run, settings
from .test_faults import _nothing_left, _start

pytestmark = pytest.mark.k8s


# --------------------------------------------------------------------------- settings
def test_settings_default_to_a_policy_for_the_operator_and_the_notebooks():
    for k8s in (load_settings({}).kubernetes, load_settings().kubernetes):  # code and yaml defaults
        assert k8s.network_policy is True
        assert k8s.operator_namespace == HELM_INSTALL.split(" -n ")[1].split()[0] == "dask-operator"
        assert k8s.dashboard_clients == {"component": "singleuser-server"}


def test_dashboard_clients_replace_the_default_and_keep_their_keys():
    # a user's dask config file is merged into the defaults: the notebooks' labels are not
    # ANDed with zero-to-jupyterhub's
    merged = dask.config.merge(dask.config.config, {"jupyter-elastic": {"kubernetes": {
        "dashboard-clients": {"app_kind": "notebook"}}}})
    assert load_settings(merged["jupyter-elastic"]).kubernetes.dashboard_clients == {"app_kind": "notebook"}
    assert load_settings({"kubernetes": {"dashboard_clients": {}}}).kubernetes.dashboard_clients == {}
    k8s = load_settings({"kubernetes": {"network-policy": "off", "operator-namespace": "dask-system"}}).kubernetes
    assert (k8s.network_policy, k8s.operator_namespace) == (False, "dask-system")


@pytest.mark.parametrize(("k8s", "error"), [
    ({"network-policy": "maybe"}, "jupyter-elastic.kubernetes.network-policy must be true or false, got 'maybe'"),
    ({"operator-namespace": "Dask_Operator"},
     "jupyter-elastic.kubernetes.operator-namespace must be a Kubernetes namespace name .* got 'Dask_Operator'"),
    ({"operator-namespace": "a" * 64}, "kubernetes.operator-namespace must be at most 63 characters, got 64"),
    ({"operator-namespace": ["dask-operator"]}, "kubernetes.operator-namespace must be a string"),
    ({"dashboard-clients": "component=singleuser-server"},
     "kubernetes.dashboard-clients must be a mapping of strings"),
    ({"dashboard-clients": {"not a key": "x"}},
     r"kubernetes.dashboard-clients: 'not a key' is not a valid label key; use \[prefix/\]name"),
    ({"dashboard-clients": {"component": "single user"}},
     "kubernetes.dashboard-clients: the value 'single user' of 'component' is not a valid label value"),
    ({"dashboard-clients": {"component": "x" * 64}}, "not a valid label value"),
    ({"dashboard-clients": {f"k{i}": "v" for i in range(17)}},
     "kubernetes.dashboard-clients may have at most 16 labels, got 17"),
])
def test_bad_policy_settings_are_one_line_config_errors(k8s, error):
    with pytest.raises(ConfigError, match=error) as info:
        load_settings({"kubernetes": k8s})
    assert "\n" not in info.value.message


# --------------------------------------------------------------------------- the manifest
def _rendered(name: str = "c1", **k8s: Any) -> dict[str, dict[str, Any]]:
    s = load_settings({"kubernetes": {"image": "img:1", **k8s}})
    spec = ClusterSpec.from_settings(s, name=name, backend="kubernetes", owner="alice")
    docs = render(spec, kubernetes_options(s, namespace="jhub"))
    for doc in docs:
        validate_manifest(doc)
    return {doc["kind"]: doc for doc in docs}


def test_policy_closes_the_schedulers_http_port_to_all_but_the_operator_and_the_notebooks():
    """It selects the scheduler pod the operator makes from our DaskCluster (the operator's
    two labels), not its workers nor another cluster's scheduler, leaves the TLS port open
    and admits 8787 from the operator's namespace and the notebook pods only."""
    docs = _rendered()
    policy, cluster = docs["NetworkPolicy"], docs["DaskCluster"]
    kubernetes_validate.validate(policy, "1.33.0", strict=True)
    assert policy["metadata"] == {"name": network_policy_name("c1"), "namespace": "jhub",
                                  "labels": {**cluster["metadata"]["labels"], "dask.org/cluster-name": "c1"}}
    assert policy["metadata"]["name"] == "c1-scheduler-http"
    spec = policy["spec"]
    selected = spec["podSelector"]["matchLabels"]
    assert selected == {"dask.org/cluster-name": "c1", "dask.org/component": "scheduler"}
    # the operator labels the scheduler pod with the cluster's name and component; the
    # Service it makes from our DaskCluster selects the same pod
    assert cluster["spec"]["scheduler"]["service"]["selector"] == selected
    worker_pod_labels = {**cluster["spec"]["worker"]["metadata"]["labels"],
                         "dask.org/cluster-name": "c1", "dask.org/component": "worker"}
    assert not selected.items() <= worker_pod_labels.items()
    other = _rendered("c2")["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]
    assert not selected.items() <= other.items()
    assert spec["policyTypes"] == ["Ingress"]
    open_rule, http_rule = spec["ingress"]
    assert open_rule == {"ports": [{"port": SCHEDULER_PORT, "protocol": "TCP"}]}  # no "from": anyone
    assert http_rule["ports"] == [{"port": DASHBOARD_PORT, "protocol": "TCP"}]
    operator_ns = HELM_INSTALL.split(" -n ")[1].split()[0]
    assert http_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_ns}}},
        {"podSelector": {"matchLabels": {"component": "singleuser-server"}}},
    ]


def test_policy_follows_the_settings_and_is_left_out_when_off():
    docs = _rendered(**{"operator-namespace": "dask-system",
                        "dashboard-clients": {"hub.jupyter.org/network-access-singleuser": "true"}})
    assert docs["NetworkPolicy"]["spec"]["ingress"][1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dask-system"}}},
        {"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-singleuser": "true"}}},
    ]
    # no notebook pods: only the operator (an empty podSelector would admit every pod)
    assert _rendered(**{"dashboard-clients": {}})["NetworkPolicy"]["spec"]["ingress"][1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dask-operator"}}}]
    assert list(_rendered(**{"network-policy": False})) == ["Secret", "DaskCluster", "DaskAutoscaler"]
    assert list(_rendered()) == ["Secret", "NetworkPolicy", "DaskCluster", "DaskAutoscaler"]  # creation order


def test_policy_is_validated_like_the_other_objects():
    policy = _rendered()["NetworkPolicy"]
    policy["spec"]["ingress"][1]["ports"][0]["portt"] = 8787
    with pytest.raises(ConfigError, match=r"invalid NetworkPolicy: spec.ingress.1.ports.0: .*'portt'"):
        validate_manifest(policy)
    policy = _rendered()["NetworkPolicy"]
    policy["spec"]["podSelector"]["matchLabels"]["dask.org/component"] = "a scheduler"
    with pytest.raises(ConfigError, match="invalid NetworkPolicy: spec.podSelector.matchLabels: the value "
                                          "'a scheduler'"):
        validate_manifest(policy)


def test_rbac_rules_name_networkpolicies_only_when_the_policy_is_on():
    on, off = (kubernetes_options(load_settings({"kubernetes": {"network-policy": flag}}))
               for flag in (True, False))
    assert ("networking.k8s.io", "networkpolicies", ("get", "create", "patch", "delete")) in rbac_rules(on)
    assert [r for r in rbac_rules(off) if r[1] == "networkpolicies"] == []
    assert rbac_rules(on) == RBAC_RULES


# --------------------------------------------------------------------------- at start
NETWORKING = "networking.k8s.io/v1"


def _policy(server: Any, cluster: str) -> dict[str, Any] | None:
    return server.sync(server.get, NETWORKING, "networkpolicies", network_policy_name(cluster), "jhub")


@pytest.mark.timeout(240)
def test_real_operator_cluster_gets_a_policy_owned_by_its_daskcluster(real_k8s, no_leaked_processes):
    """With the real Dask operator: the policy is created after the Secret and before the
    DaskCluster, owned by it, selects exactly the scheduler pod the operator made (not the
    worker pod), and goes when the DaskCluster is deleted (``kubectl delete daskcluster``)."""
    from jupyter_elastic.controlplane.manager import ElasticClusterManager

    server = real_k8s.server
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        manager = ElasticClusterManager(settings(), owner="alice", tick=0.2)
        await manager.start()
        try:
            lease = await manager.acquire("kernel-netpol", backend="kubernetes", progress=lambda p, d: None)
            name = seen["name"] = manager.find(lease["cluster_id"]).name
            ours = [o["kind"] for o in server.posted
                    if o["metadata"]["name"] in (name, f"{name}-tls", network_policy_name(name))]
            assert ours[:3] == ["Secret", "NetworkPolicy", "DaskCluster"]
            policy, dc = _policy(server, name), server.sync(server.get, DASK, "daskclusters", name, "jhub")
            assert policy["metadata"]["ownerReferences"] == [
                {"apiVersion": DASK, "kind": "DaskCluster", "name": name, "uid": dc["metadata"]["uid"]}]

            # among the pods the operator made for this cluster (a scheduler and a worker),
            # the policy's selector takes the scheduler's only
            pods = server.sync(server.list, "v1", "pods", "jhub", f"dask.org/cluster-name={name}")
            components = {p["metadata"]["labels"]["dask.org/component"]: p["metadata"]["name"] for p in pods}
            assert set(components) == {"scheduler", "worker"}, components
            selector = ",".join(f"{k}={v}" for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
            selected = server.sync(server.list, "v1", "pods", None, selector)
            assert [p["metadata"]["name"] for p in selected] == [components["scheduler"]]

            server.sync(server.delete, DASK, "daskclusters", name, "jhub")
            await asyncio.to_thread(wait_for, lambda: _policy(server, name) is None, 60,
                                    what="the NetworkPolicy to go with its DaskCluster")
        finally:
            await manager.close_all("test over")

    asyncio.run(scenario())
    assert server.sync(server.get, DASK, "daskclusters", seen["name"], "jhub") is None


def _start_and_close(s: Any, name: str) -> None:
    spec = ClusterSpec.from_settings(s, name=name, backend="kubernetes", owner="alice", max_workers=1)

    async def scenario() -> None:
        backend = KubernetesBackend(s)
        handle = await backend.start(spec, lambda p, d: None)
        await backend.close(handle)

    run(scenario())


def test_no_policy_and_no_networkpolicy_call_when_the_setting_is_off(k8s, no_leaked_processes):
    k8s.server.forbid.update((verb, "networkpolicies") for verb in ("get", "list", "create", "patch", "delete"))
    _start_and_close(settings(**{"network-policy": False}), "open")
    assert [o["kind"] for o in k8s.server.posted if o["kind"] in ("Secret", "NetworkPolicy")] == ["Secret"]
    assert not [path for _, path in k8s.server.requests if "networkpolic" in path]
    _nothing_left(k8s)


def test_rbac_forbidden_policy_ends_the_start_with_the_fix_and_leaves_nothing(k8s, no_leaked_processes):
    k8s.server.forbid.add(("create", "networkpolicies"))
    with pytest.raises(BackendUnavailable) as info:
        _start(settings(), name="closed")
    msg = info.value.message
    assert msg.startswith("could not create the NetworkPolicy 'closed-scheduler-http': Kubernetes RBAC "
                          "forbids 'create' on networkpolicies.networking.k8s.io in namespace jhub")
    assert "grant get, create, patch and delete on networkpolicies (API group networking.k8s.io)" in msg
    assert "set jupyter-elastic.kubernetes.network-policy: false" in msg and "\n" not in msg
    assert [o["kind"] for o in k8s.server.posted] == ["Secret"]  # no DaskCluster was tried
    _nothing_left(k8s)  # the Secret made before it is deleted


def test_what_could_not_be_deleted_after_a_forbidden_policy_is_named(k8s):
    k8s.server.forbid.update({("create", "networkpolicies"), ("delete", "secrets")})
    with pytest.raises(BackendUnavailable) as info:
        _start(settings(), name="stuck")
    msg = info.value.message
    assert "forbids 'create' on networkpolicies" in msg
    assert "what it made could not be deleted (ServerError): run `kubectl delete secret stuck-tls -n jhub`" in msg
    assert "network-policy: false" in msg


def test_a_start_that_fails_before_the_daskcluster_deletes_the_policy(k8s):
    k8s.server.forbid.add(("create", "daskclusters"))
    with pytest.raises(BackendUnavailable, match="RBAC forbids 'create' on daskclusters"):
        _start(settings(), name="early")
    assert [o["kind"] for o in k8s.server.posted] == ["Secret", "NetworkPolicy"]  # both were made
    assert ("POST", f"/apis/{DASK}/namespaces/jhub/daskclusters") in k8s.server.requests  # refused
    _nothing_left(k8s)


def test_a_leftover_policy_of_ours_is_replaced_and_anyone_elses_refused(k8s, no_leaked_processes):
    server = k8s.server
    s = settings()
    mine = network_policy_manifest("again", "jhub", {"app.kubernetes.io/managed-by": "jupyter-elastic",
                                                     "jupyter-elastic/owner": "alice"}, s.kubernetes)
    old_uid = server.sync(server.put, NETWORKING, "networkpolicies", mine)["metadata"]["uid"]
    spec = ClusterSpec.from_settings(s, name="again", backend="kubernetes", owner="alice", max_workers=1)

    async def replaced() -> None:
        backend = KubernetesBackend(s)
        handle = await backend.start(spec, lambda p, d: None)
        try:
            policy = _policy(server, "again")
            assert policy["metadata"]["uid"] != old_uid and policy["metadata"]["ownerReferences"]
        finally:
            await backend.close(handle)

    run(replaced())
    _nothing_left(k8s)

    theirs = network_policy_manifest("taken", "jhub", {"team": "web"}, s.kubernetes)
    server.sync(server.put, NETWORKING, "networkpolicies", theirs)
    with pytest.raises(ConfigError, match="a NetworkPolicy named 'taken-scheduler-http' already exists in "
                                          "namespace jhub and is not one jupyter-elastic made for you"):
        _start(s, name="taken")
    assert _policy(server, "taken")["metadata"]["labels"] == {"team": "web", "dask.org/cluster-name": "taken"}
    assert server.sync(server.get, "v1", "secrets", "taken-tls", "jhub") is None
