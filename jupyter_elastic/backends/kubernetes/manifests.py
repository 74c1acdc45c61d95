"""The Kubernetes objects a ``backend: kubernetes`` cluster is made of, as plain dicts.

Pure functions, no API calls: :func:`cluster_manifest` builds the ``DaskCluster`` custom
resource (scheduler on a small CPU pod, GPU workers in the default worker group) and
:func:`autoscaler_manifest` the ``DaskAutoscaler`` that scales the workers between a
minimum and a maximum. :func:`validate_manifest` checks a manifest against the Dask
operator's CRD schemas (the ones dask-kubernetes ships with its Helm chart) and the pod and
service templates inside it against the Kubernetes core schemas bundled offline by
``kubernetes-validate``, rejecting unknown fields the way ``kubectl --validate=strict``
does. ``jupyter-elastic render`` prints what these functions return.

Why one module this long: every object a cluster is made of, and the schema checks of
them, side by side, so a reviewer sees the whole manifest set in one file.
"""

from __future__ import annotations

import base64
import copy
import functools
import os
import re
from dataclasses import replace
from importlib import resources
from typing import Any

import yaml

from ...config import KubernetesSettings, Settings
from ...errors import ConfigError
from ...models import ClusterSpec
from ...protocol import (
    CPU_RESOURCE,
    GPU_RESOURCE,
    IDLE_TIMEOUT_ENV,
    RESOURCE_ENV,
    SCHEDULER_PRELOAD,
    SLOTS_ENV,
    WORKER_ENV,
    WORKER_PRELOAD,
)

GROUP = "kubernetes.dask.org"
API_VERSION = f"{GROUP}/v1"
#: The command that installs the Dask operator (and its CRDs) with Helm.
HELM_INSTALL = (
    "helm install --repo https://helm.dask.org --create-namespace -n dask-operator "
    "--generate-name dask-kubernetes-operator"
)
#: Resources of the operator's API group that a cluster is made of.
DASK_RESOURCES = ("daskclusters", "daskworkergroups", "daskautoscalers")
#: Every (API group, resource, verb) the backend uses; ``doctor`` checks these and
#: ``examples/kubernetes/rbac.yaml`` grants them.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (GROUP, "daskclusters", ("get", "list", "create", "delete", "patch")),
    (GROUP, "daskworkergroups", ("get", "list", "patch")),
    (GROUP, "daskautoscalers", ("get", "create", "patch", "delete")),
    ("", "pods", ("get", "list")),
    ("", "pods/log", ("get",)),
    ("", "services", ("get", "list")),
    ("", "events", ("list",)),
    ("", "secrets", ("get", "create", "patch", "delete")),
)

LABEL_PREFIX = "jupyter-elastic"
OWNER_LABEL = f"{LABEL_PREFIX}/owner"
SESSION_LABEL = f"{LABEL_PREFIX}/session"
MANAGED_BY = {"app.kubernetes.io/managed-by": "jupyter-elastic"}
#: Kueue's label naming the LocalQueue a pod waits in (``kubernetes.queue-name``).
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

SCHEDULER_PORT, DASHBOARD_PORT, WORKER_DASHBOARD_PORT = 8786, 8787, 8788
#: The scheduler is a small CPU pod: no GPU, no GPU node selector.
SCHEDULER_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"cpu": "1", "memory": "2Gi"},
}
#: Each cluster's TLS credentials: a Secret ``<name>-tls`` (owned by the DaskCluster, so it
#: goes with it) mounted read-only here in the scheduler and worker pods.
TLS_MOUNT = "/etc/jupyter-elastic/tls"
TLS_VOLUME = "jupyter-elastic-tls"
#: Secret key -> what it holds (PEM). One self-signed certificate is CA, scheduler, worker
#: and client certificate at once (``distributed.security.Security.temporary()``).
TLS_KEYS = {"ca.pem": "tls_ca", "cert.pem": "tls_cert", "key.pem": "tls_key"}
TLS_PLACEHOLDER = "(made at cluster start: PEM, never rendered)"


