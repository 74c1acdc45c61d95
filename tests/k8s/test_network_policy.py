"""The settings of the per-cluster NetworkPolicy that closes the scheduler's plain-HTTP
port (8787): ``kubernetes.network-policy``, ``operator-namespace``, ``dashboard-clients``."""

from __future__ import annotations

import dask.config
import pytest

from jupyter_elastic.backends.kubernetes.manifests import HELM_INSTALL
from jupyter_elastic.config import load_settings
from jupyter_elastic.errors import ConfigError

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
