"""``%%gpu`` and ``%gpu`` through a real kernel, on the local backend with CPU workers."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from elastic_testing import wait_for
from kernel_harness import Kernel

pytestmark = pytest.mark.kernel

ENV = {
    "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "60s",
    "DASK_JUPYTER_ELASTIC__MAX_WORKERS": "2",
    "DASK_JUPYTER_ELASTIC__INTERRUPT_GRACE": "1s",
    "DASK_JUPYTER_ELASTIC__DASHBOARD": "true",  # the status test's dashboard link (off by default)
}


@pytest.fixture(scope="module")
def kernel():
    k = Kernel(env=ENV)
    try:
        yield k
    finally:
        k.shutdown()


def ok(run):
    assert run.status == "ok", run.error_text()
    return run


def test_streams_while_the_cell_runs(kernel, tmp_path):
    """The cell waits for a file the test writes only after it saw the cell's first print."""
    gate = tmp_path / "gate"
    msg_id = kernel.submit(
        "%%gpu\n"
        "import os, time\n"
        "print('waiting for the gate')\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('through')\n"
    )

    def open_gate(msg):
        if msg["msg_type"] == "stream" and "waiting for the gate" in msg["content"]["text"]:
            gate.write_text("go")

    run = ok(kernel.collect(msg_id, timeout=60, on_message=open_gate))
    assert gate.exists(), "the first print never reached the notebook while the cell ran"
    assert run.stdout.index("waiting for the gate") < run.stdout.index("through")


def test_the_kernel_reaches_its_own_scheduler_in_process_and_workers_over_tls(kernel):
    """The embedded control plane's scheduler runs in the kernel: the kernel's client talks
    to it in-process (no encryption round trip over loopback), while the lease's address,
    the one workers and every other client use, stays TLS."""
    ok(kernel.run("%%gpu\nimport os\nworker_pid = os.getpid()"))
    seen = kernel.value(
        "(lambda s: {'client': s.client.scheduler.address, 'lease': s.lease['scheduler_address'],"
        " 'workers': sorted(s.client.scheduler_info()['workers'])})"
        "(get_ipython().magics_manager.registry['ElasticMagics'].session)")
    assert seen["client"].startswith("inproc://") and f"/{kernel.pid}/" in seen["client"], seen
    assert seen["lease"].startswith("tls://127.0.0.1:"), seen
    assert seen["workers"] and all(w.startswith("tls://127.0.0.1:") for w in seen["workers"]), seen
    assert kernel.value("worker_pid") != kernel.pid


def test_names_in_and_out_and_last_expression(kernel):
    ok(kernel.run("import numpy as np\nbase = np.arange(6)\ndef double(v):\n    return v * 2\n"
                  "class Box:\n    def __init__(self, v):\n        self.v = v\n"))
    run = ok(kernel.run("%%gpu\nd = double(base)\nbox = Box(d.sum())\nimport math\nbox.v + math.floor(0.5)"))
    assert run.result["text/plain"] == "np.int64(30)"
    assert kernel.value("[int(v) for v in d]") == [0, 2, 4, 6, 8, 10]
    assert kernel.value("(type(box).__name__, int(box.v))") == ("Box", 30)
    assert kernel.value("math.__name__") == "math"


def test_failed_cell_binds_nothing(kernel):
    ok(kernel.run("keep = 'original'"))
    run = kernel.run("%%gpu\nkeep = 'changed'\nfresh = 1\nx = 1\n\n1 / 0\n")
    assert run.status == "error"
    text = run.error_text()
    assert "ZeroDivisionError" in text
    assert "line 6" in text, text  # %%gpu is line 1 of the notebook cell
    assert f"In[{run.reply['execution_count']}]" in text, "the traceback names this cell's In[n]"
    assert kernel.value("keep") == "original"
    assert kernel.value("'fresh' in globals()") is False


def test_rich_output_and_figures_come_back(kernel):
    run = ok(kernel.run(
        "%%gpu\n"
        "from IPython.display import HTML, display\n"
        "display(HTML('<b>bold</b>'))\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\n"
        "print('done')\n"
    ))
    displays = run.displays()
    assert any(d.get("text/html") == "<b>bold</b>" for d in displays), displays
    assert any("image/png" in d for d in displays), displays
    assert run.stdout.strip().endswith("done")


