"""Cell analysis (names in and out) and the worker-side runner, called directly."""

from __future__ import annotations

import cloudpickle
import numpy as np
import pytest
from elastic_testing import wait_for

from jupyter_elastic.config import load_settings, parse_duration, parse_gpus, parse_size, set_option
from jupyter_elastic.errors import CellSyntaxError, ConfigError
from jupyter_elastic.execution import payload as wire
from jupyter_elastic.execution import worker
from jupyter_elastic.execution.analysis import analyze_cell
from jupyter_elastic.execution.payload import parity_problems
from jupyter_elastic.execution.worker import run_cell


@pytest.mark.parametrize(
    "source, namespace, inputs, outputs",
    [
        ("y = x + 1", {"x": 1}, ["x"], ["y"]),
        ("x += 1", {"x": 1}, ["x"], ["x"]),
        ("z = np.ones(2)", {"np": np}, ["np"], ["z"]),
        ("from os import path as p, sep", {}, [], ["p", "sep"]),
        ("def f(a):\n    return a + k\nclass C:\n    pass", {"k": 2, "a": 9}, ["a", "k"], ["f", "C"]),
        ("total = sum(v * w for v in items)", {"items": [1], "w": 2, "v": 0}, ["items", "v", "w"], ["total"]),
        ("[q for q in range(3)]", {}, [], []),
        ("if (n := len(seq)) > 1:\n    pass", {"seq": [1, 2]}, ["seq"], ["n"]),
        ("for i, j in pairs:\n    last = j", {"pairs": [(1, 2)]}, ["pairs"], ["i", "j", "last"]),
        ("with open(fn) as fh:\n    text = fh.read()", {"fn": "f"}, ["fn"], ["fh", "text"]),
        ("try:\n    pass\nexcept ValueError as err:\n    pass", {}, [], ["err"]),
        ("del old", {"old": 1}, ["old"], ["old"]),
        ("print(len(x))", {"x": [1], "print": print}, ["x"], []),
        ("display(In, Out, get_ipython)", {"In": [], "Out": {}, "get_ipython": None, "display": None}, [], []),
        ("def g():\n    global counter\n    counter = 1", {"counter": 0}, ["counter"], ["g", "counter"]),
        ("lk = 3\nprint(lk + 1)", {"lk": object()}, [], ["lk"]),
        ("import numpy as np\nnp.ones(1)", {"np": np}, [], ["np"]),
        ("x = x + 1", {"x": 1}, ["x"], ["x"]),
        ("if flag:\n    y = 1\nprint(y)", {"flag": True, "y": 0}, ["flag", "y"], ["y"]),
        ("for k in []:\n    z = 1\nz", {"z": 0}, ["z"], ["k", "z"]),
        ("a, (b, *c) = 1, (2, 3)\nb + c[0]", {"b": 5, "c": [9]}, [], ["a", "b", "c"]),
    ],
)
def test_analysis_finds_names_read_and_bound(source, namespace, inputs, outputs):
    plan = analyze_cell(source, namespace)
    assert plan.inputs == inputs
    assert plan.outputs == outputs


def test_analysis_respects_hidden_names_and_explicit_lists():
    plan = analyze_cell("y = secret + shown", {"secret": 1, "shown": 2}, hidden={"secret"})
    assert plan.inputs == ["shown"]
    plan = analyze_cell("y = a + b", {"a": 1, "b": 2}, inputs=["a"], outputs=["nothing"])
    assert plan.inputs == ["a"] and plan.outputs == ["nothing"]


def test_syntax_error_names_the_line_of_the_notebook_cell():
    with pytest.raises(CellSyntaxError, match=r"the cell cannot be parsed: .* at line 3"):
        analyze_cell("x = 1\ny = (\n", {})


def payload(source, inputs=None, outputs=None, **extra):
    plan = analyze_cell(source, inputs or {})
    base = {"cell_id": "c1", "source": source, "line_offset": 1, "filename": "<%%gpu In[1]>",
            "inputs": inputs or {}, "outputs": plan.outputs if outputs is None else outputs,
            "topic": "t", "keep_on_device": False, "versions": wire.versions()}
    base.update(extra)
    return base


def test_runner_returns_outputs_deletions_and_the_last_value():
    result = run_cell(payload("y = x * 2\ndel x\ny + 1", {"x": 20}, outputs=["y", "x"]))
    assert result["status"] == "ok"
    assert result["outputs"] == {"y": 40} and result["deleted"] == ["x"] and result["value"] == 41
    assert result["events"] == 1  # a quick cell sends only "end", which carries the result


