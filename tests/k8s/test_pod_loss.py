"""``%%gpu`` in a real kernel on the real Dask operator (kopf) and the process kubelet: a
worker pod deleted mid-cell, and a later scale-up blocked by a ResourceQuota.

The pod-loss test is skipped, with the reason, when kopf is not installed. The delays printed (``-s``) are
measurements, not assertions."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from kernel_harness import Kernel

DASK = "kubernetes.dask.org/v1"
pytestmark = [pytest.mark.k8s, pytest.mark.kernel, pytest.mark.timeout(300),
              pytest.mark.usefixtures("no_leaked_processes")]


def kernel_env(op: Any, tmp_path: Any, notebook: str) -> dict[str, str]:
    config_dir = tmp_path / "dask"
    config_dir.mkdir()
    (config_dir / "jupyter-elastic.yaml").write_text(yaml.safe_dump({"jupyter-elastic": {
        "backend": "kubernetes", "idle-timeout": "5m", "max-workers": 2,
        "worker": {"gpus": 1, "cpus": 1, "memory": "1GiB"},
        "kubernetes": {"image": "registry.example/elastic-notebook:1.0",
                       "scheduler-service-type": "LoadBalancer", "pending-timeout": "60s",
                       "start-timeout": "120s", "connect-timeout": "10s"},
    }}))
    return {**op.kubelet.env(), "DASK_CONFIG": str(config_dir), "KUBECONFIG": op.kubeconfig,
            "JPY_SESSION_NAME": f"/home/alice/{notebook}.ipynb"}


def cluster_name(k: Kernel) -> str:
    return str(k.value("get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]['name']"))


def pods(op: Any, cluster: str) -> list[dict[str, Any]]:
    return op.server.sync(op.server.list, "v1", "pods", "jhub",
                          f"dask.org/cluster-name={cluster},dask.org/component=worker")


def stopped(k: Kernel, op: Any, name: str) -> None:
    """Shut the kernel down (its embedded control plane deletes the DaskCluster) and wait
    until nothing of the cluster is left in the API or as a process."""
    k.shutdown()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = op.server.sync(op.server.get, DASK, "daskclusters", name, "jhub")
        procs = [n for n in op.kubelet.live() if n.startswith(f"{name}-")]
        if left is None and not procs:
            return
        time.sleep(0.2)
    raise AssertionError(f"cluster {name} still there after the kernel shut down: {procs}")


class DeleteOnStart:
    """Deletes the worker pod a cell names (``started POD``) the first time it says so,
    through the API server, as a spot reclaim or ``kubectl delete pod`` would; once the
    pod's processes are gone it lets the cell finish (the release file)."""

    def __init__(self, op: Any, release: Any) -> None:
        self.op, self.release = op, release
        self.deleted_at: float | None = None
        self.pod: str | None = None

    def __call__(self, msg: dict[str, Any]) -> None:
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if self.pod is None and text.startswith("started "):
            self.pod = text.split()[1]
            self.deleted_at = time.monotonic()
            self.op.server.sync(self.op.server.delete, "v1", "pods", self.pod, "jhub")
            deadline = time.monotonic() + 30
            while self.pod in self.op.kubelet.live() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.release.write_text("go")


def long_cell(release: Any) -> str:
    """A cell that binds a name, says which pod runs it, and waits for ``release``."""
    return ("import os, time\npartial = 'half'\nprint('started', os.environ['HOSTNAME'], flush=True)\n"
            f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.1)\n"
            "answer = 6 * 7\nanswer")


