"""Dispatch latency and data path of ``%%gpu`` as a notebook front end sees them.

A front end (this script) drives a real ipykernel over ZeroMQ with ``jupyter_client``,
exactly as JupyterLab does: ``execute_request``, then blocking reads until both the
``execute_reply`` and the kernel's ``status: idle`` for that request have arrived. Every
figure is that round trip, measured in the same run against its baselines:

* floor: a plain cell ``_w = 1`` (what any cell costs through the kernel);
* ``%%gpu`` (local backend, one CPU worker);
* bare Dask in a cell: ``client.submit(f).result()`` on a ``LocalCluster`` with one worker;
* ipyparallel: ``%%px --block`` on one engine.

Rounds are interleaved (floor, ``%%gpu``, Dask, ``%%px``, floor, ...) so load on a shared
machine hits every row alike. Both ways the control plane can run: embedded in the kernel,
and in a running ``jupyter server`` with the extension (the kernel started through the
server's REST API, then driven over ZMQ from its connection file). Also: cold start
(nothing running -> first result; zero workers -> result) and the data path (an input,
an output, both) against bare Dask's scatter/submit/result (with its defaults, and over TLS
as ``%%gpu``'s local clusters run) and a ``np.copyto`` floor.
The in-process breakdown (``%%gpu`` in this process's IPython shell) is kept as one row.

Usage: ``python benchmarks/dispatch.py [--rounds 100] [--sizes 64,256] [--mode both] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TMP = tempfile.mkdtemp(prefix="elastic-bench-")
for _var in ("DASK_CONFIG", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR",
             "JUPYTER_CONFIG_DIR", "IPP_PROFILE_DIR"):
    os.environ.setdefault(_var, tempfile.mkdtemp(dir=_TMP))
os.environ["DASK_JUPYTER_ELASTIC__MAX_WORKERS"] = "1"
os.environ["DASK_JUPYTER_ELASTIC__WORKER__GPUS"] = "0"
os.environ["DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT"] = "300s"
os.environ["DASK_DISTRIBUTED__ADMIN__LARGE_GRAPH_WARNING_THRESHOLD"] = "100GiB"
for _var in ("JUPYTER_ELASTIC_SERVER_URL", "JUPYTER_ELASTIC_TOKEN"):
    os.environ.pop(_var, None)
os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")

FLOOR = "_w = 1"
GPU = "%%gpu\n_w = 1"
DASK = "_r = _client.submit(_inc, 1, pure=False).result()"
PX = "%%px --block\n_w = 1"

SETUP_DASK = """
from distributed import Client, LocalCluster
_bare = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                     host="127.0.0.1")
_client = Client(_bare)
def _inc(x):
    return x + 1
"""
#: The data path's second baseline: bare Dask with the security %%gpu's local clusters use
#: (TLS with per-cluster credentials), so that the cost of encryption is not counted
#: against %%gpu alone.
SETUP_DASK_TLS = """
from distributed.security import Security as _Security
_tls = _Security.temporary()
_bare_tls = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                         host="127.0.0.1", protocol="tls", security=_tls)
_client_tls = Client(_bare_tls, security=_tls)
"""
SETUP_PX = """
import ipyparallel as _ipp
_px_cluster = _ipp.Cluster(n=1, log_level=40)
_rc = _px_cluster.start_and_connect_sync()
_rc.wait_for_engines(1, timeout=120)
_rc[:].activate()
"""
TEARDOWN = """
try:
    _rc.close(); _px_cluster.stop_cluster_sync()
except NameError:
    pass
try:
    _client.close(); _bare.close()
except NameError:
    pass
try:
    _client_tls.close(); _bare_tls.close()
except NameError:
    pass
get_ipython().run_line_magic("gpu", "stop --all")
"""
#: Wait (untimed) until the session's cluster has scaled to zero workers.
TO_ZERO = """
import time as _t
from jupyter_elastic.kernel.magics import _magics as _m
_cp, _cid = _m.session.control_plane, _m.session.lease["cluster_id"]
_cp.set_idle_timeout(_cid, 1.0)
_t0 = _t.monotonic()
while _cp.cluster(_cid)["workers"] and _t.monotonic() - _t0 < 60:
    _t.sleep(0.05)
