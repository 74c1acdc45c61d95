"""Every benchmark script runs in its ``--quick`` mode, so none of them can rot.

Nothing here looks at a timing: only that each script runs to the end and prints its
tables (the numbers are the benchmarks' business, in ``benchmarks/``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script: str, *args: str, timeout: float = 240) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.kernel
def test_dispatch_quick(no_leaked_processes):
    out = run("dispatch.py", "--quick", "--ipc")
    for what in ("plain cell `_w = 1` (floor)", "`%%gpu` `_w = 1`", "bare Dask"):
        assert out.count(what) == 2, f"{what!r}: one row per mode (embedded, server)\n{out}"
    assert "| embedded      |" in out and "| server        |" in out
    assert "zero workers -> result" in out
    assert "| saved with %%gpu cells (pre-warmed)" in out
    data = [line for line in out.splitlines() if "|     8 |" in line]
    assert {line.split("|")[3].strip() for line in data} == {"in", "out", "in+out", "memcpy"}


def segments() -> list[tuple[str, ...]]:
    """``hops.SEGMENTS``, read from the script's source (importing it would set up its
    private directories and environment in this process)."""
    with open(os.path.join(ROOT, "benchmarks", "hops.py")) as f:
        tree = ast.parse(f.read())
    return next(ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SEGMENTS")


@pytest.mark.kernel
def test_hops_quick(no_leaked_processes):
    out = run("hops.py", "--quick", "--ipc")
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    # a header, then one row per segment (the script stops if any cell missed a stamp), then
    # the whole cell
    assert [row.split("|")[1].strip() for row in rows[1:-1]] == [s[2] for s in segments()], rows
    assert "whole cell" in rows[-1] and "embedded run 1: " in out
    line = next(x for x in out.splitlines() if "with the kernel's client in-process" in x)
    assert " ms with it over TLS (3 interleaved rounds" in line, line


@pytest.mark.kernel
def test_hops_quick_server_hosted(no_leaked_processes):
    out = run("hops.py", "--quick", "--mode", "server", "--ipc")
    assert "server-hosted run 1: " in out and "## embedded" not in out
    line = next(x for x in out.splitlines() if "with the kernel's cell reports" in x)
    assert " ms without them (3 interleaved rounds" in line, line


def test_savings_quick(tmp_path):
    png = tmp_path / "savings.png"
    out = run("savings.py", "--quick", "--plot", str(png))
    for family in ("bursty", "training", "class", "overnight"):
        assert f"\n{family}: saved " in out and f"## {family}:" in out
    assert png.stat().st_size > 1000


def test_savings_replays_a_history_file(tmp_path):
    import json

    rows = [{"started": f"2026-01-01T10:{m:02d}:00+00:00", "compute_seconds": 20.0,
             "seconds": 21.0, "notebook": "a.ipynb"} for m in (0, 1, 2, 40)]
    path = tmp_path / "history.json"
    path.write_text(json.dumps(rows))
    out = run("savings.py", "--families", "", "--history", str(path))
    line = next(x for x in out.splitlines() if x.startswith("history.json: saved "))
    assert "cold starts" in line
    table = out.split("## history.json")[1]
    always_on = next(x for x in table.splitlines() if x.startswith("| always-on"))
    assert always_on.split("|")[2].strip() == str(round(40 * 60 + 20 + 60)), always_on


def test_compute_quick(no_leaked_processes):
    out = run("compute.py", "--quick")
    assert "CPU path vs reference" in out and "Peak RSS" in out


def test_gpu_check_quick_dry_run():
    out = run("gpu_check.py", "--quick", "--dry-run")
    assert "0 failing function(s)" in out


def test_hub_scale_quick(no_leaked_processes):
    pytest.importorskip("dask_gateway_server", reason="the quota module runs in dask-gateway-server")
    out = run("hub_scale.py", "--quick", "--http", "40")
    assert "## hub: 100 users" in out and "## fairness: 50 users" in out
    for what in ("| create (quota check) |", "| ask for a worker (quota + queue) |",
                 "| heartbeat (periodic) |", "| lease pass (all clusters) |"):
        assert what in out, out
    assert "quota decisions: " in out and "per 1,000 cells" in out
    assert "requests served: 150;" in out  # 50 users x 3 rounds: nobody is left waiting
    # --http: a real dask-gateway-server answered every decision as expected (else exit 1)
    assert "## 40 quota decisions through a real dask-gateway-server's HTTP API" in out
    for what in ("create: accepted", "scale: accepted", "create: refused (GPUs)",
                 "scale: refused (GPUs)"):
        assert f"| {what} | 10 |" in out, out
    assert "quota decisions over HTTP: p50 " in out


@pytest.mark.k8s
def test_k8s_scaling_quick(no_leaked_processes):
    pytest.importorskip("kopf", reason="kopf is not installed: the real Dask operator cannot run")
    out = run("k8s_scaling.py", "--quick", timeout=400)
    for what in ("start -> first worker", "first cell", "idle -> zero", "zero -> cell (wake)"):
        assert f"| {what} |" in out, out
