"""Manifests and examples against the Dask operator's CRD schemas and the core schemas."""

from __future__ import annotations

import pathlib
from importlib.resources import files

import kubernetes_validate
import pytest
import yaml

from jupyter_elastic.backends.kubernetes.manifests import (
    RBAC_RULES,
    cluster_manifest,
    kubernetes_options,
    render,
    validate_manifest,
)
from jupyter_elastic.config import load_settings
from jupyter_elastic.errors import ConfigError
from jupyter_elastic.models import ClusterSpec

pytestmark = pytest.mark.k8s
EXAMPLES = pathlib.Path(__file__).parents[2] / "examples" / "kubernetes"


def _settings(**k8s):
    return load_settings({"kubernetes": {"image": "img:1", **k8s}, "max-workers": 3})


def _spec(s, **kw):
    return ClusterSpec.from_settings(s, name="m", backend="kubernetes", owner="alice", **kw)


def test_gpu_cluster_requests_gpus_on_workers_only_and_validates():
    s = _settings(**{"gpu-resource": "amd.com/gpu", "gpu-type-label": "example.com/gpu-model",
                     "service-account": "jupyter-user", "node-selector": {"pool": "gpu"},
                     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                                      "effect": "NoSchedule"}]})
    secret, cluster, autoscaler = render(_spec(s, gpus_per_worker=2.0, gpu_type="MI300X"),
                                         kubernetes_options(s, namespace="ns"))
    for m in (secret, cluster, autoscaler):
        validate_manifest(m)
    worker = cluster["spec"]["worker"]["spec"]
    res = worker["containers"][0]["resources"]
    assert res["limits"]["amd.com/gpu"] == "2" and res["requests"] == res["limits"]
    assert worker["nodeSelector"] == {"pool": "gpu", "example.com/gpu-model": "MI300X"}
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker["tolerations"]
    assert worker["serviceAccountName"] == "jupyter-user"
    scheduler = cluster["spec"]["scheduler"]["spec"]
    assert "gpu" not in yaml.safe_dump(scheduler["containers"][0]["resources"])
    assert "nodeSelector" not in scheduler and "tolerations" not in scheduler
    assert autoscaler["spec"] == {"cluster": "m", "minimum": 0, "maximum": 3}


def test_cpu_only_spec_offers_a_cell_slot_and_no_gpu():
    s = _settings()
    cluster = cluster_manifest(_spec(s, gpus_per_worker=0.0), kubernetes_options(s))
    validate_manifest(cluster)
    container = cluster["spec"]["worker"]["spec"]["containers"][0]
    assert "CELL=1" in container["args"] and "gpu" not in yaml.safe_dump(container["resources"])
    assert "tolerations" not in cluster["spec"]["worker"]["spec"]


def test_image_defaults_to_the_notebook_image(monkeypatch):
    s = load_settings({"kubernetes": {}})
    monkeypatch.delenv("JUPYTER_IMAGE_SPEC", raising=False)
    monkeypatch.delenv("JUPYTER_IMAGE", raising=False)
    with pytest.raises(ConfigError, match="no worker image"):
        cluster_manifest(_spec(s), kubernetes_options(s))
    monkeypatch.setenv("JUPYTER_IMAGE_SPEC", "hub/notebook:abc")
    cluster = cluster_manifest(_spec(s), kubernetes_options(s))
    assert cluster["spec"]["worker"]["spec"]["containers"][0]["image"] == "hub/notebook:abc"


def test_validator_rejects_unknown_fields_and_wrong_types():
    s = _settings()
    good = cluster_manifest(_spec(s), kubernetes_options(s))
    bad = yaml.safe_load(yaml.safe_dump(good))
    bad["spec"]["worker"]["replicas"] = "two"
    with pytest.raises(ConfigError, match="spec.worker.replicas"):
        validate_manifest(bad)
    bad = yaml.safe_load(yaml.safe_dump(good))
    bad["spec"]["scheduler"]["spec"]["containers"][0]["imagePullPolicy "] = "Always"
    with pytest.raises(ConfigError, match="imagePullPolicy "):
        validate_manifest(bad)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="tolerations"):
        kubernetes_options(_settings(tolerations="nvidia"))
    with pytest.raises(ConfigError, match="scheduler-service-type"):
        kubernetes_options(_settings(**{"scheduler-service-type": "Ingress"}))


def test_crd_schemas_come_from_the_dask_kubernetes_package():
    crds = files("dask_kubernetes.operator.deployment.helm") / "dask-kubernetes-operator" / "crds"
    names = {yaml.safe_load((crds / f).read_text())["metadata"]["name"] for f in
             ("daskcluster.yaml", "daskautoscaler.yaml", "daskworkergroup.yaml")}
    assert names == {"daskclusters.kubernetes.dask.org", "daskautoscalers.kubernetes.dask.org",
                     "daskworkergroups.kubernetes.dask.org"}