_cp.set_idle_timeout(_cid, 300.0)
assert not _cp.cluster(_cid)["workers"], "the cluster did not scale to zero"
"""


class FrontEnd:
    """One kernel, driven over ZMQ the way a notebook front end drives it."""

    def __init__(self, kc: Any) -> None:
        self.kc = kc

    def execute(self, code: str, timeout: float = 600) -> tuple[float, dict[str, Any]]:
        """Seconds from ``execute_request`` to reply *and* idle; the reply's content."""
        t = time.perf_counter()
        msg_id = self.kc.execute(code, store_history=False)
        reply: dict[str, Any] | None = None
        idle = False
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to {code[:40]!r} within {timeout:g}s")
            if reply is None:
                try:
                    msg = self.kc.get_shell_msg(timeout=0 if not idle else left)
                except queue.Empty:
                    msg = None
                if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                    reply = msg["content"]
                    continue
            if not idle:
                try:
                    msg = self.kc.get_iopub_msg(timeout=min(left, 0.5) if reply is None else left)
                except queue.Empty:
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "error":
                    errors.append("\n".join(msg["content"]["traceback"])[-2000:])
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
        elapsed = time.perf_counter() - t
        if reply["status"] != "ok":
            raise RuntimeError(f"cell failed: {code[:60]!r}: {reply.get('ename')}: "
                               f"{reply.get('evalue')}\n" + "\n".join(errors))
        return elapsed, reply

    def value(self, expression: str) -> Any:
        """An expression's value, read back as JSON."""
        msg_id = self.kc.execute("", user_expressions={"v": f"__import__('json').dumps({expression})"})
        while True:
            msg = self.kc.get_shell_msg(timeout=120)
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        result = msg["content"]["user_expressions"]["v"]
        if result.get("status") != "ok":
            raise RuntimeError(f"{expression}: {result.get('ename')}: {result.get('evalue')}")
        return json.loads(result["data"]["text/plain"].strip("'"))


# ---------------------------------------------------------------------------------- kernels
#: ``--ipc``: kernels listen on Unix sockets of their own, not TCP ports (set by ``main``).
KERNELS_ON_UNIX_SOCKETS = False
IPC_HELP = ("kernels listen on Unix sockets, not TCP ports (the test suite: no other process "
            "can take a port picked for a kernel before it binds it); the published figures "
            "are over TCP, as JupyterLab's kernels are")


def use_unix_sockets() -> None:
    """``--ipc``: from now on, kernels (this script's and the server's) listen on Unix
    sockets under a short directory of this run's own (a socket's path is limited to 107
    bytes; the server names them after its runtime directory and the kernel's id)."""
    global KERNELS_ON_UNIX_SOCKETS
    runtime = tempfile.mkdtemp(dir=_TMP)
    longest = len(os.fsencode(runtime)) + len("/kernel-") + 36 + len("-ipc-5")
    if longest > 107:
        raise SystemExit(f"--ipc: kernel sockets under {runtime} would pass the 107-byte limit "
                         "of a Unix socket's path; set TMPDIR to a shorter directory")
    os.environ["JUPYTER_RUNTIME_DIR"] = runtime
    KERNELS_ON_UNIX_SOCKETS = True


def _kernel_sockets() -> dict[str, str]:
    """``KernelManager`` settings for ``--ipc``: a socket prefix of this kernel's own."""
    if not KERNELS_ON_UNIX_SOCKETS:
        return {}
    return {"transport": "ipc", "ip": os.path.join(_TMP, uuid.uuid4().hex[:12])}


class EmbeddedKernel:
    """A kernel started by ``jupyter_client`` with no server: the control plane is embedded."""

    label = "embedded"

    def __enter__(self) -> FrontEnd:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3", **_kernel_sockets())
        self.km.start_kernel(env=dict(os.environ))
        kc = self.km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        self.kc = kc
        return FrontEnd(kc)

    def __exit__(self, *exc: Any) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


