"""``jupyter-elastic``: render manifests, check the environment, see and stop clusters.

``render`` prints the Kubernetes objects a cluster would be made of (for review or GitOps);
``doctor`` checks local GPUs and versions and, for Kubernetes, credentials, the Dask
operator's CRDs, RBAC permissions and GPU nodes, and for Dask Gateway whether it answers,
which user it sees and that user's hub quota, saying what to fix; ``status`` and
``stop`` talk to a running Jupyter server's ``/jupyter-elastic/api`` (found in Jupyter's
list of running servers, with its token). Bad input is one line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import platform
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from .config import parse_gpus, whole
from .controlplane.remote import ApiClient
from .errors import BackendUnavailable, ConfigError, ElasticError
from .protocol import SERVER_TOKEN_ENV, SERVER_URL_ENV


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        return whole(text, "value", minimum=1)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _gpus(text: str) -> float:
    try:
        return parse_gpus(text, what="--gpus")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    # The module docstring's first paragraph, without its reStructuredText literal markup.
    parser = _Parser(prog="jupyter-elastic", description=__doc__.split("\n\n")[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    render = sub.add_parser("render", help="print the Kubernetes manifests a cluster would create")
    render.add_argument("--backend", default="kubernetes", choices=["kubernetes"])
    render.add_argument("--gpus", type=_gpus, help="GPUs per worker (0 = CPU-only workers)")
    render.add_argument("--gpu-type", help="GPU product, matched on the gpu-type-label node label")
    render.add_argument("--image", help="worker and scheduler image")
    render.add_argument("--namespace", help="namespace of the cluster")
    render.add_argument("--max-workers", type=_positive_int, help="upper bound for autoscaling")
    render.add_argument("--name", help="cluster name (default: a random elastic-... name)")

    doctor = sub.add_parser("doctor", help="check GPUs, versions and Kubernetes or gateway access")
    doctor.add_argument("--backend", choices=["local", "kubernetes", "gateway"], default=None,
                        help="also check this backend (default: the configured one)")

    for name, text in (("status", "list the clusters of a running Jupyter server"),
                       ("stop", "stop clusters of a running Jupyter server")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--server", help="server URL (default: the running Jupyter server)")
        p.add_argument("--token", help="server token (default: from the server's runtime file)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the API's JSON")
        else:
            p.add_argument("clusters", nargs="*", metavar="ID_OR_NAME")
            p.add_argument("--all", action="store_true", help="stop every cluster")
    return parser


# --------------------------------------------------------------------------- render
def cmd_render(args: argparse.Namespace) -> int:
    from .backends.kubernetes.manifests import (
        kubernetes_options,
        render,
        to_yaml,
        validate_manifest,
    )
    from .config import load_settings
    from .models import ClusterSpec

    settings = load_settings()
    overrides: dict[str, Any] = {"name": args.name, "backend": "kubernetes", "owner": getpass.getuser(),
                                 "gpu_type": args.gpu_type, "image": args.image,
                                 "namespace": args.namespace, "max_workers": args.max_workers}
    if args.gpus is not None:
        overrides["gpus_per_worker"] = float(max(1, int(args.gpus))) if args.gpus > 0 else 0.0
    spec = ClusterSpec.from_settings(settings, **overrides)
    if spec.min_workers > spec.max_workers:
        raise ConfigError(f"--max-workers {spec.max_workers} is below min-workers {spec.min_workers}")
    options = kubernetes_options(settings, namespace=args.namespace)
    manifests = render(spec, options)
    for manifest in manifests:
        validate_manifest(manifest)
    if args.gpus is not None and 0 < args.gpus and args.gpus != int(args.gpus):
        print(_fractional_gpus_note(args.gpus, spec.gpus_per_worker, options.gpu_resource), file=sys.stderr)
    if spec.gpu_type and spec.gpus_per_worker > 0:
        note = asyncio.run(_gpu_type_note(spec.gpu_type, options.gpu_type_label))
        if note:
            print(note, file=sys.stderr)
    sys.stdout.write(to_yaml(manifests))
    return 0


def _fractional_gpus_note(asked: float, per_pod: float, resource: str) -> str:
    """One line: what ``--gpus 0.5`` means on Kubernetes (pods get whole device resources)."""
    if resource == "nvidia.com/gpu":
        return (f"note: --gpus {asked:g}: Kubernetes gives a pod whole GPUs, so each worker pod asks for "
                f"{resource}: {per_pod:g} and {asked:g} is only a packing hint for cells sharing that worker; "
                "for a real GPU share set jupyter-elastic.kubernetes.gpu-resource to a MIG or time-slicing "
                "resource (e.g. nvidia.com/mig-1g.10gb)")
    return (f"note: --gpus {asked:g}: each worker pod asks for {resource}: {per_pod:g} "
            f"(jupyter-elastic.kubernetes.gpu-resource); {asked:g} is a packing hint for cells on that worker")


def gpu_label_values(nodes: list[dict[str, Any]], label: str) -> list[str]:
    """The distinct values of the node label ``label`` (the GPU type label) on ``nodes``."""
    return sorted({str(v) for n in nodes if (v := ((n.get("metadata") or {}).get("labels") or {}).get(label))})


async def _gpu_type_note(gpu_type: str, label: str) -> str | None:
    """A warning when no node of the current cluster carries ``label: gpu_type``; ``None``
    when one does, or when there is no cluster to ask (render works offline)."""
    from .backends.kubernetes.backend import get_json, kube_api

    try:
        api = await asyncio.wait_for(kube_api(), 5)
        nodes = (await asyncio.wait_for(get_json(api, "nodes"), 5) or {}).get("items", [])
    except Exception:
        return None
    values = gpu_label_values(nodes, label)
    if gpu_type in values:
        return None
    present = ", ".join(values) if values else "none"
    return (f"warning: --gpu-type {gpu_type}: no node of this cluster has {label}={gpu_type} "
            f"(values present: {present}); workers stay pending unless a node autoscaler adds such nodes")


# --------------------------------------------------------------------------- doctor
class _Report:
    def __init__(self) -> None:
        self.failed = 0

    def line(self, level: str, what: str, fix: str = "") -> None:
        if level == "FAIL":
            self.failed += 1
        print(f"[{level:>4}] {what}" + (f"\n       fix: {fix}" if fix else ""))


def _ver(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _doctor_local(report: _Report) -> None:
    from .backends.devices import detect_gpus

    report.line("ok", f"Python {platform.python_version()}, jupyter-elastic {_ver('jupyter-elastic') or '(source tree)'}")
    versions = {d: _ver(d) for d in ("dask", "distributed", "dask-kubernetes", "kr8s", "cupy-cuda12x",
                                     "cupy-cuda13x", "cupy")}
    if versions["dask"] != versions["distributed"]:
        report.line("FAIL", f"dask {versions['dask']} and distributed {versions['distributed']} differ",
                    "pip install -U dask distributed (workers need the same versions too)")
    else:
        report.line("ok", f"dask/distributed {versions['dask']}")
    gpus = detect_gpus()
    if gpus:
        report.line("ok", "local GPUs: " + ", ".join(f"{g.index}: {g.name}" for g in gpus))
    else:
        report.line("info", "no local GPU (the local backend runs %%gpu cells on CPU workers)")
    cupy_version = next((f"{d} {v}" for d, v in versions.items() if d.startswith("cupy") and v), None)
    if cupy_version is None:
        report.line("info", "CuPy is not installed here (GPU workers need it)",
                    "pip install 'jupyter-elastic[gpu]' in the worker image")
    else:
        try:
            from ._arrays.namespace import gpu_available

            usable = bool(gpu_available())
        except Exception:
            usable = False
        report.line("ok" if usable or not gpus else "warn",
                    f"{cupy_version}: {'usable' if usable else 'installed, no usable GPU here'}")


async def _doctor_kubernetes(report: _Report) -> None:
    from .backends.kubernetes.backend import check_operator, get_json, kube_api, translate
    from .backends.kubernetes.manifests import RBAC_RULES, kubernetes_options
    from .config import load_settings

    settings = load_settings()
    try:
        api = await kube_api()
        info = await api.version()
    except ElasticError as exc:
        report.line("FAIL", f"Kubernetes: {exc.args[0]}", exc.hint)
        return
    except Exception as exc:
        err = translate(exc, action="reach the Kubernetes API server")
        report.line("FAIL", f"Kubernetes: {err.args[0]}", err.hint)
        return
    namespace = settings.kubernetes.namespace or api.namespace or "default"
    options = kubernetes_options(settings, namespace=namespace)
    report.line("ok", f"Kubernetes API {api.auth.server} ({info.get('gitVersion')}), namespace {namespace}")
    try:
        await check_operator(api)
        report.line("ok", "Dask operator CRDs installed (daskclusters.kubernetes.dask.org)")
    except ElasticError as exc:
        report.line("FAIL", str(exc.args[0]), exc.hint)
    missing = []
    for group, resource, verbs in RBAC_RULES:
        plural, _, sub = resource.partition("/")
        for verb in verbs:
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                      "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb, "group": group,
                                                      "resource": plural, "subresource": sub}}}
            try:
                async with api.call_api("POST", version="authorization.k8s.io/v1",
                                        url="selfsubjectaccessreviews", content=json.dumps(review)) as r:
                    allowed = r.json().get("status", {}).get("allowed", False)
            except Exception as exc:
                report.line("warn", f"could not check RBAC ({translate(exc, action='check RBAC').args[0]})")
                allowed = True
            if not allowed:
                missing.append(f"{verb} {resource}" + (f" ({group})" if group else ""))
    if missing:
        report.line("FAIL", f"RBAC in namespace {namespace} is missing: {', '.join(missing)}",
                    "apply examples/kubernetes/rbac.yaml (Role + RoleBinding for the notebook's service account)")
    else:
        report.line("ok", f"RBAC allows every verb the backend uses in {namespace}")
    try:
        nodes = await get_json(api, "nodes")
        gpu_nodes = [n for n in (nodes or {}).get("items", [])
                     if int(str((n.get("status", {}).get("allocatable") or {}).get(options.gpu_resource, "0")) or 0) > 0]
        if gpu_nodes:
            types = sorted({(n["metadata"].get("labels") or {}).get(options.gpu_type_label, "?") for n in gpu_nodes})
            report.line("ok", f"{len(gpu_nodes)} node(s) offer {options.gpu_resource} "
                              f"({options.gpu_type_label}: {', '.join(types)})")
        else:
            report.line("warn", f"no node offers {options.gpu_resource} right now",
                        "fine if a cluster autoscaler adds GPU nodes on demand; otherwise install the "
                        "NVIDIA device plugin / GPU operator, or check gpu-resource")
        values = gpu_label_values((nodes or {}).get("items", []), options.gpu_type_label)
        if values:
            report.line("ok", f"--gpu-type values on this cluster's nodes ({options.gpu_type_label}): "
                              f"{', '.join(values)}")
        else:
            report.line("info", f"no node carries the GPU type label {options.gpu_type_label}",
                        "set jupyter-elastic.kubernetes.gpu-type-label to the label your GPU nodes have")
    except Exception as exc:
        report.line("info", f"cannot list nodes to check GPU capacity "
                            f"({translate(exc, action='list nodes').args[0]})")
    image = options.image or os.environ.get("JUPYTER_IMAGE_SPEC")
    if image:
        report.line("ok", f"worker image: {image}")
    else:
        report.line("FAIL", "no worker image configured and JUPYTER_IMAGE_SPEC is not set",
                    "set jupyter-elastic.kubernetes.image to an image with jupyter-elastic and CuPy")


def _limit(value: Any, unit: str) -> str:
    return f"no {unit} limit" if value is None else f"{value:g} {unit}"


async def _doctor_gateway(report: _Report) -> None:
    from .backends.gateway import GatewayBackend, translate
    from .config import load_settings
    from .protocol import QUOTA_ROUTE

    backend = GatewayBackend(load_settings())
    try:
        gateway = backend._gateway()
    except ElasticError as exc:
        report.line("FAIL", exc.message)
        return
    try:
        try:
            clusters = await backend._call(gateway, gateway.list_clusters(),
                                           "list your Dask Gateway clusters")
        except ElasticError as exc:
            report.line("FAIL", exc.message)
            return
        try:
            resp = await asyncio.wait_for(gateway._request("GET", gateway.address + QUOTA_ROUTE),
                                          backend.options.connect_timeout)
            quota = await resp.json()
        except ValueError:  # 404: a gateway without the jupyter-elastic quota module
            quota = None
        except Exception as exc:
            report.line("FAIL", translate(exc, backend.options, gateway.address,
                                          action="read your quota").message)
            return
        running = f"{len(clusters)} cluster(s) of yours running or pending"
        if quota is None:
            who = backend.options.username or "(this gateway does not say)"
            report.line("ok", f"Dask Gateway at {gateway.address} answers; user {who}; {running}")
            report.line("info", "this gateway reports no quota (it does not load "
                        "jupyter_elastic.hub.gateway): any limits are the admin's own",
                        "ask the hub admin; docs/jupyterhub.md shows how to enforce quotas "
                        "at the gateway")
            return
        groups = ", ".join(quota.get("groups") or []) or "none"
        report.line("ok", f"Dask Gateway at {gateway.address} answers as user "
                          f"{quota.get('user')} (groups: {groups}); {running}")
        limits, holding = quota.get("limits") or {}, quota.get("holding") or {}
        types = limits.get("gpu_types")
        report.line("ok", f"quota ({limits.get('source')}): {_limit(limits.get('gpus'), 'GPU')}, "
                          f"{_limit(limits.get('workers'), 'worker')}, GPU types "
                          f"{', '.join(types) if types is not None else 'any'}; holding "
                          f"{holding.get('gpus', 0):g} GPU(s) in {holding.get('workers', 0)} "
                          f"worker(s); idle timeout {quota.get('idle_timeout', 0):g}s (at most "
                          f"{quota.get('max_idle_timeout', 0):g}s), lease "
                          f"{quota.get('lease_ttl', 0):g}s; for more ask {quota.get('contact')}")
    finally:
        await gateway.close()


def cmd_doctor(args: argparse.Namespace) -> int:
    from .config import load_settings

    report = _Report()
    _doctor_local(report)
    backend = args.backend or load_settings().backend
    if backend == "kubernetes":
        asyncio.run(_doctor_kubernetes(report))
    elif backend == "gateway":
        asyncio.run(_doctor_gateway(report))
    print("all checks passed" if not report.failed else f"{report.failed} check(s) failed")
    return 1 if report.failed else 0


# --------------------------------------------------------------------------- status / stop
def _servers(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.server:
        return [(args.server, args.token or "")]
    url = os.environ.get(SERVER_URL_ENV)
    if url:
        return [(url, args.token or os.environ.get(SERVER_TOKEN_ENV, ""))]
    return [(info["url"], args.token or info.get("token", "")) for info in running_servers()]


def running_servers() -> list[dict[str, Any]]:
    """The running Jupyter servers, from the ``jpserver-*.json`` files each one writes in
    Jupyter's runtime directory (read directly: importing ``jupyter_server.serverapp`` for
    its ``list_running_servers`` takes seconds). Files of servers that are gone are skipped."""
    import glob

    from jupyter_core.paths import jupyter_runtime_dir

    found = []
    pattern = os.path.join(jupyter_runtime_dir(), "jpserver-*.json")
    for path in sorted(glob.glob(pattern), key=_mtime, reverse=True):  # newest first
        try:
            with open(path, encoding="utf-8") as f:
                info = json.loads(f.read(1 << 20))
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            continue
        if isinstance(info.get("pid"), int) and not _alive(info["pid"]):
            continue
        found.append(info)
    return found


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or not a pid we can check: let the request tell
    return True


def _api(args: argparse.Namespace) -> tuple[ApiClient, list[dict[str, Any]]]:
    """The first running server that answers our API, and its cluster list."""
    tried = []
    for base, token in _servers(args):
        api = ApiClient(base, token, timeout=30)
        try:
            return api, api.request("GET", "clusters")["clusters"]
        except (ElasticError, ValueError, KeyError, TypeError) as exc:
            status = getattr(exc, "http_status", None)
            tried.append(f"{base} ({f'{status} ' if status else ''}{getattr(exc, 'message', exc)})")
    if not tried:
        raise ElasticError("no running Jupyter server found",
                           hint="start `jupyter lab`, or pass --server URL --token TOKEN")
    raise ElasticError("no running Jupyter server answered /jupyter-elastic/api: " + "; ".join(tried),
                       hint="check that the jupyter-elastic server extension is enabled and the token is right")


def cmd_status(args: argparse.Namespace) -> int:
    api, clusters = _api(args)
    base = api.base
    if args.json:
        print(json.dumps({"clusters": clusters}, indent=2))
        return 0
    if not clusters:
        print(f"no clusters on {base}")
        return 0
    rows = [("ID", "NAME", "BACKEND", "STATUS", "WORKERS", "GPUS", "IDLE", "COST")]
    for c in clusters:
        usage = c.get("usage") or {}
        rows.append((c.get("id", ""), c.get("name", ""), c.get("backend", ""), c.get("status", ""),
                     str(c.get("workers", 0)), str(c.get("gpus", 0)),
                     f"{float(c.get('idle_seconds') or 0):.0f}s",
                     f"{float(usage.get('cost') or 0):.4f} {str(c.get('currency') or '')[:8]}".rstrip()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if not args.clusters and not args.all:
        raise ConfigError("give the id or name of the cluster to stop, or --all")
    api, clusters = _api(args)
    if args.all:
        chosen = clusters
    else:
        chosen = []
        for wanted in args.clusters:
            match = [c for c in clusters if wanted in (c.get("id"), c.get("name"))]
            if not match:
                known = ", ".join(f"{c.get('name')} ({c.get('id')})" for c in clusters) or "none"
                raise ConfigError(f"no cluster with id or name {wanted!r}; running: {known}")
            chosen.extend(match)
    for c in chosen:
        try:
            # a backend may take minutes to delete a cluster (Kubernetes waits up to 120 s)
            api.request("DELETE", f"clusters/{ApiClient.quote(str(c['id']))}", timeout=600)
        except BackendUnavailable as exc:
            raise ElasticError(
                f"could not stop {c.get('name')}: the server did not answer ({exc.args[0]})",
                hint="check it with `jupyter-elastic status`; it may still be stopping",
            ) from None
        except ElasticError as exc:
            raise ElasticError(f"could not stop {c.get('name')}: {exc.message}") from None
        print(f"stopped {c.get('name')} ({c.get('id')})")
    if not chosen:
        print("no clusters to stop")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    commands = {"render": cmd_render, "doctor": cmd_doctor, "status": cmd_status, "stop": cmd_stop}
    try:
        return commands[args.command](args)
    except ElasticError as exc:
        print(f"jupyter-elastic {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
