"""Triggered detached cells: ``--every`` and ``--on-change`` (flags, the trigger loop, and a
real job that runs again until cancelled)."""

from __future__ import annotations

import threading

import pytest
from elastic_testing import wait_for
from kernel_harness import Kernel

from jupyter_elastic.controlplane.jobs import JobRegistry
from jupyter_elastic.controlplane.triggers import parse_trigger, triggers
from jupyter_elastic.errors import ConfigError


def test_parse_trigger(tmp_path):
    assert parse_trigger(None, None) is None
    assert parse_trigger("10m", None) == {"every": 600.0}
    assert parse_trigger("0 3 * * 1-5", None) == {"cron": "0 3 * * 1-5"}
    assert parse_trigger(None, "*.csv", cwd=str(tmp_path)) == {"on_change": str(tmp_path / "*.csv")}
    for every, on_change, message in [
        ("0.5s", None, "at least 1s"),
        ("soon", None, "a duration such as 10m or a cron expression"),
        ("61 * * * *", None, "is not a cron expression"),
        ("x" * 101, None, "at most 100 characters"),
        ("1m", "*.csv", "cannot be combined"),
        (None, "s3://bucket/*.csv", "local paths only"),
        (None, str(tmp_path / "missing" / "*.csv"), "does not exist"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_trigger(every, on_change, cwd=str(tmp_path))


def test_every_yields_until_stopped():
    stop = threading.Event()
    runs = 0
    for changes in triggers({"every": 1.0}, stop):
        assert changes is None
        runs += 1
        if runs == 2:
            stop.set()
    assert runs == 2


def test_on_change_yields_the_changed_paths(tmp_path):
    stop = threading.Event()
    seen: list[list[str]] = []
    target = tmp_path / "new.csv"

    def writer():
        while not stop.is_set() and not seen:
            target.write_text("1,2\n")  # again until the watcher has seen it (it may start late)
            (tmp_path / "ignored.txt").write_text("x")
            stop.wait(0.3)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for changes in triggers({"on_change": str(tmp_path / "*.csv")}, stop):
            seen.append(changes)
            stop.set()
    finally:
        stop.set()
        thread.join()
    assert seen and seen[0] == [str(target)], seen


ENV = {"DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1", "DASK_JUPYTER_ELASTIC__WORKER__GPUS": "0"}


@pytest.mark.kernel
def test_every_runs_again_until_cancelled(tmp_path, no_leaked_processes):
    import psutil

    counter = tmp_path / "count"
    kernel = Kernel(env=ENV)
    try:
        run = kernel.run(
            "%%gpu --detach --name ticker --every 1s\n"
            "import pathlib\n"
            f"path = pathlib.Path({str(counter)!r})\n"
            "count = int(path.read_text()) + 1 if path.exists() else 1\n"
            "path.write_text(str(count))\n"
            "print('run', count)")
        assert run.status == "ok", run.error_text()
        job_id = run.stdout.split()[1]
        wait_for(lambda: (JobRegistry().get(job_id)["runs"] or 0) >= 2, timeout=180, what="two runs")
        listed = [line for line in kernel.run("%gpu jobs").stdout.splitlines() if job_id in line]
        assert len(listed) == 1  # between runs, or in one; never ended
        assert any(s in listed[0] for s in ("waiting", "starting", "running")), listed
        assert not any(s in listed[0] for s in ("done", "failed", "cancelled", "lost")), listed
        attached = kernel.run("%gpu attach ticker", timeout=120)
        assert attached.status == "ok", attached.error_text()
        count = kernel.value("count")
        assert count >= 2 and f"run {count}" in attached.stdout
        assert kernel.run("%gpu cancel ticker").status == "ok"
        wait_for(lambda: JobRegistry().get(job_id)["state"] == "cancelled", timeout=60, what="cancelled")
        job = JobRegistry().get(job_id)
        assert job["last_state"] == "done" and "after" in job["error"]
        results = kernel.value("sorted(get_ipython().run_line_magic('gpu', 'results ticker'))")
        assert results == ["count", "path"]

        def supervisor_gone():
            try:
                return psutil.Process(job["pid"]).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(supervisor_gone, timeout=60, what="the supervisor to exit")
    finally:
        kernel.shutdown()


@pytest.mark.kernel
def test_on_change_runs_the_cell_on_the_changed_files(tmp_path, no_leaked_processes):
    import psutil

    data = tmp_path / "data"
    data.mkdir()
    kernel = Kernel(env=ENV, cwd=str(tmp_path))
    try:
        run = kernel.run(
            "%%gpu --detach --name watcher --on-change data/*.csv\n"
            "rows = sum(len(open(p).read().splitlines()) for p in changes)\n"
            "seen = [p.rsplit('/', 1)[-1] for p in changes]")
        assert run.status == "ok", run.error_text()
        job_id = run.stdout.split()[1]
        wait_for(lambda: JobRegistry().get(job_id)["state"] == "waiting", timeout=120, what="watching")
        assert JobRegistry().get(job_id)["runs"] == 0, "nothing changed yet: no run"

        def ran():
            (data / "batch.csv").write_text("a\nb\nc\n")  # again until the watcher has seen it
            return (JobRegistry().get(job_id)["runs"] or 0) >= 1

        wait_for(ran, timeout=120, interval=0.5, what="a run on the new file")
        attached = kernel.run("%gpu attach watcher", timeout=120)
        assert attached.status == "ok", attached.error_text()
        assert kernel.value("(rows, seen)") == (3, ["batch.csv"])
        assert kernel.run("%gpu cancel watcher").status == "ok"
        wait_for(lambda: JobRegistry().get(job_id)["state"] == "cancelled", timeout=60, what="cancelled")
        pid = JobRegistry().get(job_id)["pid"]

        def supervisor_gone():
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(supervisor_gone, timeout=60, what="the supervisor to exit")
    finally:
        kernel.shutdown()