class JupyterServer:
    """``jupyter server`` with the extension on 127.0.0.1 and a token; the control plane runs
    in it and the kernels it starts get its address and token in their environment."""

    label = "server-hosted"

    def __enter__(self) -> JupyterServer:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = os.urandom(16).hex()
        self.root = tempfile.mkdtemp(dir=_TMP)
        self.log = open(os.path.join(_TMP, "server.log"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", f"--IdentityProvider.token={self.token}",
             "--ServerApp.jpserver_extensions=jupyter_elastic=True",
             f"--ServerApp.root_dir={self.root}", "--ServerApp.port_retries=0", "--allow-root",
             *(["--KernelManager.transport=ipc"] if KERNELS_ON_UNIX_SOCKETS else [])],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                self.api("GET", "api/status")
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.flush()
                    with open(self.log.name) as f:
                        tail = f.read()[-3000:]
                    raise RuntimeError("jupyter server did not start:\n" + tail) from None
                time.sleep(0.2)
        return self

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
        return json.loads(data) if data else None

    def kernel(self, notebook: str | None = None) -> ServerKernel:
        return ServerKernel(self, notebook)

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class ServerKernel:
    """A kernel started through the server's REST API, driven over ZMQ like the server does."""

    label = "server-hosted"

    def __init__(self, server: JupyterServer, notebook: str | None = None) -> None:
        self.server = server
        self.notebook = notebook  # opened as JupyterLab opens a notebook: a session
        self.session: str | None = None

    def __enter__(self) -> FrontEnd:
        from jupyter_client import BlockingKernelClient

        if self.notebook is None:
            self.id = self.server.api("POST", "api/kernels", {"name": "python3"})["id"]
        else:
            session = self.server.api("POST", "api/sessions", {
                "path": self.notebook, "name": self.notebook, "type": "notebook",
                "kernel": {"name": "python3"}})
            self.session, self.id = session["id"], session["kernel"]["id"]
        path = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], f"kernel-{self.id}.json")
        deadline = time.monotonic() + 60
        while True:  # the server writes the file while the kernel starts
            try:
                with open(path) as f:
                    json.load(f)
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        kc = BlockingKernelClient(connection_file=path)
        kc.load_connection_file()
        kc.start_channels()
        while True:  # what a front end does: ask kernel_info until the kernel answers
            msg_id = kc.kernel_info()
            try:
                while kc.get_shell_msg(timeout=1)["parent_header"].get("msg_id") != msg_id:
                    pass
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server's kernel did not answer kernel_info") from None
        while True:  # drain iopub until quiet
            try:
                kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                break
        self.kc = kc
        return FrontEnd(kc)

    def __exit__(self, *exc: Any) -> None:
        self.kc.stop_channels()
        if self.session is not None:
            self.server.api("DELETE", f"api/sessions/{self.session}")
        else:
            self.server.api("DELETE", f"api/kernels/{self.id}")