def test_out_and_in_restrict_names(kernel):
    ok(kernel.run("a_in, b_in = 1, 2"))
    ok(kernel.run("%%gpu --out only\nonly = a_in + 1\nskipped = 5"))
    assert kernel.value("only") == 2
    assert kernel.value("'skipped' in globals()") is False
    run = kernel.run("%%gpu --in a_in\nz_out = a_in + b_in")
    assert run.status == "error"
    assert "NameError" in run.error_text() and "b_in" in run.error_text()


def test_local_runs_in_the_kernel_with_the_same_semantics(kernel):
    ok(kernel.run("loc = [1, 2]"))
    run = ok(kernel.run("%%gpu --local\nimport os\nloc.append(3)\npid_seen = os.getpid()\nlen(loc)"))
    assert run.result["text/plain"] == "3"
    assert kernel.value("loc") == [1, 2], "inputs are copies, as on a worker"
    assert kernel.value("pid_seen") == kernel.pid


def test_local_after_a_remote_cell_cached_the_input_binds_the_real_value(kernel):
    """A large input the workers cached must not reach a --local cell as a cache token."""
    ok(kernel.run("import numpy as np\nbig = np.ones((200_000, 8))"))
    ok(kernel.run("%%gpu\nr3 = float(big.sum())"))
    assert kernel.value("r3") == 1_600_000.0
    ok(kernel.run("%%gpu --local\nr4 = big.sum()"))
    assert kernel.value("float(r4)") == 1_600_000.0
    assert kernel.value("type(r4).__name__") == "float64"


def test_unchanged_large_inputs_are_not_sent_again(kernel):
    ok(kernel.run("import numpy as np\nbig = np.ones(400_000)"))  # 3.2 MB
    ok(kernel.run("%%gpu\ns1 = big.sum()"))
    ok(kernel.run("%%gpu\ns2 = big.sum()"))
    cached = kernel.value("[r['cached_inputs'] for r in get_ipython().run_line_magic('gpu', 'history --json')]")
    assert cached[-2:] == [[], ["big"]], "the second cell took the unchanged array from the worker's cache"
    ok(kernel.run("big[0] = 5"))
    ok(kernel.run("%%gpu\ns3 = big.sum()"))
    cached = kernel.value("[r['cached_inputs'] for r in get_ipython().run_line_magic('gpu', 'history --json')]")
    assert cached[-1] == [], "a changed input must be sent again"
    assert kernel.value("float(s3)") == 400_004.0


def test_large_inputs_go_to_the_worker_ahead_of_the_task_and_are_cached(kernel):
    # 16 MiB: above SCATTER_MIN_BYTES, so it is scattered, not sent inside the task
    ok(kernel.run("import numpy as np\nhuge = np.arange(2 * 2**20, dtype=np.float64)"))
    ok(kernel.run("%%gpu\nh1 = float(huge.sum())\nhuge2 = huge * 2"))
    ok(kernel.run("%%gpu\nh2 = float(huge[-1])"))
    cached = kernel.value("[r['cached_inputs'] for r in get_ipython().run_line_magic('gpu', 'history --json')]")
    assert cached[-2:] == [[], ["huge"]], "the scattered input stayed in the worker's cache"
    assert kernel.value("h1") == float(sum(range(2 * 2**20))) and kernel.value("h2") == 2 * 2**20 - 1
    assert kernel.value("float(huge2[-1])") == 2.0 * (2 * 2**20 - 1)
    held = kernel.value("list(__import__('jupyter_elastic.kernel.magics', fromlist=['_'])._magics"
                        ".session.client.futures)")
    assert held == [], "the uploaded inputs and the results are released after each cell"


def test_timeout_cancels_the_cell(kernel):
    run = kernel.run("%%gpu --timeout 1s\nimport time\nwhile True:\n    time.sleep(0.01)\n", timeout=60)
    assert run.status == "error"
    assert "CellTimeout" in run.error_text() and "--timeout 1s" in run.error_text()
    assert ok(kernel.run("%%gpu\nafter_timeout = 7")).status == "ok"
    assert kernel.value("after_timeout") == 7


def test_timeout_before_the_worker_announced_the_cell_still_frees_it(kernel):
    run = kernel.run("%%gpu --timeout 0.02\nwhile True:\n    pass\n", timeout=60)
    assert run.status == "error" and "CellTimeout" in run.error_text()
    # the worker is free again: the next cell runs (it would queue forever behind the loop)
    assert ok(kernel.run("%%gpu --timeout 30\nfreed = 1", timeout=60)).status == "ok"
    assert kernel.value("freed") == 1