def test_runner_error_traceback_uses_the_cells_line_numbers():
    result = run_cell(payload("a = 1\n\nb = a / 0\n"))
    assert result["status"] == "error" and result["ename"] == "ZeroDivisionError"
    text = "\n".join(result["traceback"])
    assert 'File "<%%gpu In[1]>", line 4' in text
    assert "b = a / 0" in text
    assert "run_cell" not in text  # the runner's own frames are dropped


def test_runner_refuses_a_version_mismatch_before_running_anything():
    result = run_cell(payload("import sys\nsys.exit(3)", versions=dict(wire.versions(), dask="1.0.0")))
    assert result["status"] == "mismatch"
    assert any(p.startswith("dask 1.0.0 in the kernel but") for p in result["problems"])


def test_a_stop_before_the_body_began_means_the_body_never_runs(tmp_path, monkeypatch):
    """The stop's interrupt can reach the worker while the task loads its inputs, or before
    the worker starts the task at all (the cancel travels separately): the worker must count
    the cell as running meanwhile, and its body must never run after the stop."""
    import threading

    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()"
    # 1. the stop arrives before the task starts on this worker
    early = payload(source, cell_id="stopped-early")
    assert worker.interrupt_cell(early["cell_id"]) == "never"  # nothing runs here yet
    assert run_cell(early) == {"status": "cancelled"}
    assert not marker.exists()

    # 2. the stop arrives while the task is starting (here: its parity check is slow)
    entered, release = threading.Event(), threading.Event()
    real = worker.missing_modules

    def slow_check(names):
        entered.set()
        release.wait(10)
        return real(names)

    monkeypatch.setattr(worker, "missing_modules", slow_check)
    starting = payload(source, cell_id="stopped-starting")
    results = []
    thread = threading.Thread(target=lambda: results.append(run_cell(starting)))
    thread.start()
    assert entered.wait(10)
    assert worker.cell_running(starting["cell_id"]) is True  # was False: the stop took it as ended
    assert worker.interrupt_cell(starting["cell_id"]) == "never"  # its body will not run
    release.set()
    thread.join(10)
    assert results == [{"status": "cancelled"}] and not marker.exists()
    assert worker.cell_running(starting["cell_id"]) is False

    # 3. a cell nobody stopped still runs, and a stop that comes after its end says so
    assert run_cell(payload(source, cell_id="not-stopped"))["status"] == "ok" and marker.exists()
    assert worker.interrupt_cell("not-stopped") == "ended"

    # 4. a cell whose body runs is interrupted
    looping = payload("import time\nwhile True:\n    time.sleep(0.01)", cell_id="looping")
    results.clear()
    thread = threading.Thread(target=lambda: results.append(run_cell(looping)))
    thread.start()
    wait_for(lambda: "looping" in worker.active_cells, timeout=10, what="the cell's body")
    assert worker.interrupt_cell("looping") == "interrupted"
    thread.join(10)
    assert results[0]["status"] == "error" and results[0]["ename"] == "KeyboardInterrupt"

    # what the kernel and the job runner make of each answer
    from jupyter_elastic.controlplane.cells import stop_reached

    assert stop_reached({"w": "never"}, "w") == "before-body"
    assert stop_reached({"w": "ended"}, "w") == "interrupted"
    assert stop_reached({"w": "interrupted"}, "w") is None  # running: wait for it to stop
    assert stop_reached(None, "w") is None  # no answer (a cell holding the GIL): wait


def test_parity_rules():
    kernel = {"python": "3.11.7", "dask": "2026.8.0", "numpy": "2.4.6", "cupy": None, "cloudpickle": "3.1.3"}
    assert parity_problems(kernel, dict(kernel, python="3.11.9")) == []
    assert parity_problems(kernel, dict(kernel, cupy="14.2.0")) == []
    assert parity_problems(kernel, dict(kernel, python="3.12.1")) == ["python 3.11.7 in the kernel but 3.12.1 on the worker"]
    assert parity_problems(kernel, dict(kernel, numpy="1.26.4")) == ["numpy 2.4.6 in the kernel but 1.26.4 on the worker"]