# ---------------------------------------------------------------------------------- phases
def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def warm_rounds(fe: FrontEnd, rounds: int, with_px: bool) -> dict[str, list[float]]:
    cells = {"floor": FLOOR, "gpu": GPU, "dask": DASK}
    if with_px:
        cells["px"] = PX
    for _ in range(max(3, rounds // 10)):  # warm-up, untimed
        for code in cells.values():
            fe.execute(code)
    samples: dict[str, list[float]] = {k: [] for k in cells}
    names = list(cells)
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]  # rotate who goes first
        for name in order:
            samples[name].append(fe.execute(cells[name])[0])
    return samples


def cold_start(fe: FrontEnd) -> tuple[float, float]:
    """(nothing running -> first result, zero workers -> result) of a ``%%gpu`` cell."""
    fe.execute("%load_ext jupyter_elastic")
    first = fe.execute("%%gpu\n_first = 1")[0]
    fe.execute(TO_ZERO)
    again = fe.execute("%%gpu\n_again = 1")[0]
    return first, again


def write_notebook(path: str, *sources: str) -> None:
    cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
              "source": source} for source in sources]
    with open(path, "w") as f:
        json.dump({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, f)


def prewarm_cold_start(server: JupyterServer, run: int, quick: bool = False) -> dict[str, float]:
    """Open a notebook as JupyterLab does (``POST /api/sessions``) and run its first
    ``%%gpu`` cell as soon as the kernel answers: a notebook saved without ``%%gpu`` cells
    (nothing pre-warmed: the cell starts the scheduler) against one saved with them (the
    server pre-warms its scheduler when the kernel starts). Seconds from opening the notebook
    to the first result, and for the cell alone; then, for the pre-warmed notebook, the cell
    after the pre-warm finished (a user who reads for a moment before running it)."""
    out: dict[str, float] = {}
    cases = [("cold", False, False), ("prewarmed", True, False), ("prewarmed_ready", True, True)]
    if quick:
        cases = cases[1:2]
    for key, has_gpu, settle in cases:
        name = f"{key}-{run}.ipynb"
        sources = ["%load_ext jupyter_elastic"] + (["%%gpu\n_first = 1"] if has_gpu else [])
        write_notebook(os.path.join(server.root, name), *sources)
        t = time.perf_counter()
        with server.kernel(name) as fe:
            if settle:  # wait (untimed) until the pre-warmed cluster runs
                deadline = time.monotonic() + 60
                while not any(c["status"] == "running" for c in
                              server.api("GET", "jupyter-elastic/api/clusters")["clusters"]):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the pre-warmed cluster did not start")
                    time.sleep(0.05)
            fe.execute("%load_ext jupyter_elastic")
            cell = fe.execute("%%gpu\n_first = 1")[0]
            out[f"{key}_open_to_result_s"] = time.perf_counter() - t
            out[f"{key}_cell_s"] = cell
            fe.execute("%gpu stop --all")
    return out


def data_path(fe: FrontEnd, sizes_mib: list[int], rounds: int) -> list[dict[str, Any]]:
    """Seconds per cell moving ``size`` MiB in, out, and in+out; bare Dask's scatter/submit/
    gather the same bytes; ``np.copyto`` of the same bytes as the floor."""
    rows = []
    fe.execute(SETUP_DASK_TLS, timeout=120)
    for mib in sizes_mib:
        n = mib * 2**20 // 8
        fe.execute(f"import numpy as np\n_A = np.ones({n})\n_dst = np.empty_like(_A)\n"
                   "def _nbytes(a):\n    return a.nbytes\n"
                   f"def _make(n):\n    import numpy as np\n    return np.ones(n)\n"
                   "def _plus(a):\n    return a + 1\n")
        cases = {
            # A new value of _A each round (one element changed): a fresh input, never a cache hit.
            "in": ("_A[0] += 1\n%%gpu\n_n = _A.nbytes",
                   "_A[0] += 1\n_n = _client.submit(_nbytes, _client.scatter(_A), pure=False).result()"),
            "out": (f"%%gpu\nimport numpy as np\n_B = np.ones({n})",
                    f"_B = _client.submit(_make, {n}, pure=False).result()"),
            "in+out": ("_A[0] += 1\n%%gpu\n_B = _A + 1",
                       "_A[0] += 1\n_B = _client.submit(_plus, _client.scatter(_A), pure=False).result()"),
        }
        for case, (gpu, dask) in cases.items():
            if gpu.startswith("_A[0]"):  # %%gpu must open its cell: bump _A in a cell before
                bump, gpu = gpu.split("\n", 1)
            else:
                bump = None
            t_gpu, t_dask, t_tls = [], [], []
            dask_tls = dask.replace("_client.", "_client_tls.")
            for i in range(rounds + 1):
                if bump:
                    fe.execute(bump)
                g = fe.execute(gpu)[0]
                d = fe.execute(dask)[0]
                if bump:
                    fe.execute(bump)
                d_tls = fe.execute(dask_tls)[0]
                if i:  # the first round warms them up
                    t_gpu.append(g)
                    t_dask.append(d)
                    t_tls.append(d_tls)
            fe.execute("del _B" if case != "in" else "_n = None")
            moved = (2 if case == "in+out" else 1) * n * 8
            rows.append({"size_mib": mib, "case": case, "gpu_s": statistics.median(t_gpu),
                         "dask_s": statistics.median(t_dask), "dask_tls_s": statistics.median(t_tls),
                         "bytes": moved})
        copy = fe.value("min(__import__('timeit').repeat('np.copyto(_dst, _A)', "
                        "globals=globals(), number=1, repeat=5))")
        rows.append({"size_mib": mib, "case": "memcpy", "gpu_s": copy, "dask_s": copy,
                     "dask_tls_s": copy, "bytes": n * 8})
        fe.execute("del _A, _dst")
    return rows


def in_process(rounds: int) -> tuple[float, float]:
    """The old figure, kept as a breakdown: ``%%gpu`` in this process's IPython shell."""
    import contextlib
    import io

    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
        shell.run_line_magic("load_ext", "jupyter_elastic")
        for _ in range(max(5, rounds // 10)):
            shell.run_cell(GPU, silent=True).raise_error()
        samples = []
        for _ in range(rounds):
            t = time.perf_counter()
            shell.run_cell(GPU, silent=True)
            samples.append(time.perf_counter() - t)
        shell.run_line_magic("gpu", "stop --all")
    return statistics.median(samples), percentile(samples, 0.99)


def run_mode(mode: str, args: argparse.Namespace, server: JupyterServer | None) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": mode}
    make = (lambda: server.kernel()) if server is not None else EmbeddedKernel
    # Cold start: a fresh kernel, no cluster anywhere.
    t = time.perf_counter()
    with make() as fe:
        out["kernel_start_s"] = time.perf_counter() - t
        out["cold_first_s"], out["cold_zero_s"] = cold_start(fe)
        fe.execute(TEARDOWN)
    if server is not None and not args.no_prewarm:
        out["prewarm"] = prewarm_cold_start(server, 0, args.quick)
    # Warm: a fresh kernel with every contender set up in it.
    with make() as fe:
        fe.execute("%load_ext jupyter_elastic")
        fe.execute(SETUP_DASK)
        with_px = not args.no_px
        if with_px:
            fe.execute(SETUP_PX, timeout=180)
        fe.execute(GPU)
        try:
            samples = warm_rounds(fe, args.rounds, with_px)
            out["warm"] = {k: {"p50_ms": statistics.median(v) * 1e3,
                               "p99_ms": percentile(v, 0.99) * 1e3, "n": len(v)}
                           for k, v in samples.items()}
            if args.sizes and mode in args.data_modes:
                out["data"] = data_path(fe, args.sizes, args.data_rounds)
        finally:
            fe.execute(TEARDOWN, timeout=120)
    return out


LABELS = {"floor": "plain cell `_w = 1` (floor)", "gpu": "`%%gpu` `_w = 1`",
          "dask": "`client.submit(f).result()` (bare Dask)", "px": "`%%px --block` (ipyparallel)"}


def report(results: list[dict[str, Any]], args: argparse.Namespace,
           breakdown: tuple[float, float] | None) -> None:
    print(f"# warm round trip through a real kernel (execute_request -> reply + idle), "
          f"{args.rounds} interleaved rounds, {os.cpu_count()} cores")
    print(f"| {'what':42} | {'mode':13} | {'p50 ms':>7} | {'p99 ms':>7} |")
    print(f"|{'-' * 44}|{'-' * 15}|{'-' * 9}|{'-' * 9}|")
    for r in results:
        for key, row in r["warm"].items():
            print(f"| {LABELS[key]:42} | {r['mode']:13} | {row['p50_ms']:7.2f} | {row['p99_ms']:7.2f} |")
    if breakdown is not None:
        print(f"| {'`%%gpu` in-process shell (breakdown)':42} | {'embedded':13} | "
              f"{breakdown[0] * 1e3:7.2f} | {breakdown[1] * 1e3:7.2f} |")
    print()
    print("# cold start (kernel already running, ext loaded)")
    print(f"| {'mode':13} | {'kernel start s':>14} | {'nothing -> first result s':>25} | "
          f"{'zero workers -> result s':>24} |")
    print(f"|{'-' * 15}|{'-' * 16}|{'-' * 27}|{'-' * 26}|")
    for r in results:
        print(f"| {r['mode']:13} | {r['kernel_start_s']:14.2f} | {r['cold_first_s']:25.2f} | "
              f"{r['cold_zero_s']:24.2f} |")
    warmed = [r["prewarm"] for r in results if "prewarm" in r]
    if warmed:
        print()
        print("# pre-warm (server-hosted): open a notebook (POST /api/sessions), run its first "
              "%%gpu cell as soon as the kernel answers")
        print(f"| {'notebook':44} | {'open -> first result s':>22} | {'first cell s':>12} |")
        print(f"|{'-' * 46}|{'-' * 24}|{'-' * 14}|")
        for w in warmed:
            for key, label in (("cold", "saved without %%gpu cells (no pre-warm)"),
                               ("prewarmed", "saved with %%gpu cells (pre-warmed)"),
                               ("prewarmed_ready", "pre-warmed, cell run once it is up")):
                if key + "_cell_s" not in w:
                    continue
                print(f"| {label:44} | {w[key + '_open_to_result_s']:22.2f} | "
                      f"{w[key + '_cell_s']:12.2f} |")
    data = [(r["mode"], row) for r in results for row in r.get("data", [])]
    if data:
        print()
        print(f"# data path (median of {args.data_rounds} rounds; GB/s = bytes moved / cell time)")
        print("# Dask: a LocalCluster with its defaults (plain TCP); Dask TLS: the same over TLS with "
              "per-cluster credentials, as %%gpu's local clusters run")
        print(f"| {'mode':13} | {'MiB':>5} | {'case':7} | {'%%gpu s':>8} | {'GB/s':>6} | "
              f"{'Dask s':>8} | {'GB/s':>6} | {'%%gpu/Dask':>10} | {'Dask TLS s':>10} | "
              f"{'%%gpu/TLS':>9} |")
        print(f"|{'-' * 15}|{'-' * 7}|{'-' * 9}|{'-' * 10}|{'-' * 8}|{'-' * 10}|{'-' * 8}|{'-' * 12}|"
              f"{'-' * 12}|{'-' * 11}|")
        for mode, row in data:
            g, d, dt = row["gpu_s"], row["dask_s"], row["dask_tls_s"]
            if row["case"] == "memcpy":
                print(f"| {mode:13} | {row['size_mib']:5} | {'memcpy':7} | {g:8.3f} | "
                      f"{row['bytes'] / g / 1e9:6.2f} | {'':8} | {'':6} | {'':10} | {'':10} | {'':9} |")
                continue
            print(f"| {mode:13} | {row['size_mib']:5} | {row['case']:7} | {g:8.3f} | "
                  f"{row['bytes'] / g / 1e9:6.2f} | {d:8.3f} | {row['bytes'] / d / 1e9:6.2f} | "
                  f"{g / d:10.2f} | {dt:10.3f} | {g / dt:9.2f} |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="interleaved warm rounds")
    parser.add_argument("--sizes", default="64,256",
                        help="data-path sizes in MiB, comma-separated (e.g. 64,256,1024); '' skips")
    parser.add_argument("--data-rounds", type=int, default=3)
    parser.add_argument("--mode", choices=("embedded", "server", "both"), default="both")
    parser.add_argument("--data-modes", default="embedded,server",
                        help="modes that run the data path")
    parser.add_argument("--no-px", action="store_true", help="leave ipyparallel out")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process row")
    parser.add_argument("--no-prewarm", action="store_true",
                        help="skip the server-hosted cold start with and without pre-warm")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true",
                        help="a few rounds, 8 MiB, one data round: checks that it runs")
    parser.add_argument("--ipc", action="store_true", help=IPC_HELP)
    args = parser.parse_args(argv)
    if args.ipc:
        use_unix_sockets()
    if args.quick:
        args.rounds, args.sizes, args.data_rounds = 2, "8", 1
        args.data_modes, args.no_breakdown, args.no_px = "embedded", True, True
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.data_modes = {m.strip() for m in args.data_modes.split(",")}
    results = []
    try:
        if args.mode in ("embedded", "both"):
            results.append(run_mode("embedded", args, None))
        if args.mode in ("server", "both"):
            with JupyterServer() as server:
                results.append(run_mode("server", args, server))
        breakdown = None if args.no_breakdown else in_process(args.rounds)
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
    report(results, args, breakdown)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "breakdown": breakdown}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