#: The scheduler's HTTP routes: Dask's defaults plus its HTTP API, which the operator calls
#: (``/api/v1/adaptive_target``, ``retire_workers``, ``check_idle`` on the dashboard port).
#: Without it the operator falls back to the Dask RPC on ``tcp://``, which a TLS scheduler
#: refuses, and the autoscaler would stop working.
SCHEDULER_HTTP_ROUTES = (
    "distributed.http.scheduler.api",
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.proxy",
    "distributed.http.statics",
)


def tls_secret_name(name: str) -> str:
    """The Secret holding cluster ``name``'s TLS credentials."""
    return f"{name}-tls"


def tls_args() -> list[str]:
    """``dask scheduler`` / ``dask worker`` options: TLS with the mounted credentials (both
    then require encryption and a certificate signed by the cluster's CA from every peer)."""
    return ["--protocol", "tls", "--tls-ca-file", f"{TLS_MOUNT}/ca.pem",
            "--tls-cert", f"{TLS_MOUNT}/cert.pem", "--tls-key", f"{TLS_MOUNT}/key.pem"]


def scheduler_service_address(name: str, namespace: str) -> str:
    """The scheduler's in-cluster address as the workers dial it (the operator would set
    ``tcp://`` here; with the variable already in the pod it leaves ours)."""
    return f"tls://{name}-scheduler.{namespace}.svc.cluster.local:{SCHEDULER_PORT}"


def tls_secret_manifest(name: str, namespace: str, labels: dict[str, str],
                        credentials: dict[str, str] | None = None) -> dict[str, Any]:
    """The Secret with cluster ``name``'s credentials (``credentials`` as a lease's
    ``client`` field has them; ``None`` renders placeholders, for ``render``)."""
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": tls_secret_name(name), "namespace": namespace,
                     "labels": {**labels, "dask.org/cluster-name": name}},
        "type": "Opaque",
    }
    if credentials is None:
        secret["stringData"] = dict.fromkeys(TLS_KEYS, TLS_PLACEHOLDER)
    else:
        secret["data"] = {key: base64.b64encode(credentials[field].encode()).decode()
                          for key, field in TLS_KEYS.items()}
    return secret


def _mount_tls(pod: dict[str, Any], name: str) -> None:
    pod["volumes"] = [{"name": TLS_VOLUME, "secret": {"secretName": tls_secret_name(name)}}]
    pod["containers"][0]["volumeMounts"] = [
        {"name": TLS_VOLUME, "mountPath": TLS_MOUNT, "readOnly": True}]


#: Tolerations added to GPU workers so they may land on tainted GPU nodes.
GPU_TOLERATION_EFFECTS = ("NoSchedule",)
#: ``kubernetes.spot: true``: the node labels that mark spot capacity on each cloud (any one
#: of them will do: node-affinity terms are ORed) and the taints those clouds put on it.
#: GKE: https://cloud.google.com/kubernetes-engine/docs/concepts/spot-vms
#: EKS managed node groups: https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html
#: AKS: https://learn.microsoft.com/azure/aks/spot-node-pool
SPOT_NODE_LABELS: tuple[tuple[str, str], ...] = (
    ("cloud.google.com/gke-spot", "true"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
)
SPOT_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot",
     "effect": "NoSchedule"},
)


def spot_affinity() -> dict[str, Any]:
    """A node affinity that requires one of the spot labels of :data:`SPOT_NODE_LABELS`."""
    terms = [{"matchExpressions": [{"key": k, "operator": "In", "values": [v]}]}
             for k, v in SPOT_NODE_LABELS]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def kubernetes_options(settings: Settings, namespace: str | None = None) -> KubernetesSettings:
    """The ``kubernetes`` settings with the namespace resolved: ``namespace`` if given, else
    the configured one, else ``default`` (parsing and checks are ``config.py``'s)."""
    chosen = namespace or settings.kubernetes.namespace or "default"
    return replace(settings.kubernetes, namespace=chosen)