def test_local_honours_timeout_retries_and_cpus(kernel, tmp_path):
    run = kernel.run("%%gpu --local --timeout 1s\nimport time\ntime.sleep(10)\nlate = 1", timeout=30)
    assert run.status == "error" and "--timeout 1s" in run.error_text()
    assert kernel.value("'late' in globals()") is False
    marker = tmp_path / "local-attempts"
    run = ok(kernel.run(
        "%%gpu --local --retries 1\nimport pathlib\n"
        f"p = pathlib.Path({str(marker)!r})\nn = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\nif n == 0:\n    raise RuntimeError('flaky')\nlocal_ok = n"))
    assert "retrying" in run.stderr and kernel.value("local_ok") == 1
    ok(kernel.run("%%gpu --cpus 1\nimport time\ntime.sleep(0.3)"))
    row = kernel.value("get_ipython().run_line_magic('gpu', 'history --json')[-1]")
    assert row["cpu_seconds"] == pytest.approx(row["compute_seconds"]), "--cpus 1 bills one core"


def run_and_interrupt(kernel, code, marker, timeout=60):
    """Run ``code`` and press the stop button once the cell has printed ``marker``."""
    def interrupt(msg):
        if msg["msg_type"] == "stream" and marker in msg["content"]["text"]:
            kernel.km.interrupt_kernel()

    return kernel.collect(kernel.submit(code), timeout=timeout, on_message=interrupt)


def test_interrupt_stops_a_python_loop(kernel):
    run = run_and_interrupt(kernel, "%%gpu\nprint('spinning', flush=True)\nwhile True:\n    pass\n",
                            "spinning")
    assert run.status == "error"
    assert "CellCancelled" in run.error_text()
    assert "restarted" not in run.error_text()  # the loop stopped within the grace period
    assert ok(kernel.run("%%gpu\nafter_interrupt = 1")).status == "ok"


def test_interrupt_restarts_a_worker_stuck_in_c(kernel):
    run = run_and_interrupt(kernel, "%%gpu\nimport time\nprint('sleeping', flush=True)\ntime.sleep(600)\n",
                            "sleeping", timeout=90)
    assert run.status == "error"
    assert "worker was restarted" in run.error_text(), run.error_text()
    assert ok(kernel.run("%%gpu\nafter_restart = 2")).status == "ok"


def test_retries_run_the_cell_again(kernel, tmp_path):
    marker = tmp_path / "attempts"
    run = ok(kernel.run(
        "%%gpu --retries 2\n"
        "import pathlib\n"
        f"p = pathlib.Path({str(marker)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        "if n < 1:\n"
        "    raise RuntimeError('flaky')\n"
        "attempts_seen = n + 1\n"
    ))
    assert "retrying" in run.stderr
    assert kernel.value("attempts_seen") == 2
    # one cell, however many attempts: the control plane sees it start and end once
    status = kernel.value("get_ipython().run_line_magic('gpu', 'status --json')")
    assert status["clusters"][0]["running_cells"] == 0


@pytest.mark.parametrize(
    "line, body, expected",
    [
        ("--bogus", "x_bad = 1", "unrecognized arguments: --bogus"),
        ("--gpus -1", "x_bad = 1", "--gpus must be 0 or more"),
        ("--gpus lots", "x_bad = 1", "--gpus must be a number of GPUs"),
        ("--gpus 1.5", "x_bad = 1", "whole number of GPUs"),
        ("--memory 12XB", "x_bad = 1", "--memory must be a size such as 16GiB"),
        ("--timeout soon", "x_bad = 1", "--timeout must be a duration such as 90s"),
        ("--retries -2", "x_bad = 1", "--retries must be a whole number >= 0"),
        ("--backend nomad", "x_bad = 1", "unknown backend 'nomad'; choose one of: local, kubernetes, gateway"),
        ("--out 1x", "x_bad = 1", "--out takes Python names"),
        ("", "x_bad = (1,\n", "the cell cannot be parsed"),
    ],
)
def test_bad_input_is_one_clear_line(kernel, line, body, expected):
    ok(kernel.run("x_bad = 'untouched'"))
    run = kernel.run(f"%%gpu {line}\n{body}")
    assert run.status == "error"
    text = run.error_text()
    assert expected in text, text
    assert "Traceback" not in text and len(text.strip().splitlines()) <= 3, text
    assert kernel.value("x_bad") == "untouched"


