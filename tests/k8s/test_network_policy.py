"""The per-cluster NetworkPolicy that closes the scheduler's plain-HTTP port (8787:
dashboard and Dask's HTTP API, unauthenticated) to all but the Dask operator's namespace and
the notebook pods: its settings (``kubernetes.network-policy``, ``operator-namespace``,
``dashboard-clients``) and its manifest."""

from __future__ import annotations

from typing import Any

import dask.config
import kubernetes_validate
import pytest

from jupyter_elastic.backends.kubernetes.manifests import (
    DASHBOARD_PORT,
    HELM_INSTALL,
    RBAC_RULES,
    SCHEDULER_PORT,
    kubernetes_options,
    network_policy_name,
    rbac_rules,
    render,
    validate_manifest,
)
from jupyter_elastic.config import load_settings
from jupyter_elastic.errors import ConfigError
from jupyter_elastic.models import ClusterSpec

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
