"""The real Dask operator (dask-kubernetes' kopf controller) against the API server double,
with the process kubelet running its Pods. One per test session: kopf takes seconds to start."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .apiserver import APIServer
from .kubelet import ProcessKubelet

KOPF = importlib.util.find_spec("kopf") is not None
WATCHED = {("kubernetes.dask.org/v1", p) for p in ("daskclusters", "daskworkergroups", "daskautoscalers",
                                                   "daskjobs")} | {("v1", "services"), ("v1", "pods")}


class RealOperator:
    def __init__(self) -> None:
        self.server = APIServer().start()
        self.kubelet = ProcessKubelet(self.server).start()
        self.dir = tempfile.mkdtemp(prefix="real-operator-")
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write(self.server.kubeconfig())
        self.log_path = os.path.join(self.dir, "kopf.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> RealOperator:
        env = {**os.environ, **self.kubelet.env(), "KUBECONFIG": self.kubeconfig}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                 "-m", "dask_kubernetes.operator.controller"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kopf exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if WATCHED <= {(gv, p) for gv, p, _ in self.server.watching}:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"kopf did not start watching within {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.kubelet.stop()
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)
