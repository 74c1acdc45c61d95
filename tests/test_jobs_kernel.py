"""``%%gpu --detach`` through real kernels, supervisors and worker processes (local backend,
CPU workers): the job outlives its kernel, another kernel attaches to it, cancel stops it."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from elastic_testing import wait_for
from kernel_harness import Kernel

from jupyter_elastic.controlplane.jobs import JobRegistry

pytestmark = pytest.mark.kernel

ENV = {
    "DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1",
    "DASK_JUPYTER_ELASTIC__WORKER__GPUS": "0",
    "DASK_JUPYTER_ELASTIC__INTERRUPT_GRACE": "1s",
}


def ok(run):
    assert run.status == "ok", run.error_text()
    return run


def supervisor_gone(job_id: str) -> bool:
    """The job's supervisor (and with it its embedded cluster's processes) has exited."""
    pid = JobRegistry().get(job_id)["pid"]
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def job_id_of(run) -> str:
    words = run.stdout.split()
    assert words[:1] == ["job"], run.stdout + run.error_text()
    return words[1]


def test_detached_cell_outlives_a_killed_kernel_and_attaches_elsewhere(tmp_path, no_leaked_processes):
    gate = tmp_path / "gate"
    first = Kernel(env=ENV)
    try:
        ok(first.run("import numpy as np\nx = np.arange(6, dtype=np.float32)\nkeep = 'kernel value'"))
        run = ok(first.run(
            "%%gpu --detach --name survivor\n"
            "import os, time\n"
            "print('started on the worker')\n"
            f"while not os.path.exists({str(gate)!r}):\n"
            "    time.sleep(0.02)\n"
            "y = x * 2\n"
            "table = {'rows': 3}\n"
            "print('finished')\n"
            "float(y.sum())"
        ))
        job_id = job_id_of(run)
        assert "detached" in run.stdout and "%gpu attach" in run.stdout
        wait_for(lambda: JobRegistry().get(job_id)["state"] == "running", timeout=120, what="job running")
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(first.pid) or
                 psutil.Process(first.pid).status() == psutil.STATUS_ZOMBIE, what="kernel gone")
    finally:
        first.kc.stop_channels()
        first.km.cleanup_resources()
    assert JobRegistry().get(job_id)["state"] == "running", "the job runs on without its kernel"
    assert not supervisor_gone(job_id)

    second = Kernel(env=ENV)
    try:
        listed = second.value("[(j['id'], j['name'], j['state']) for j in %gpu jobs --json]".replace(
            "%gpu jobs --json", "get_ipython().run_line_magic('gpu', 'jobs --json')"))
        assert (job_id, "survivor", "running") in listed
        gate.write_text("go")
        attached = ok(second.run("%gpu attach survivor", timeout=120))
        assert attached.stdout.index("started on the worker") < attached.stdout.index("finished")
        assert attached.result["text/plain"] == "30.0"
        assert second.value("(y.dtype.name, y.tolist(), table)") == (
            "float32", [0.0, 2.0, 4.0, 6.0, 8.0, 10.0], {"rows": 3})
        assert second.value("'keep' in globals() or 'x' in globals()") is False, "only the job's names"
        again = ok(second.run("%gpu attach " + job_id))  # a finished job can be attached again
        assert "finished" in again.stdout
        rows = second.value("[(j['state'], j['notebook']) for j in get_ipython().run_line_magic('gpu', 'jobs --json')"
                            f" if j['id'] == {job_id!r}]")
        assert rows == [("done", None)]  # (other tests' jobs may be listed too: one registry)
        wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")
    finally:
        second.shutdown()


def test_cancel_stops_a_running_job_and_binds_nothing(tmp_path, no_leaked_processes):
    kernel = Kernel(env=ENV)
    try:
        run = ok(kernel.run(
            "%%gpu --detach --name spinner\n"
            "import time\n"
            "print('spinning')\n"
            "while True:\n"
            "    time.sleep(0.02)\n"
            "never = 1"
        ))
        job_id = job_id_of(run)
        events = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], "jupyter-elastic", "jobs", job_id,
                              "events.jsonl")
        wait_for(lambda: os.path.exists(events) and "spinning" in open(events).read(), timeout=120,
                 what="the job's first output")
        out = ok(kernel.run("%gpu cancel spinner"))
        assert job_id in out.stdout
        wait_for(lambda: JobRegistry().get(job_id)["state"] == "cancelled", timeout=60, what="cancelled")
        attach = kernel.run("%gpu attach spinner")
        assert attach.status == "error" and "cancelled" in attach.error_text()
        assert kernel.value("'never' in globals()") is False
        wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")
    finally:
        kernel.shutdown()


def test_unwritable_store_fails_the_job_clearly(tmp_path, no_leaked_processes):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the store's directory should be")
    kernel = Kernel(env=ENV)
    try:
        ok(kernel.run(f"%gpu config jobs.store={blocker / 'store'}"))
        job_id = job_id_of(ok(kernel.run("%%gpu --detach\nresult = 42")))
        wait_for(lambda: JobRegistry().get(job_id)["state"] in ("done", "failed"), timeout=120,
                 what="the job to end")
        job = JobRegistry().get(job_id)
        assert job["state"] == "failed" and "could not be written" in job["error"]
        attach = kernel.run(f"%gpu attach {job_id}")
        assert attach.status == "error" and "could not be written" in attach.error_text()
        assert "Traceback" not in attach.error_text()
        assert kernel.value("'result' in globals()") is False
        listing = ok(kernel.run("%gpu jobs")).stdout
        assert "failed" in listing and "could not be written" in listing
        wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")
    finally:
        kernel.shutdown()


@pytest.mark.parametrize("code, expected", [
    ("%%gpu --name fit\ny = 1", "--name and --ttl name and bound a detached job; add --detach"),
    ("%%gpu --detach --ttl soon\ny = 1", "--ttl must be a duration such as 90s"),
    ("%%gpu --detach --ttl 0\ny = 1", "--ttl must be above 0"),
    ("%%gpu --detach --local\ny = 1", "--detach runs on the cluster: drop --local"),
    ("%%gpu --detach --name 'a b'\ny = 1", "--name takes letters, digits"),
    ("%gpu attach no-such-job", "no job with id or name 'no-such-job'. List jobs with %gpu jobs"),
    ("%gpu cancel no-such-job", "no job with id or name 'no-such-job'. List jobs with %gpu jobs"),
    ("%gpu results", "%gpu results: the following arguments are required: job"),
    ("%gpu jobs --all", "%gpu jobs: unrecognized arguments: --all"),
])
def test_bad_job_input_is_one_clear_line(plain_kernel, code, expected):
    before = len(JobRegistry().rows())
    run = plain_kernel.run(code)
    assert run.status == "error"
    text = run.error_text()
    assert expected in text and "Traceback" not in text, text
    assert len(JobRegistry().rows()) == before, "no job was recorded"


@pytest.fixture(scope="module")
def plain_kernel():
    kernel = Kernel(env=ENV)
    try:
        yield kernel
    finally:
        kernel.shutdown()


def test_interrupting_attach_detaches_and_the_job_can_be_attached_again(plain_kernel, tmp_path):
    gate = tmp_path / "gate"
    job_id = job_id_of(ok(plain_kernel.run(
        "%%gpu --detach --name twice\n"
        "import os, time\n"
        "print('first part')\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('second part')\n"
        "answer = 41 + 1")))
    msg_id = plain_kernel.submit(f"%gpu attach {job_id}")

    def interrupt_after_first_output(msg):
        if msg["msg_type"] == "stream" and "first part" in msg["content"]["text"]:
            plain_kernel.km.interrupt_kernel()  # SIGINT to the kernel (the job has its own session)

    run = plain_kernel.collect(msg_id, timeout=120, on_message=interrupt_after_first_output)
    assert "first part" in run.stdout and f"detached from job {job_id}; it keeps running" in run.stderr
    assert plain_kernel.value("'answer' in globals()") is False
    assert JobRegistry().get(job_id)["state"] == "running", "the interrupt did not reach the job"
    gate.write_text("go")
    again = ok(plain_kernel.run("%gpu attach twice", timeout=120))
    assert again.stdout.index("first part") < again.stdout.index("second part")
    assert plain_kernel.value("answer") == 42
    wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")


def test_require_gpu_without_a_gpu_worker_fails_the_job(plain_kernel):
    job_id = job_id_of(ok(plain_kernel.run("%%gpu --detach --require-gpu\nz = 1")))
    wait_for(lambda: JobRegistry().get(job_id)["state"] in ("done", "failed"), timeout=120,
             what="the job to end")
    assert "has no GPU worker (--require-gpu)" in JobRegistry().get(job_id)["error"]
    run = plain_kernel.run(f"%gpu attach {job_id}")
    assert run.status == "error" and "--require-gpu" in run.error_text()
    assert plain_kernel.value("'z' in globals()") is False
    wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")


def test_killed_supervisor_makes_the_job_lost_and_takes_its_workers(plain_kernel, tmp_path):
    job_id = job_id_of(ok(plain_kernel.run(
        "%%gpu --detach --name orphan\n"
        "import os, time\n"
        "print('worker pid', os.getpid())\n"
        f"while not os.path.exists({str(tmp_path / 'never')!r}):\n"
        "    time.sleep(0.02)\n"
        "late = 1")))
    events = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], "jupyter-elastic", "jobs", job_id,
                          "events.jsonl")
    wait_for(lambda: os.path.exists(events) and "worker pid" in open(events).read(), timeout=120,
             what="the job's first output")
    worker_pid = int(open(events).read().split("worker pid", 1)[1].split("\\n", 1)[0].split()[0])
    os.kill(JobRegistry().get(job_id)["pid"], signal.SIGKILL)
    wait_for(lambda: supervisor_gone(job_id), what="the supervisor to die")
    jobs = plain_kernel.value("[(j['id'], j['state']) for j in get_ipython().run_line_magic('gpu', 'jobs --json')]")
    assert (job_id, "lost") in jobs
    assert "supervisor process ended" in JobRegistry().get(job_id)["error"]
    wait_for(lambda: not psutil.pid_exists(worker_pid) or
             psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE, timeout=60,
             what="the job's worker to exit with its scheduler")
    attach = plain_kernel.run("%gpu attach orphan")
    assert attach.status == "error" and "lost" in attach.error_text()
    assert plain_kernel.value("'late' in globals()") is False


def test_the_supervisor_reaches_its_own_scheduler_in_process(plain_kernel):
    """A detached job's supervisor runs the job's scheduler (its embedded control plane) in
    its own process, and its client connects to it in-process, not over TLS."""
    job_id = job_id_of(ok(plain_kernel.run(
        "%%gpu --detach --name peers --out peers\n"
        "from distributed import worker_client\n"
        "def _clients(dask_scheduler):\n"
        "    return sorted(str(b.comm.peer_address) for b in dask_scheduler.client_comms.values()\n"
        "                  if b.comm is not None)\n"
        "with worker_client() as _c:\n"
        "    peers = _c.run_on_scheduler(_clients)\n"
    )))
    supervisor = JobRegistry().get(job_id)["pid"]
    ok(plain_kernel.run(f"%gpu attach {job_id}", timeout=120))
    peers = plain_kernel.value("peers")
    in_process = [p for p in peers if p.startswith("inproc://")]
    assert len(in_process) == 1 and in_process[0].split("/")[3] == str(supervisor), peers
    assert all(p.startswith(("inproc://", "tls://")) for p in peers), peers
    wait_for(lambda: supervisor_gone(job_id), timeout=60, what="the supervisor to exit")