def test_unserializable_input_names_the_name(kernel):
    ok(kernel.run("import threading\nmy_lock = threading.Lock()\nuse_lock_out = 'untouched'"))
    run = kernel.run("%%gpu\nuse_lock_out = my_lock.locked()")
    assert run.status == "error"
    text = run.error_text()
    assert "cannot send `my_lock`" in text and "lock" in text.lower()
    assert "Traceback" not in text
    assert kernel.value("use_lock_out") == "untouched"


def test_unsendable_output_fails_the_cell_atomically(kernel):
    ok(kernel.run("gen_ok = 'untouched'"))
    run = kernel.run("%%gpu\ngen_ok = 'changed'\nimport threading\nlock_back = threading.Lock()")
    assert run.status == "error"
    assert "`lock_back` cannot be sent back" in run.error_text()
    assert kernel.value("gen_ok") == "untouched"


def test_environment_mismatch_stops_the_cell(kernel):
    ok(kernel.run(
        "import jupyter_elastic.execution.payload as _r\n_real_versions = _r.versions\n"
        "_r.versions = lambda: dict(_real_versions(), numpy='1.0.0')"
    ))
    try:
        run = kernel.run("%%gpu\nmismatch_out = 1")
        assert run.status == "error"
        text = run.error_text()
        assert "EnvironmentMismatch" in text and "numpy 1.0.0 in the kernel but" in text
        assert "Traceback" not in text
    finally:
        ok(kernel.run("_r.versions = _real_versions"))


def test_status_history_config_and_logs(kernel):
    ok(kernel.run("%%gpu\nfor_status = 1"))
    kernel.run("%%gpu\nraise ValueError('for the history')")
    status = kernel.value("get_ipython().run_line_magic('gpu', 'status --json')")
    assert len(status["clusters"]) == 1
    cluster = status["clusters"][0]
    assert cluster["backend"] == "local" and cluster["status"] == "running"
    assert cluster["has_gpu"] is False and cluster["gpus"] == 0
    assert set(cluster["usage"]) >= {"gpu_seconds", "cpu_seconds", "idle_seconds", "cost"}
    assert all(w["gpus"] == 0 for w in cluster["worker_details"])
    shown = ok(kernel.run("%gpu status")).displays()
    assert len(shown) == 1 and "no GPU found: CPU workers run the NumPy path" in shown[0]["text/plain"]
    link = cluster["dashboard_link"]
    assert f"dashboard: {link}" in shown[0]["text/plain"]
    assert f'<a href="{link}"' in shown[0]["text/html"], "the dashboard is a clickable link"
    history = kernel.value("get_ipython().run_line_magic('gpu', 'history --json')")
    assert history and {"seconds", "gpu_seconds", "cpu_seconds", "cost", "status"} <= set(history[-1])
    assert any(r["status"] == "error" for r in history) and any(r["status"] == "ok" for r in history)
    shown = kernel.run("%gpu history").stdout
    assert "total cost of" in shown and "on an always-on worker since its first cell; saved so far:" in shown
    run = ok(kernel.run("%gpu config idle-timeout=45s"))
    assert "idle-timeout=45s" in run.stdout
    assert "45s" in kernel.run("%gpu config").stdout
    bad = kernel.run("%gpu config idle-timeout=forever")
    assert bad.status == "error" and "idle-timeout must be a duration" in bad.error_text()
    bad = kernel.run("%gpu config colour=blue")
    assert bad.status == "error" and "unknown setting 'colour'" in bad.error_text()
    bad = kernel.run("%gpu scale many")
    assert bad.status == "error" and "N must be a whole number" in bad.error_text()
    bad = kernel.run("%gpu adapt 3 1")
    assert bad.status == "error" and "minimum (3) must not be above maximum (1)" in bad.error_text()
    bad = kernel.run("%gpu frobnicate")
    assert bad.status == "error" and "unknown %gpu command 'frobnicate'" in bad.error_text()
    logs = ok(kernel.run("%gpu logs -n 5"))
    assert "==" in logs.stdout or "no workers" in logs.stdout