def resolve_image(spec: ClusterSpec, options: KubernetesSettings) -> str:
    """The worker image: the spec's, the configured one, else the notebook's own image.

    JupyterHub's KubeSpawner sets ``JUPYTER_IMAGE_SPEC`` (and ``JUPYTER_IMAGE``) in the
    notebook pod, so by default workers run exactly the notebook's environment.
    """
    image = spec.image or options.image
    image = image or os.environ.get("JUPYTER_IMAGE_SPEC") or os.environ.get("JUPYTER_IMAGE")
    if not image:
        raise ConfigError(
            "no worker image: pass --image IMAGE (jupyter-elastic render), set "
            "jupyter-elastic.kubernetes.image, or set JUPYTER_IMAGE_SPEC (JupyterHub sets it to "
            "the notebook's image, the default); none is set here"
        )
    return str(image)


_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(text: str) -> str:
    """``text`` made into a valid label value (<= 63 characters, alphanumeric at both ends)."""
    value = _LABEL_VALUE.sub("-", str(text))[:63].strip("-._")
    return value or "none"


def quantity(nbytes: int) -> str:
    """Bytes as a Kubernetes quantity, in Gi or Mi when exact."""
    for unit, size in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if nbytes % size == 0:
            return f"{nbytes // size}{unit}"
    return str(int(nbytes))


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in sorted(env.items())]


def worker_resource(spec: ClusterSpec) -> tuple[str, float]:
    """The Dask worker resource a worker offers: ``("GPU", n)`` or ``("CELL", 1)``."""
    if spec.gpus_per_worker > 0:
        return GPU_RESOURCE, float(max(1, int(spec.gpus_per_worker)))
    return CPU_RESOURCE, 1.0


def cluster_labels(spec: ClusterSpec, options: KubernetesSettings) -> dict[str, str]:
    """Labels on every object of the cluster: owner, notebook session, ours, the admin's."""
    labels = dict(options.labels)
    labels.update(spec.labels)
    labels.update(MANAGED_BY)
    labels[OWNER_LABEL] = label_value(spec.owner)
    if spec.session:
        labels[SESSION_LABEL] = label_value(spec.session)
    return labels


