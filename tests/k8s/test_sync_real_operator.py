"""``%%gpu --sync`` on the real Dask operator and the process kubelet: the worker pods run
from a second virtualenv (their "image") that lacks what the notebook has — a package the
notebook installed and a local module from the notebook's folder. The parity check names
them before the cell runs; ``--sync`` installs them with Dask's own plugins (PipInstall from
a wheel built in the test's temp dir, no network; UploadFile)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import uuid
from typing import Any

import pytest
import yaml
from elastic_testing import wait_for
from kernel_harness import Kernel
from sync_support import build_wheel, pip_install_target

pytest.importorskip("kopf", reason="kopf is not installed: the real Dask operator cannot run")

DASK = "kubernetes.dask.org/v1"
pytestmark = [pytest.mark.k8s, pytest.mark.kernel, pytest.mark.timeout(600)]


def slim_venv(where: Any) -> str:
    """A virtualenv layered on this one (``site.addsitedir`` of its site-packages): the same
    dask and jupyter-elastic, but what pip installs there stays there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = os.path.join(str(where), "bin", "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "_parent_env.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return python


def logs(op: Any) -> str:
    """The live pods' and the operator's last log lines, for a failure message."""
    pods = [f"== {name}\n{(op.kubelet.logs('jhub', name) or '')[-2000:]}" for name in op.kubelet.live()]
    return "\n".join(pods) + "\n== kopf\n" + op.log()[-2000:]


def cell(k: Kernel, op: Any, code: str) -> Any:
    """Run ``code``; a cell that does not finish fails with the pods' and operator's logs."""
    try:
        return k.run(code, timeout=240)
    except TimeoutError:
        raise AssertionError("cell did not finish:\n" + logs(op)) from None


def test_sync_installs_the_notebooks_package_and_local_module_on_worker_pods(
        real_k8s: Any, tmp_path: Any, no_leaked_processes: Any) -> None:
    op = real_k8s
    wheels = tmp_path / "wheels"
    wheel = build_wheel(wheels)
    pip_install_target(wheel, tmp_path / "notebook-site")  # the notebook's %pip install
    image_python = slim_venv(tmp_path / "worker-image")
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    (notebook / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    config_dir = tmp_path / "dask"
    config_dir.mkdir()
    (config_dir / "jupyter-elastic.yaml").write_text(yaml.safe_dump({"jupyter-elastic": {
        "backend": "kubernetes", "idle-timeout": "60s", "max-workers": 1,
        "worker": {"gpus": 1, "cpus": 1, "memory": "2GiB"},
        "kubernetes": {
            "namespace": "jhub", "image": "registry.example/elastic-worker:1.0",
            "scheduler-service-type": "LoadBalancer", "start-timeout": "200s", "connect-timeout": "10s",
            # the workers' image: its own Python, and pip pointed at the team's package
            # index (here a folder of wheels)
            "env": {"K8S_DOUBLE_PYTHON": image_python, "PIP_NO_INDEX": "1",
                    "PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        },
    }}))
    shim = op.kubelet.env()
    env = {"DASK_CONFIG": str(config_dir), "KUBECONFIG": op.kubeconfig,
           "JPY_SESSION_NAME": f"/home/alice/sync-{uuid.uuid4().hex[:4]}.ipynb",
           "K8S_DOUBLE_HOSTS": shim["K8S_DOUBLE_HOSTS"],
           "PYTHONPATH": os.pathsep.join([shim["PYTHONPATH"], str(tmp_path / "notebook-site")])}
    source = "import tinyextra\nimport helpers\nanswer = (tinyextra.VALUE, helpers.double(21))\nanswer"
    k = Kernel(env=env, cwd=str(notebook))
    name = None
    try:
        run = cell(k, op, "%%gpu\n" + source)
        text = run.error_text()
        assert run.status == "error" and "the cell imports" in text, text + logs(op)
        assert ("the cell imports `tinyextra` (tiny-extra 0.3 in the notebook), `helpers` (a local "
                "module: helpers.py in the notebook's folder), which the workers do not have") in text, text
        assert "Traceback" not in text and k.value("'answer' in globals()") is False
        name = k.value("get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]['name']")

        run = cell(k, op, "%%gpu --sync\n" + source)
        assert run.status == "ok", run.error_text()
        assert run.result["text/plain"] == "('tiny', 42)"
        assert ("jupyter-elastic: --sync uploaded helpers.py; pip installed tiny-extra==0.3 "
                "on the workers") in run.stderr, run.stderr
        # pip installed into the worker image's environment, not into the notebook's
        image_site = subprocess.run([image_python, "-c", "import tinyextra; print(tinyextra.__file__)"],
                                    check=True, capture_output=True, text=True).stdout
        assert image_site.startswith(str(tmp_path / "worker-image"))
        assert importlib.util.find_spec("tinyextra") is None
        # the plugins stay registered with the scheduler: the next cell just runs
        again = cell(k, op, "%%gpu\nimport helpers\nhelpers.double(4)")
        assert again.status == "ok" and again.result["text/plain"] == "8", again.error_text()
    finally:
        k.shutdown()
    server = op.server
    if name is not None:
        wait_for(lambda: server.sync(server.get, DASK, "daskclusters", name, "jhub") is None,
                 timeout=60, what="the DaskCluster deleted when the kernel shut down")
        wait_for(lambda: not [p for p in op.kubelet.live() if p.startswith(name)], timeout=60,
                 what="every pod process of the cluster gone")
