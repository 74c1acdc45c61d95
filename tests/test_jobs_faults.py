"""Faults of ``%%gpu --detach`` jobs through a real kernel, supervisor and worker processes
(local backend, CPU workers): a worker killed mid-job (``--retries``), and ``--timeout``."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from elastic_testing import wait_for
from kernel_harness import Kernel
from test_jobs_kernel import ENV, job_id_of, ok, supervisor_gone

from jupyter_elastic.config import Pricing
from jupyter_elastic.controlplane.jobs import FINAL, JobRegistry, get_job

pytestmark = pytest.mark.kernel

#: Counts its runs in a file; the first run prints its worker's pid and sleeps (killed there).
SIDE_EFFECT = (
    "%%gpu --detach{flags}\nimport os, pathlib, time\np = pathlib.Path({path!r})\n"
    "p.write_text(p.read_text() + 'run\\n' if p.exists() else 'run\\n')\n"
    "runs = p.read_text().count('run')\n"
    "if runs == 1:\n    print(f'pid={{os.getpid()}}', flush=True)\n    time.sleep(600)\n"
    "y = x * 2\n"
)


@pytest.fixture(scope="module")
def kernel():
    kernel = Kernel(env=ENV)
    try:
        ok(kernel.run("import numpy as np\nx = np.arange(4)"))
        yield kernel
    finally:
        kernel.shutdown()


def events_of(job_id: str) -> str:
    path = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], "jupyter-elastic", "jobs", job_id, "events.jsonl")
    return open(path).read() if os.path.exists(path) else ""


def worker_pid(job_id: str) -> int:
    """The pid the job's cell printed as ``pid=N`` (read from its live output log)."""
    wait_for(lambda: "pid=" in events_of(job_id), timeout=120, what="the job's worker pid")
    return int(events_of(job_id).split("pid=", 1)[1].split("\\n", 1)[0])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ended(job_id: str) -> dict:
    wait_for(lambda: JobRegistry().get(job_id)["state"] in FINAL, timeout=120, what="the job to end")
    return get_job(job_id)


def test_a_job_whose_worker_dies_is_rerun_per_retries(kernel, tmp_path, no_leaked_processes):
    path = tmp_path / "side-effects"
    job_id = job_id_of(ok(kernel.run(SIDE_EFFECT.format(flags=" --retries 1", path=str(path)))))
    pid = worker_pid(job_id)
    os.kill(pid, signal.SIGKILL)
    job = ended(job_id)
    assert job["state"] == "done", job["error"]
    assert path.read_text().count("run") == 2, "re-run exactly once"
    attempts = job["attempts"]
    assert [a["state"] for a in attempts] == ["lost-worker", "done"], attempts
    assert "died" in attempts[0]["error"] and "killed or crashed" in attempts[0]["error"]
    assert job["retries"] == 1 and job["cost"] > 0
    attached = ok(kernel.run(f"%gpu attach {job_id}", timeout=120))
    note = "attempt 1 of 2 lost its worker: the worker running it"
    assert note in attached.stderr and "re-running the job (--retries)" in attached.stderr, attached.stderr
    assert kernel.value("(y.tolist(), runs)") == ([0, 2, 4, 6], 2)
    wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")


def test_a_job_whose_worker_dies_without_retries_fails_in_one_line(kernel, tmp_path, no_leaked_processes):
    path = tmp_path / "side-effects"
    ok(kernel.run("y = 'before'"))
    job_id = job_id_of(ok(kernel.run(SIDE_EFFECT.format(flags="", path=str(path)))))
    pid = worker_pid(job_id)
    os.kill(pid, signal.SIGKILL)
    job = ended(job_id)
    assert job["state"] == "failed"
    assert job["error"].startswith("attempt 1 of 1 lost its worker: the worker running it (tls://127.0.0.1:")
    assert "died" in job["error"] and "not re-run (--retries N re-runs it)" in job["error"]
    assert [a["state"] for a in job["attempts"]] == ["lost-worker"]
    wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")
    assert path.read_text().count("run") == 1, "the job ran again without --retries"
    attach = kernel.run(f"%gpu attach {job_id}")
    assert attach.status == "error"
    text = attach.error_text()
    assert "lost its worker" in text and "Traceback" not in text and len(attach.error["traceback"]) == 1, text
    assert kernel.value("y") == "before", "nothing bound from a job that did not finish"
    results = kernel.run(f"%gpu results {job_id}")
    assert results.status == "error" and "lost its worker" in results.error_text()


@pytest.mark.parametrize("sleep", [
    "time.sleep(60)", "ctypes.CDLL(None).sleep(60)",
    "time.sleep(0.5)\nsum(range(10**13))",  # holds the GIL: its worker answers nobody
])
def test_a_job_past_its_timeout_stops_frees_its_worker_and_is_billed(kernel, sleep, no_leaked_processes):
    job_id = job_id_of(ok(kernel.run(
        "%%gpu --detach --timeout 2s\nimport ctypes, os, time\nprint(f'pid={os.getpid()}', flush=True)\n"
        f"{sleep}\nlate = 1")))
    pid = worker_pid(job_id)
    job = ended(job_id)
    assert job["state"] == "failed"
    assert job["error"] == ("the job ran past --timeout 2s and was interrupted, and as it did not stop "
                            "within interrupt-grace its worker was killed to free the GPU")
    assert gone(pid), f"the worker stuck in {sleep} was killed"
    # held for at least the 2 s of --timeout: billed as CPU-seconds on a CPU worker
    assert job["gpu_seconds"] == 0.0 and job["cost"] >= Pricing().cost(0.0, 2.0)
    assert job["timeout"] == 2.0
    attach = kernel.run(f"%gpu attach {job_id}")
    assert attach.status == "error" and "--timeout 2s" in attach.error_text()
    assert kernel.value("'late' in globals()") is False
    wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")