def test_worker_cache_serves_large_inputs_and_drops_changed_ones():
    big = np.arange(300_000, dtype=float)
    from dask.base import tokenize

    token = tokenize(big)
    first = run_cell(payload("s = big.sum()", {"big": wire.CacheIt(token, big)}))
    assert first["status"] == "ok" and first["cached_inputs"] == []
    second = run_cell(payload("s = big.sum()", {"big": wire.Cached(token)}))
    assert second["status"] == "ok" and second["cached_inputs"] == ["big"]
    assert second["outputs"]["s"] == big.sum()
    changed = run_cell(payload("big[0] = -1.0\ns = big[0]", {"big": wire.Cached(token)}))
    assert changed["outputs"]["s"] == -1.0
    miss = run_cell(payload("s = big.sum()", {"big": wire.Cached(token)}))
    assert miss == {"status": "cache-miss", "missing": [token]}


def test_unsendable_outputs_are_named():
    result = run_cell(payload("import threading\nlock = threading.Lock()\nok = 1"))
    assert result["status"] == "error" and result["ename"] == "OutputNotSerializable"
    assert "`lock` cannot be sent back" in result["evalue"]


def test_inline_result_round_trips():
    result = run_cell(payload("v = list(range(5))"))
    data, sendable = worker._inline(result)
    assert sendable and cloudpickle.loads(data)["outputs"] == {"v": [0, 1, 2, 3, 4]}
    huge = dict(result, outputs={"v": b"x" * (wire.INLINE_MAX_BYTES + 1)})
    assert worker._inline(huge) == (None, True)


def test_large_array_result_is_sized_without_pickling_its_data():
    import numpy as np

    big = np.ones(wire.INLINE_MAX_BYTES)  # 8x the inline limit
    result = run_cell(payload("out = big * 2", {"big": big}))
    assert result["status"] == "ok" and result["outputs"]["out"][0] == 2.0
    assert worker._inline(result) == (None, True)
    assert worker._inline({"v": __import__("threading").Lock()}) == (None, False)


@pytest.mark.parametrize("text, seconds", [("90s", 90.0), ("2m", 120.0), ("1.5h", 5400.0), (30, 30.0), ("250ms", 0.25)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1s", "5 parsecs", True, "", 10**400])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="must be a"):
        parse_duration(text, what="idle-timeout")


def test_sizes_and_gpus():
    assert parse_size("16GiB") == 16 * 2**30 and parse_size("512MB") == 512 * 10**6
    with pytest.raises(ConfigError, match="must be a size such as 16GiB"):
        parse_size("lots")
    assert parse_gpus("0.5") == 0.5 and parse_gpus(2) == 2.0
    for bad, message in [("-1", "0 or more"), ("x", "number of GPUs"), ("2.5", "whole number of GPUs"),
                         (True, "number of GPUs"), (10**400, "number of GPUs"), (1e300, "at most 64")]:
        with pytest.raises(ConfigError, match=message):
            parse_gpus(bad)


def test_settings_from_config_and_environment(monkeypatch):
    import dask

    with dask.config.set({"jupyter-elastic.idle-timeout": "30s", "jupyter-elastic.max-workers": 2}):
        settings = load_settings()
        assert settings.idle_timeout == 30.0 and settings.max_workers == 2
    with pytest.raises(ConfigError, match="min-workers \\(3\\) is above jupyter-elastic.max-workers \\(2\\)"):
        load_settings({"min-workers": 3, "max-workers": 2})
    with pytest.raises(ConfigError, match="unknown backend 'slurm'"):
        load_settings({"backend": "slurm"})
    with pytest.raises(ConfigError, match="unknown setting 'idle'"):
        set_option("idle", "3s")
    import copy

    saved = copy.deepcopy(dask.config.config)
    try:
        set_option("idle-timeout", "12s")
        assert load_settings().idle_timeout == 12.0
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)


def test_settings_follow_dask_config_changes_between_cells():
    # load_settings keeps what the namespace parsed to (every %%gpu cell reads it), but a
    # notebook's dask.config.set between cells must still be seen, and a bad value refused
    # every time, not only the first
    import dask

    first = load_settings()
    assert load_settings() is first  # same configuration: parsed once
    with dask.config.set({"jupyter-elastic.idle-timeout": "7s"}):
        assert load_settings().idle_timeout == 7.0
    assert load_settings().idle_timeout == first.idle_timeout
    with dask.config.set({"jupyter-elastic.idle-timeout": "soon"}):
        for _ in range(2):
            with pytest.raises(ConfigError, match="idle-timeout"):
                load_settings()
    assert load_settings() == first
