"""Where pods go: the scheduler's own node selector and tolerations, spot workers, the GPU
type check of ``render``/``doctor`` against labelled Nodes, fractional ``--gpus`` on
Kubernetes, and the image pre-pull DaemonSet example."""

from __future__ import annotations

import pathlib

import dask
import kubernetes_validate
import pytest
import yaml

from jupyter_elastic.backends.kubernetes.manifests import (
    SPOT_NODE_LABELS,
    cluster_manifest,
    kubernetes_options,
    validate_manifest,
)
from jupyter_elastic.cli import main
from jupyter_elastic.config import load_settings
from jupyter_elastic.errors import ConfigError
from jupyter_elastic.models import ClusterSpec

pytestmark = pytest.mark.k8s
EXAMPLES = pathlib.Path(__file__).parents[2] / "examples" / "kubernetes"


def _cluster_doc(out: str):
    [cluster] = [d for d in yaml.safe_load_all(out) if d["kind"] == "DaskCluster"]
    return cluster


def _manifest(**k8s):
    s = load_settings({"kubernetes": {"image": "img:1", **k8s}})
    spec = ClusterSpec.from_settings(s, name="place", backend="kubernetes", owner="alice")
    manifest = cluster_manifest(spec, kubernetes_options(s), replicas=1)
    validate_manifest(manifest)  # CRD + core Pod schemas
    return manifest["spec"]["scheduler"]["spec"], manifest["spec"]["worker"]["spec"]


def test_scheduler_pod_has_its_own_node_selector_and_tolerations():
    system = {"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}
    scheduler, worker = _manifest(**{
        "node-selector": {"pool": "gpu"},
        "scheduler": {"node-selector": {"pool": "system"}, "tolerations": [system]},
    })
    assert scheduler["nodeSelector"] == {"pool": "system"}
    assert scheduler["tolerations"] == [system]
    # the workers keep theirs, and the scheduler gets none of the GPU ones
    assert worker["nodeSelector"] == {"pool": "gpu"}
    assert system not in worker["tolerations"]
    assert all("gpu" not in t["key"] for t in scheduler["tolerations"])


def test_scheduler_placement_settings_are_checked():
    with pytest.raises(ConfigError, match=r"kubernetes\.scheduler\.tolerations must be a list"):
        load_settings({"kubernetes": {"scheduler": {"tolerations": "system"}}})
    with pytest.raises(ConfigError, match="scheduler has no setting 'nodeselector'"):
        load_settings({"kubernetes": {"scheduler": {"nodeselector": {"a": "b"}}}})
    with pytest.raises(ConfigError, match=r"not a valid label value"):
        _manifest(scheduler={"node-selector": {"pool": "system pool"}})


def test_spot_workers_require_a_spot_node_of_any_cloud_and_tolerate_its_taint():
    scheduler, worker = _manifest(spot=True)
    terms = worker["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    # one term per cloud: terms are ORed, so a node with any one of the labels qualifies
    assert [(t["matchExpressions"][0]["key"], t["matchExpressions"][0]["values"]) for t in terms] == [
        ("cloud.google.com/gke-spot", ["true"]),
        ("eks.amazonaws.com/capacityType", ["SPOT"]),
        ("kubernetes.azure.com/scalesetpriority", ["spot"]),
    ]
    assert [(k, v) for k, v in SPOT_NODE_LABELS] == [
        (t["matchExpressions"][0]["key"], t["matchExpressions"][0]["values"][0]) for t in terms]
    taints = {(t["key"], t.get("value"), t["effect"]) for t in worker["tolerations"]}
    assert ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule") in taints
    assert ("cloud.google.com/gke-spot", "true", "NoSchedule") in taints
    assert ("nvidia.com/gpu", None, "NoSchedule") in taints
    # the scheduler stays off spot nodes: losing it loses the cluster
    assert "affinity" not in scheduler and "tolerations" not in scheduler
    _, plain = _manifest()
    assert "affinity" not in plain


def test_render_shows_scheduler_placement_and_spot(capsys):
    with dask.config.set({"jupyter-elastic.kubernetes.spot": True,
                          "jupyter-elastic.kubernetes.scheduler.node-selector": {"pool": "system"}}):
        assert main(["render", "--image", "img:1", "--name", "r1"]) == 0
    cluster = _cluster_doc(capsys.readouterr().out)
    assert cluster["spec"]["scheduler"]["spec"]["nodeSelector"] == {"pool": "system"}
    assert "nodeAffinity" in cluster["spec"]["worker"]["spec"]["affinity"]


def _nodes(server, **labels_by_node):
    for name, labels in labels_by_node.items():
        server.sync(server.put, "v1", "nodes", {
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"nvidia.com/gpu": "1"} if labels else {"cpu": "8"}}})