def cluster_manifest(
    spec: ClusterSpec, options: KubernetesSettings, *, replicas: int = 0
) -> dict[str, Any]:
    """The ``DaskCluster`` for ``spec``, with ``replicas`` workers to begin with.

    GPUs are requested on the worker container only (requests equal limits, as Kubernetes
    requires for extended resources); ``--gpu-type`` becomes a node selector on the
    configured label; the scheduler runs our preload that keeps workers until the cluster
    has been idle for ``idle-timeout``.
    """
    image = resolve_image(spec, options)
    labels = cluster_labels(spec, options)
    resource, slots = worker_resource(spec)
    has_gpu = resource == GPU_RESOURCE
    env = {**options.env, **spec.env}
    annotations = {OWNER_LABEL: spec.owner}
    if spec.session:
        annotations[SESSION_LABEL] = spec.session

    worker_limits: dict[str, Any] = {
        "cpu": str(spec.cpus_per_worker),
        "memory": quantity(spec.memory_per_worker),
    }
    if has_gpu:
        worker_limits[options.gpu_resource] = str(int(slots))
    worker_pod: dict[str, Any] = {
        "restartPolicy": "Always",
        "containers": [
            {
                "name": "worker",
                "image": image,
                "args": [
                    "dask", "worker",
                    "--name", "$(DASK_WORKER_NAME)",
                    "--nthreads", str(spec.cpus_per_worker),
                    "--memory-limit", str(spec.memory_per_worker),
                    "--resources", f"{resource}={slots:g}",
                    "--preload", WORKER_PRELOAD,
                    "--dashboard-address", str(WORKER_DASHBOARD_PORT),
                    *tls_args(),
                ],
                "env": _env_list(
                    {**env, WORKER_ENV: "1", "MPLBACKEND": "agg",
                     "DASK_SCHEDULER_ADDRESS": scheduler_service_address(
                         spec.name, options.namespace or "default")}
                ),
                "resources": {"requests": dict(worker_limits), "limits": dict(worker_limits)},
                "ports": [
                    {"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}
                ],
            }
        ],
    }
    node_selector = dict(options.node_selector)
    tolerations = list(options.tolerations)
    if has_gpu:
        if spec.gpu_type:
            node_selector[options.gpu_type_label] = spec.gpu_type
        known = {(t.get("key"), t.get("effect")) for t in tolerations}
        for effect in GPU_TOLERATION_EFFECTS:
            if (options.gpu_resource, effect) not in known:
                tolerations.append(
                    {"key": options.gpu_resource, "operator": "Exists", "effect": effect}
                )
    if options.spot:
        known = {(t.get("key"), t.get("effect")) for t in tolerations}
        tolerations += [dict(t) for t in SPOT_TOLERATIONS if (t["key"], t["effect"]) not in known]
        worker_pod["affinity"] = spot_affinity()
    if node_selector:
        worker_pod["nodeSelector"] = node_selector
    if tolerations:
        worker_pod["tolerations"] = tolerations

    scheduler_pod: dict[str, Any] = {
        "containers": [
            {
                "name": "scheduler",
                "image": image,
                "args": [
                    "dask", "scheduler",
                    "--host", "0.0.0.0",
                    "--port", str(SCHEDULER_PORT),
                    "--dashboard-address", f":{DASHBOARD_PORT}",
                    "--preload", SCHEDULER_PRELOAD,
                    *tls_args(),
                ],
                "env": _env_list(
                    {
                        **env,
                        # a cell whose worker dies fails; only --retries re-runs it
                        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
                        "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": repr(list(SCHEDULER_HTTP_ROUTES)),
                        IDLE_TIMEOUT_ENV: f"{spec.idle_timeout:g}",
                        RESOURCE_ENV: resource,
                        SLOTS_ENV: f"{slots:g}",
                    }
                ),
                "resources": copy.deepcopy(SCHEDULER_RESOURCES),
                "ports": [
                    {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
                    {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
                ],
                "readinessProbe": {
                    "httpGet": {"port": "http-dashboard", "path": "/health"},
                    "initialDelaySeconds": 0,
                    "periodSeconds": 1,
                    "timeoutSeconds": 300,
                },
                "livenessProbe": {
                    "httpGet": {"port": "http-dashboard", "path": "/health"},
                    "initialDelaySeconds": 15,
                    "periodSeconds": 20,
                },
            }
        ],
    }
    _mount_tls(worker_pod, spec.name)
    _mount_tls(scheduler_pod, spec.name)
    # the scheduler's own placement (a small CPU pod: not where the GPU workers go)
    if options.scheduler_node_selector:
        scheduler_pod["nodeSelector"] = dict(options.scheduler_node_selector)
    if options.scheduler_tolerations:
        scheduler_pod["tolerations"] = [dict(t) for t in options.scheduler_tolerations]
    if options.service_account:
        worker_pod["serviceAccountName"] = options.service_account
        scheduler_pod["serviceAccountName"] = options.service_account

    return {
        "apiVersion": API_VERSION,
        "kind": "DaskCluster",
        "metadata": {
            "name": spec.name,
            "namespace": options.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "idleTimeout": 0,  # the control plane decides when the scheduler goes
            "scheduler": {
                "metadata": {"labels": dict(labels)},
                "spec": scheduler_pod,
                "service": {
                    "type": options.scheduler_service_type,
                    "selector": {
                        "dask.org/cluster-name": spec.name,
                        "dask.org/component": "scheduler",
                    },
                    "ports": [
                        {"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT,
                         "targetPort": "tcp-comm"},
                        {"name": "http-dashboard", "protocol": "TCP", "port": DASHBOARD_PORT,
                         "targetPort": "http-dashboard"},
                    ],
                },
            },
            "worker": {
                "replicas": int(replicas),
                "metadata": {"labels": {**labels, **({KUEUE_QUEUE_LABEL: options.queue_name}
                                                     if options.queue_name else {})}},
                "spec": worker_pod,
            },
        },
    }


def autoscaler_manifest(
    name: str, namespace: str, minimum: int, maximum: int, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ``DaskAutoscaler`` that keeps the cluster's default worker group in [min, max]."""
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskAutoscaler",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**(labels or {}), "dask.org/cluster-name": name,
                       "dask.org/component": "autoscaler"},
        },
        "spec": {"cluster": name, "minimum": int(minimum), "maximum": int(maximum)},
    }


def render(spec: ClusterSpec, options: KubernetesSettings) -> list[dict[str, Any]]:
    """Every object the backend creates for ``spec``, in creation order (the TLS Secret
    with placeholders: its credentials are made when the cluster starts)."""
    cluster = cluster_manifest(spec, options, replicas=min(1, spec.max_workers))
    namespace = options.namespace or "default"
    autoscaler = autoscaler_manifest(
        spec.name, namespace, spec.min_workers, spec.max_workers,
        labels=cluster["metadata"]["labels"],
    )
    return [tls_secret_manifest(spec.name, namespace, cluster["metadata"]["labels"]), cluster, autoscaler]


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """Manifests as multi-document YAML (``kubectl apply -f -`` reads it)."""
    return yaml.safe_dump_all(manifests, sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------- validation
_CRD_FILES = {"DaskCluster": "daskcluster.yaml", "DaskWorkerGroup": "daskworkergroup.yaml",
              "DaskAutoscaler": "daskautoscaler.yaml"}
_K8S_VERSION = "1.33.0"


@functools.cache
def crd(kind: str) -> dict[str, Any]:
    """The operator's CustomResourceDefinition for ``kind``, from the dask-kubernetes package."""
    base = resources.files("dask_kubernetes.operator.deployment.helm")
    path = base / "dask-kubernetes-operator" / "crds" / _CRD_FILES[kind]
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def _strict(schema: Any) -> Any:
    """An openAPI v3 schema with unknown fields forbidden where the schema lists properties."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd_validator(kind: str) -> Any:
    import jsonschema

    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema = _strict(copy.deepcopy(schema))
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"type": "string", "enum": [API_VERSION]}
    schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
    return jsonschema.Draft7Validator(schema)


def _core(kind: str, api_version: str, name: str, spec: dict[str, Any], where: str) -> None:
    import kubernetes_validate

    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}
    try:
        kubernetes_validate.validate(obj, _K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise ConfigError(f"invalid {where} ({kind} schema): {path}: {exc.message}") from None


_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _check_labels(labels: dict[str, Any], where: str) -> None:
    """Kubernetes' rules for label (and node-selector) keys and values; the API server
    answers 422 to anything else, and the schemas above do not check them."""
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if not name or not _LABEL_NAME.match(name) or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            raise ConfigError(
                f"{where}: {key!r} is not a valid label key; use [prefix/]name with letters, "
                "digits, '-', '_', '.' (name up to 63 characters)"
            )
        if not isinstance(value, str) or not _LABEL_NAME.match(value):
            raise ConfigError(
                f"{where}: the value {value!r} of {key!r} is not a valid label value; use up to 63 "
                "letters, digits, '-', '_', '.', starting and ending with a letter or digit"
            )


def _all_label_maps(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}" if path else key
                if key in ("labels", "nodeSelector") and isinstance(value, dict):
                    found.append((here, value))
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(manifest, "")
    return found


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise ConfigError naming the field if ``manifest`` breaks the CRD or core schemas."""
    kind = manifest.get("kind")
    if kind == "Secret":
        for where, labels in _all_label_maps(manifest):
            _check_labels(labels, f"invalid Secret: {where}")
        import kubernetes_validate

        try:
            kubernetes_validate.validate(manifest, _K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise ConfigError(f"invalid Secret: {'.'.join(str(p) for p in exc.path)}: {exc.message}") from None
        return
    if kind not in _CRD_FILES:
        raise ConfigError(f"not a Dask operator resource: kind={kind!r}")
    for where, labels in _all_label_maps(manifest):
        _check_labels(labels, f"invalid {kind}: {where}")
    errors = sorted(_crd_validator(kind).iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        path = ".".join(str(p) for p in first.path) or "(top)"
        raise ConfigError(f"invalid {kind} {manifest['metadata'].get('name')!r}: {path}: {first.message}")
    name = str(manifest["metadata"]["name"])
    spec = manifest["spec"]
    if kind == "DaskCluster":
        _core("Pod", "v1", name, spec["scheduler"]["spec"], "scheduler pod")
        _core("Service", "v1", name, spec["scheduler"]["service"], "scheduler service")
        _core("Pod", "v1", name, spec["worker"]["spec"], "worker pod")
    elif kind == "DaskWorkerGroup":
        _core("Pod", "v1", name, spec["worker"]["spec"], "worker pod")