def test_memory_is_checked_against_what_the_workers_really_hold(kernel):
    """The configured worker.memory allows 999 GiB; a local worker holds a share of this
    machine's memory, and the cell is refused before it runs, in one line."""
    ok(kernel.run("%gpu config worker.memory=1000GiB"))
    try:
        bad = kernel.run("%%gpu --memory 999GiB\nnever_bound = 1")
        assert bad.status == "error"
        text = bad.error_text()
        assert "--memory 999.0 GiB is more than a worker of cluster" in text and "holds (" in text
        assert len(text.strip().splitlines()) == 1 and "Traceback" not in text
        assert kernel.value("'never_bound' in globals()") is False
        held = kernel.value("get_ipython().find_cell_magic('gpu').__self__.session.lease['memory_per_worker']")
        assert 0 < held < 999 * 2**30
        ok(kernel.run(f"%%gpu --memory {held // 2**20}MiB\nfits = 1"))
    finally:
        ok(kernel.run("%gpu config worker.memory=16GiB"))


def test_scale_adapt_and_scale_to_zero_and_back():
    k = Kernel(env={**ENV, "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "2s", "JPY_SESSION_NAME": "/work/Feature Run.ipynb"})
    try:
        ok(k.run("%%gpu\nfirst = 1"))
        name = k.value("get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]['name']")
        assert name.startswith("nb-feature-run-"), "the cluster is named after the notebook, to be found again"
        ok(k.run("%gpu scale 2"))
        wait_for(lambda: k.value("get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]['workers']") == 2,
                 timeout=60, what="2 workers after %gpu scale 2")
        ok(k.run("%gpu adapt 0 2"))
        wait_for(lambda: k.value("get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]['workers']") == 0,
                 timeout=60, what="scale to zero after idle-timeout")
        run = ok(k.run("%%gpu\nsecond = first + 1\nsecond"))
        assert run.result["text/plain"] == "2"
        ok(k.run("%gpu scale 0"))
        ok(k.run("%%gpu\nthird = 3"))  # wakes a worker on a cluster held at size 0 ...
        failed = k.run("%%gpu\nimport logging\nlogging.getLogger('distributed.worker').error('marker-of-the-failed-cell')\n"
                       "raise ValueError('failed on purpose')")
        assert failed.status == "error"
        wait_for(lambda: k.value("get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]['workers']") == 0,
                 timeout=60, what="zero workers again after idle-timeout (scale 0 returns to adaptive)")
        # The worker that ran the failed cell is gone; its last logs are not.
        logs = ok(k.run("%gpu logs")).stdout
        assert "no workers are running" in logs and ", retired" in logs
        assert "marker-of-the-failed-cell" in logs
        ok(k.run("%gpu stop"))
        assert k.value("get_ipython().run_line_magic('gpu', 'status --json')") == {"clusters": []}
        ok(k.run("%gpu config idle-timeout=7s max-workers=1"))
        ok(k.run("%%gpu\nfourth = 4"))
        cluster = k.value("get_ipython().run_line_magic('gpu', 'status --json')['clusters'][0]")
        assert cluster["idle_timeout"] == 7.0 and cluster["adapt"]["maximum"] == 1, "new clusters use %gpu config"
    finally:
        k.shutdown()


def test_nothing_survives_a_killed_kernel(no_leaked_processes):
    k = Kernel(env={**ENV, "DASK_JUPYTER_ELASTIC__LEASE_TTL": "5s"})
    try:
        ok(k.run("%%gpu\nimport os\nworker_pid = os.getpid()"))
        worker_pid = k.value("worker_pid")
        descendants = psutil.Process(k.pid).children(recursive=True)
        assert worker_pid in {p.pid for p in descendants}
        os.kill(k.pid, signal.SIGKILL)
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in descendants),
                 timeout=5 + 10, what="scheduler and workers of a killed kernel to exit within lease-ttl")
    finally:
        k.kc.stop_channels()
        k.km.cleanup_resources()


def test_elastic_kernelspec_loads_the_extension(monkeypatch):
    # kernels/ sits at the repository root, laid out as share/jupyter/kernels is once installed
    monkeypatch.setenv("JUPYTER_PATH", os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
    k = Kernel(kernel_name="python3-elastic", load=False)
    try:
        assert k.value("'gpu' in get_ipython().magics_manager.magics['cell']") is True
    finally:
        k.shutdown()