def test_render_warns_when_no_node_has_the_gpu_type_and_doctor_lists_the_types(k8s, capsys, monkeypatch):
    _nodes(k8s.server, a={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
           b={"nvidia.com/gpu.product": "NVIDIA-L4"}, c={})
    assert main(["render", "--image", "img:1", "--gpu-type", "NVIDIA-H100-80GB-HBM3"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load_all(out)  # the manifests still print (pods would just stay pending)
    [line] = err.strip().splitlines()
    assert line.startswith("warning: --gpu-type NVIDIA-H100-80GB-HBM3: no node of this cluster has "
                           "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3")
    assert "values present: NVIDIA-A100-SXM4-80GB, NVIDIA-L4" in line

    assert main(["render", "--image", "img:1", "--gpu-type", "NVIDIA-L4"]) == 0
    assert capsys.readouterr().err == ""

    with dask.config.set({"jupyter-elastic.kubernetes.image": "img:1"}):
        main(["doctor", "--backend", "kubernetes"])
    out = capsys.readouterr().out
    assert ("--gpu-type values on this cluster's nodes (nvidia.com/gpu.product): "
            "NVIDIA-A100-SXM4-80GB, NVIDIA-L4") in out


def test_render_without_a_cluster_does_not_warn(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["render", "--image", "img:1", "--gpu-type", "NVIDIA-L4"]) == 0
    assert capsys.readouterr().err == ""


def test_half_a_gpu_on_kubernetes_says_pods_get_whole_gpus_or_uses_the_configured_resource(
        capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert main(["render", "--image", "img:1", "--gpus", "0.5"]) == 0
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert "Kubernetes gives a pod whole GPUs" in line and "nvidia.com/gpu: 1" in line
    assert "packing hint" in line and "nvidia.com/mig-1g.10gb" in line
    worker = _cluster_doc(out)["spec"]["worker"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"

    with dask.config.set({"jupyter-elastic.kubernetes.gpu-resource": "nvidia.com/mig-1g.10gb"}):
        assert main(["render", "--image", "img:1", "--gpus", "0.5"]) == 0
    out, err = capsys.readouterr()
    worker = _cluster_doc(out)["spec"]["worker"]["spec"]
    assert worker["containers"][0]["resources"]["limits"] == {
        "cpu": "4", "memory": "16Gi", "nvidia.com/mig-1g.10gb": "1"}
    assert "nvidia.com/gpu" not in yaml.safe_dump(worker)
    assert err.strip() == ("note: --gpus 0.5: each worker pod asks for nvidia.com/mig-1g.10gb: 1 "
                           "(jupyter-elastic.kubernetes.gpu-resource); 0.5 is a packing hint for cells "
                           "on that worker")


def test_prepull_daemonset_example_is_valid_and_matches_the_worker_image_and_taints():
    [ds] = list(yaml.safe_load_all((EXAMPLES / "prepull-daemonset.yaml").read_text()))
    kubernetes_validate.validate(ds, "1.33.0", strict=True)
    assert ds["kind"] == "DaemonSet"
    pod = ds["spec"]["template"]["spec"]
    z2jh = yaml.safe_load((EXAMPLES / "z2jh-values.yaml").read_text())["singleuser"]["image"]
    assert pod["initContainers"][0]["image"] == f"{z2jh['name']}:{z2jh['tag']}"
    tolerated = {t["key"] for t in pod["tolerations"]}
    assert {"nvidia.com/gpu", "cloud.google.com/gke-spot", "kubernetes.azure.com/scalesetpriority"} <= tolerated
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert term["matchExpressions"][0]["key"] == load_settings({}).kubernetes.gpu_type_label


def test_networkpolicy_example_closes_the_schedulers_http_port_to_all_but_the_operator():
    """The policy selects the scheduler pods the operator makes from our DaskCluster (its
    labels plus the operator's component label), leaves the TLS port open and admits 8787
    from the operator's namespace and the notebook pods only."""
    from jupyter_elastic.backends.kubernetes.manifests import (
        DASHBOARD_PORT,
        HELM_INSTALL,
        SCHEDULER_PORT,
    )

    [policy] = list(yaml.safe_load_all((EXAMPLES / "networkpolicy.yaml").read_text()))
    kubernetes_validate.validate(policy, "1.33.0", strict=True)
    spec = policy["spec"]
    s = load_settings({"kubernetes": {"image": "img:1"}})
    cluster = cluster_manifest(ClusterSpec.from_settings(s, name="c1", backend="kubernetes", owner="alice"),
                               kubernetes_options(s, namespace="jhub"), replicas=0)
    scheduler_pod_labels = {**cluster["metadata"]["labels"], "dask.org/component": "scheduler"}
    assert spec["podSelector"]["matchLabels"].items() <= scheduler_pod_labels.items()
    worker_pod_labels = {**cluster["metadata"]["labels"], "dask.org/component": "worker"}
    assert not spec["podSelector"]["matchLabels"].items() <= worker_pod_labels.items()
    open_rule, http_rule = spec["ingress"]
    assert "from" not in open_rule and [p["port"] for p in open_rule["ports"]] == [SCHEDULER_PORT]
    assert [p["port"] for p in http_rule["ports"]] == [DASHBOARD_PORT]
    operator_ns = HELM_INSTALL.split(" -n ")[1].split()[0]
    assert http_rule["from"][0] == {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": operator_ns}}}
    assert http_rule["from"][1] == {"podSelector": {"matchLabels": {"component": "singleuser-server"}}}