def test_example_rbac_is_valid_and_grants_every_rule_the_backend_uses():
    docs = list(yaml.safe_load_all((EXAMPLES / "rbac.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    role = next(d for d in docs if d["kind"] == "Role")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    needed = {(g, r, v) for g, r, verbs in RBAC_RULES for v in verbs}
    assert needed <= granted, needed - granted
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_example_helm_values_use_known_keys():
    chart = files("dask_kubernetes.operator.deployment.helm") / "dask-kubernetes-operator" / "values.yaml"
    defaults = yaml.safe_load(chart.read_text())
    ours = yaml.safe_load((EXAMPLES / "operator-values.yaml").read_text())
    assert set(ours) <= set(defaults), set(ours) - set(defaults)
    z2jh = yaml.safe_load((EXAMPLES / "z2jh-values.yaml").read_text())
    env = z2jh["singleuser"]["extraEnv"]
    assert env["DASK_JUPYTER_ELASTIC__BACKEND"] == "kubernetes"
    assert all(k.startswith("DASK_JUPYTER_ELASTIC__") for k in env)
    sa = z2jh["singleuser"]["serviceAccountName"]
    rbac = list(yaml.safe_load_all((EXAMPLES / "rbac.yaml").read_text()))
    assert any(s["name"] == sa for d in rbac if d["kind"] == "RoleBinding" for s in d["subjects"])
    dockerfile = (EXAMPLES / "Dockerfile.worker").read_text()
    assert "[gpu]" in dockerfile and dockerfile.startswith("#")


def test_label_and_node_selector_values_follow_kubernetes_rules():
    s = _settings(labels={"cost center": "vision"})
    spec = ClusterSpec.from_settings(s, name="labels", backend="kubernetes", owner="alice")
    with pytest.raises(ConfigError, match="'cost center' is not a valid label key"):
        validate_manifest(cluster_manifest(spec, kubernetes_options(s), replicas=1))
    s = _settings()
    spec = ClusterSpec.from_settings(s, name="gputype", backend="kubernetes", owner="alice",
                                     gpu_type="NVIDIA A100-SXM4-80GB")
    with pytest.raises(ConfigError, match="not a valid label value"):
        validate_manifest(cluster_manifest(spec, kubernetes_options(s), replicas=1))
    good = ClusterSpec.from_settings(s, name="gputype", backend="kubernetes", owner="alice",
                                     gpu_type="NVIDIA-A100-SXM4-80GB")
    validate_manifest(cluster_manifest(good, kubernetes_options(s), replicas=1))


def test_scheduler_and_workers_speak_tls_with_the_clusters_secret():
    import base64

    from jupyter_elastic.backends.kubernetes.manifests import TLS_MOUNT, tls_secret_manifest
    from jupyter_elastic.backends.kubernetes.tls import make_credentials

    s = _settings()
    cluster = cluster_manifest(_spec(s), kubernetes_options(s, namespace="ns"), replicas=1)
    validate_manifest(cluster)
    for component in ("scheduler", "worker"):
        pod = cluster["spec"][component]["spec"]
        container = pod["containers"][0]
        args = container["args"]
        assert args[args.index("--protocol") + 1] == "tls"
        assert [args[args.index(f"--tls-{k}") + 1] for k in ("ca-file", "cert", "key")] == [
            f"{TLS_MOUNT}/ca.pem", f"{TLS_MOUNT}/cert.pem", f"{TLS_MOUNT}/key.pem"]
        assert pod["volumes"] == [{"name": "jupyter-elastic-tls", "secret": {"secretName": "m-tls"}}]
        assert container["volumeMounts"] == [
            {"name": "jupyter-elastic-tls", "mountPath": TLS_MOUNT, "readOnly": True}]
    env = {e["name"]: e["value"] for e in cluster["spec"]["worker"]["spec"]["containers"][0]["env"]}
    # the operator would set tcp:// here; an address already in the pod is left as it is
    assert env["DASK_SCHEDULER_ADDRESS"] == "tls://m-scheduler.ns.svc.cluster.local:8786"

    creds = make_credentials()
    secret = tls_secret_manifest("m", "ns", cluster["metadata"]["labels"], creds)
    validate_manifest(secret)
    assert secret["metadata"]["name"] == "m-tls" and secret["type"] == "Opaque"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "ca.pem": creds["tls_ca"], "cert.pem": creds["tls_cert"], "key.pem": creds["tls_key"]}
    assert creds["tls_key"] not in yaml.safe_dump(cluster)  # only the Secret holds it