def test_worker_pod_deleted_mid_cell_is_rerun_once_with_a_note_and_retries_0_fails_clearly(
        real_k8s: Any, tmp_path: Any) -> None:
    op = real_k8s
    k = Kernel(env=kernel_env(op, tmp_path, "preempt"))
    name = None
    try:
        first = k.run("%%gpu\nwarm = 1\nwarm", timeout=180)
        assert first.status == "ok", first.error_text()
        name = cluster_name(k)

        # 1. default: the pod is deleted mid-cell -> one note, the cell re-run on another worker
        deleter = DeleteOnStart(op, tmp_path / "release-1")
        run = k.run("%%gpu\n" + long_cell(deleter.release), timeout=240, on_message=deleter)
        assert deleter.pod is not None
        assert run.status == "ok", run.error_text()
        assert run.result is not None and run.result["text/plain"] == "42"
        notes = [line for line in run.stderr.splitlines() if "lost its worker" in line]
        assert len(notes) == 1, run.stderr
        note = notes[0]
        assert "attempt 1 of 2" in note and deleter.pod in note and "process-node" in note, note
        assert "deleted through the Kubernetes API" in note and "--retries 0" in note, note
        starts = [m for m in run.messages if m["msg_type"] == "stream" and "started " in m["content"]["text"]]
        assert len(starts) == 2 and deleter.pod not in starts[1]["content"]["text"], "re-run on another pod"
        assert deleter.deleted_at is not None
        note_at = next(m["t"] for m in run.messages if m["msg_type"] == "stream"
                       and "lost its worker" in m["content"]["text"])
        print(f"\npod deleted -> note in the cell: {note_at - deleter.deleted_at:.2f}s; "
              f"-> second attempt started: {starts[1]['t'] - deleter.deleted_at:.2f}s")
        rows = k.value("[(r['status'], r['error']) for r in "
                       "get_ipython().run_line_magic('gpu', 'history --json')[-2:]]")
        assert rows[0][0] == "error" and rows[0][1].startswith("attempt 1 of 2: WorkerLost:"), rows
        assert deleter.pod in rows[0][1] and rows[1] == ("ok", None), rows
        assert k.value("answer") == 42

        # 2. --retries 0: the same loss is one clear line naming the pod and why; nothing bound
        k.run("del partial")
        deleter = DeleteOnStart(op, tmp_path / "release-2")
        run = k.run("%%gpu --retries 0\n" + long_cell(deleter.release), timeout=240, on_message=deleter)
        assert run.status == "error" and deleter.pod is not None
        text = run.error_text()
        assert "WorkerLost" in text and deleter.pod in text and "process-node" in text, text
        assert "deleted through the Kubernetes API" in text and "lost its worker" not in run.stderr, text
        assert "Traceback" not in text, text
        assert k.value("'partial' in globals()") is False, "nothing of the failed cell is bound"
        row = k.value("get_ipython().run_line_magic('gpu', 'history --json')[-1]")
        assert row["status"] == "error" and deleter.pod in row["error"], row

        # the next cell works (on the pod the Deployment made again)
        after = k.run("%%gpu\n1 + 1", timeout=180)
        assert after.status == "ok", after.error_text()
    finally:
        if name is None:
            k.shutdown()
        else:
            stopped(k, op, name)


def test_later_scale_up_blocked_by_quota_is_a_line_in_the_waiting_cell(k8s: Any, tmp_path: Any) -> None:
    """The stand-in operator (the process kubelet has no quota admission): the second
    worker's pod is refused with the ReplicaSet controller's FailedCreate event."""
    from .test_magic_kubernetes import kernel_env as standin_env

    refused: list[float] = []
    event = k8s.server.event

    def recording(involved: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        if reason == "FailedCreate":
            refused.append(time.monotonic())
        event(involved, reason, message, type_)

    k8s.server.event = recording  # type: ignore[method-assign]
    k = Kernel(env=standin_env(k8s, tmp_path))
    release = tmp_path / "release"
    try:
        first = k.run("%%gpu\nwarm = 1\nwarm", timeout=120)
        assert first.status == "ok", first.error_text()
        k8s.operator.gpu_quota = 1
        # Another cell holds the only worker (as a detached cell would): a task of the
        # session's own client, counted by the scheduler as a GPU cell.
        held = k.run(
            "import os, time\n"
            "def _hold(path):\n"
            "    while not os.path.exists(path):\n"
            "        time.sleep(0.1)\n"
            "    return 'held'\n"
            "_s = __import__('jupyter_elastic.kernel.magics', fromlist=['_'])._magics.session\n"
            f"_held = _s.client.submit(_hold, {str(release)!r}, key='gpu-cell-held-elsewhere', "
            "resources={'GPU': 1}, pure=False)\n"
            "while _s.client.run_on_scheduler(lambda dask_scheduler: getattr(dask_scheduler.tasks.get("
            "'gpu-cell-held-elsewhere'), 'state', None)) != 'processing':\n"
            "    time.sleep(0.1)")
        assert held.status == "ok", held.error_text()
        seen: dict[str, float] = {}

        def on_message(msg: dict[str, Any]) -> None:
            text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
            if "cannot start" in text and "line" not in seen:
                seen["line"] = msg["t"]
                release.write_text("go")  # the first worker frees up; the cell runs there

        run = k.run("%%gpu\ny = 2\ny", timeout=120, on_message=on_message)
        assert run.status == "ok", run.error_text()
        assert run.result is not None and run.result["text/plain"] == "2"
        lines = [line for line in run.stderr.splitlines() if "cannot start" in line]
        assert len(lines) == 1, run.stderr
        assert "quota exceeded" in lines[0] and "exceeded quota: gpu-quota" in lines[0], lines[0]
        assert "requests.nvidia.com/gpu" in lines[0], lines[0]
        assert refused, "the stand-in operator refused no pod"
        print(f"\nFailedCreate (quota) -> line in the waiting cell: {seen['line'] - refused[0]:.2f}s")
        assert k.value("_held.result()") == "held"
    finally:
        release.write_text("go")
        k.shutdown()
    deadline = time.monotonic() + 60
    while k8s.operator.live() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not k8s.operator.live()
