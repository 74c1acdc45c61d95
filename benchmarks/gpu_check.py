"""One prepared GPU check: every compute function on CuPy against float64 NumPy references.

On a machine with a usable GPU (``cupy.is_available()``) each function runs on CuPy input
(float64 and float32, inputs with NaN where the function accepts them, and one Dask array
with CuPy chunks per engine: lazy map-blocks, exact distributed quantiles, chunked metric
reduction), its result is compared with the float64 NumPy reference (the CPU path of this
library; scikit-learn / SciPy semantics are covered by the test-suite), and the script
reports, per function: the error, device and CPU times (best of the same ``--repeat`` runs
on both), the *effective* bandwidth (input + output bytes / device time, timed with
``cupyx.profiler.benchmark``) against the device's peak computed from its attributes
(``memoryClockRate x memoryBusWidth x 2 / 8``), and the peak device memory the call used.
A versions header names the CUDA runtime and driver, CuPy and NumPy. Without a GPU it
prints why and exits 0. ``--dry-run`` runs the identical checking logic with NumPy standing
in for the device, so the script is exercised where no GPU exists (CI runs it).

Functions documented to return host values (metrics: Python floats; ``confusion_matrix``:
a NumPy array) are expected to; every other function must return the device's array type.

After the functions, an end-to-end ``%%gpu`` check runs through a real kernel on the local
backend (one worker per GPU): a cell that returns CuPy comes back as NumPy, and as CuPy with
``--keep-on-device``; ``%gpu status --json`` shows each worker's GPU and its utilisation.
With ``--dry-run`` the same cells run on CPU workers (the device-only checks are reported as
skipped), so the end-to-end part cannot rot either.

Run: ``python benchmarks/gpu_check.py [--dry-run] [--scale 1.0] [--repeat 3] [--no-e2e]``.
Exit status: 0 when every check passes (or no GPU), 1 when any result disagrees.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

os.environ.setdefault("DASK_CONFIG", tempfile.mkdtemp(prefix="gpu-check-dask-"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jupyter_elastic import evaluation as ev  # noqa: E402
from jupyter_elastic import features as ft  # noqa: E402
from jupyter_elastic._arrays.namespace import gpu_available, is_dask, to_numpy  # noqa: E402

BANDS = [(0.0, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 128.0)]
#: Functions documented to return a NumPy array whatever the input's device.
HOST_ARRAY_RESULTS = {"confusion_matrix"}
#: Allowed max relative error against the float64 reference, by input dtype.
TOLERANCE = {"float64": 1e-9, "float32": 2e-5}

Case = tuple[str, Callable[..., Any], tuple[np.ndarray, ...], dict]


def cases(scale: float) -> list[Case]:
    """(name, function, NumPy inputs, kwargs) for every function and variant.

    Names ending in ``[float32]`` get float32 inputs, ``[nan]`` inputs with NaN, and
    ``[dask]`` a Dask array with device chunks (one per engine).
    """
    rng = np.random.default_rng(0)
    n = max(1000, int(4_000_000 * scale))
    X = rng.normal(size=(n, 8))
    Xp = X[: n // 4]
    sig = rng.normal(size=(max(16, int(50_000 * scale)), 256))
    y = (rng.random(n) < 0.3).astype(np.int64)
    s = np.round(rng.random(n) * 0.7 + 0.3 * y, 4)
    label = (s > 0.5).astype(np.int64)
    yr, pr = rng.normal(size=n), rng.normal(size=n)
    return [
        ("scale", ft.scale, (X,), {}),
        ("minmax_scale", ft.minmax_scale, (X,), {}),
        ("robust_scale", ft.robust_scale, (X,), {}),
        ("normalize", ft.normalize, (X,), {}),
        ("polynomial_features", ft.polynomial_features, (Xp,), {"degree": 2}),
        ("band_powers", ft.band_powers, (sig,), {"fs": 256.0, "bands": BANDS}),
        ("spectral_centroid", ft.spectral_centroid, (sig,), {"fs": 256.0}),
        ("dominant_frequency", ft.dominant_frequency, (sig,), {"fs": 256.0}),
        ("rolling_mean", ft.rolling_mean, (X,), {"window": 50}),
        ("rolling_std", ft.rolling_std, (X,), {"window": 50}),
        ("rolling_min", ft.rolling_min, (X,), {"window": 50}),
        ("rolling_max", ft.rolling_max, (X,), {"window": 50}),
        ("histogram_features", ft.histogram_features, (sig,), {"bins": 16, "range": (-3.0, 3.0)}),
        ("quantile_features", ft.quantile_features, (sig,), {}),
        ("accuracy_score", ev.accuracy_score, (y, label), {}),
        ("precision_score", ev.precision_score, (y, label), {}),
        ("recall_score", ev.recall_score, (y, label), {}),
        ("f1_score(macro)", ev.f1_score, (y, label), {"average": "macro"}),
        ("confusion_matrix", ev.confusion_matrix, (y, label), {}),
        ("roc_auc_score", ev.roc_auc_score, (y, s), {}),
        ("average_precision_score", ev.average_precision_score, (y, s), {}),
        ("log_loss", ev.log_loss, (y, s), {}),
        ("mean_squared_error", ev.mean_squared_error, (yr, pr), {}),
        ("mean_absolute_error", ev.mean_absolute_error, (yr, pr), {}),
        ("r2_score", ev.r2_score, (yr, pr), {}),
        *_variants(X, Xp, sig, y, s),
    ]


def _variants(X: np.ndarray, Xp: np.ndarray, sig: np.ndarray, y: Any, s: Any) -> list[Case]:
    X32, Xnan = X.astype(np.float32), X.copy()
    Xnan[::17, 1] = np.nan
    signan = sig.copy()
    signan[::5, 3] = np.nan
    return [
        ("scale[float32]", ft.scale, (X32,), {}),
        ("minmax_scale[float32]", ft.minmax_scale, (X32,), {}),
        ("robust_scale[float32]", ft.robust_scale, (X32,), {}),
        ("polynomial_features[float32]", ft.polynomial_features, (Xp.astype(np.float32),), {}),
        ("rolling_std[float32]", ft.rolling_std, (X32,), {"window": 50}),
        ("scale[nan]", ft.scale, (Xnan,), {}),
        ("robust_scale[nan]", ft.robust_scale, (Xnan,), {}),
        ("quantile_features[nan]", ft.quantile_features, (signan,), {}),
        ("scale[dask]", ft.scale, (X,), {}),  # lazy map-blocks engine
        ("robust_scale[dask]", ft.robust_scale, (Xnan,), {}),  # exact quantile engine
        ("roc_auc_score[dask]", ev.roc_auc_score, (y, s), {}),  # chunked reduction engine
    ]


def timed(func: Callable[[], Any], sync: Callable[[], None], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs after one warm-up (``sync`` waits for the device)."""
    result = func()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, result


def nbytes(value: Any) -> int:
    return int(getattr(value, "nbytes", 0))


class Device:
    """What ``check`` needs of the device: CuPy on a GPU, NumPy (or a stand-in) in a dry run.

    ``bench(func, repeat) -> seconds`` times a call (default: :func:`timed` with ``sync``);
    ``peak_memory(func) -> bytes`` is the device memory one call needs at most (or None);
    ``peak_gbs`` the device's peak bandwidth (None when unknown).
    """

    def __init__(
        self,
        xp: ModuleType,
        sync: Callable[[], None] = lambda: None,
        bench: Callable[[Callable[[], Any], int], float] | None = None,
        peak_memory: Callable[[Callable[[], Any]], int | None] = lambda func: None,
        peak_gbs: float | None = None,
    ) -> None:
        self.xp, self.sync, self.bench = xp, sync, bench
        self.peak_memory, self.peak_gbs = peak_memory, peak_gbs

    @staticmethod
    def rows_per_chunk(n: int) -> int:
        return max(1, n // 4)

    def time(self, func: Callable[[], Any], repeat: int) -> float:
        if self.bench is not None:
            return self.bench(func, repeat)
        return timed(func, self.sync, repeat)[0]


def sanitize(text: str, limit: int = 160) -> str:
    """Exception text fit for one Markdown table cell: no pipes, newlines or overlong runs."""
    flat = " ".join(str(text).split()).replace("|", "/").replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _expected_kind(name: str, got: Any, dev: Device, dask_input: bool) -> str | None:
    """Why ``got`` is the wrong kind of result for ``name`` (None when it is right)."""
    base = name.split("[")[0]
    if isinstance(got, (float, int, np.floating, np.integer)):
        return None  # metrics return host scalars, as documented
    if base in HOST_ARRAY_RESULTS:
        return None if isinstance(got, np.ndarray) else f"expected a NumPy array, got {type(got)}"
    if dask_input:
        if not is_dask(got):
            return f"expected a Dask array, got {type(got).__name__}"
        got = got._meta
    root = type(got).__module__.split(".")[0]
    return None if root == dev.xp.__name__.split(".")[0] else (
        f"returned {type(got).__module__}.{type(got).__name__}")


def check(dev: Device, scale: float, repeat: int) -> int:
    """Run every case on ``dev``; print a Markdown table; return the number of failures."""
    import dask.array as da  # noqa: PLC0415

    failures = 0
    print(
        "| function | max rel. error vs float64 | device (ms) | effective GB/s "
        "| % of peak | peak device memory (MiB) | CPU (ms) | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, func, inputs, kwargs in cases(scale):
        dask_input = name.endswith("[dask]")
        reference = tuple(a.astype(np.float64) if a.dtype == np.float32 else a for a in inputs)
        t_cpu, want = timed(lambda f=func, a=reference, k=kwargs: f(*a, **k), lambda: None, repeat)
        on_dev = tuple(dev.xp.asarray(a) for a in inputs)
        if dask_input:
            on_dev = tuple(
                da.from_array(a, chunks=(dev.rows_per_chunk(a.shape[0]),) + a.shape[1:])
                for a in on_dev
            )

        def call(f: Any = func, a: Any = on_dev, k: Any = kwargs, lazy: bool = dask_input) -> Any:
            out = f(*a, **k)
            return out.compute() if lazy and is_dask(out) else out

        try:
            got = func(*on_dev, **kwargs)
            wrong = _expected_kind(name, got, dev, dask_input)
            if wrong is None:
                got = call()
                t_dev = dev.time(call, repeat)
                peak_mem = dev.peak_memory(call)
        except Exception as exc:  # report every function, not just the first failure
            failures += 1
            print(f"| {name} | FAILED: {type(exc).__name__}: {sanitize(exc)} | | | | | | |",
                  flush=True)
            continue
        if wrong is not None:
            failures += 1
            print(f"| {name} | FAILED: {sanitize(wrong)} | | | | | | |", flush=True)
            continue
        got_np = np.asarray(to_numpy(got), dtype=np.float64)
        want_np = np.asarray(want, dtype=np.float64)
        finite = np.isfinite(want_np)
        scale_ref = max(1.0, float(np.max(np.abs(want_np[finite])))) if finite.any() else 1.0
        if got_np.shape != want_np.shape or not np.array_equal(np.isnan(got_np), np.isnan(want_np)):
            err = float("inf")
        else:
            err = float(np.max(np.abs(got_np[finite] - want_np[finite]), initial=0.0)) / scale_ref
        dtype = "float32" if name.endswith("[float32]") else "float64"
        ok = err <= TOLERANCE[dtype]
        failures += not ok
        moved = sum(nbytes(a) for a in on_dev) + nbytes(got)
        gbs = moved / t_dev / 1e9
        share = f"{100 * gbs / dev.peak_gbs:.1f}" if dev.peak_gbs else "n/a"
        mem = f"{peak_mem / 2**20:.1f}" if peak_mem is not None else "n/a"
        print(
            f"| {name} | {err:.1e}{'' if ok else ' FAIL'} | {t_dev * 1e3:.2f} | {gbs:.1f} "
            f"| {share} | {mem} | {t_cpu * 1e3:.1f} | {t_cpu / t_dev:.1f}x |",
            flush=True,
        )
    return failures


def cupy_device() -> Device:
    """CuPy on the current GPU: benchmark timing, peak bandwidth and memory from CUDA."""
    import cupy  # noqa: PLC0415
    from cupyx.profiler import benchmark  # noqa: PLC0415

    device = cupy.cuda.Device()
    clock_khz = device.attributes["MemoryClockRate"]
    bus_bits = device.attributes["GlobalMemoryBusWidth"]
    peak = clock_khz * 1e3 * bus_bits * 2 / 8 / 1e9

    def bench(func: Callable[[], Any], repeat: int) -> float:
        result = benchmark(func, n_repeat=repeat, n_warmup=1)
        wall = np.maximum(result.cpu_times, result.gpu_times.max(axis=0))
        return float(wall.min())

    def peak_memory(func: Callable[[], Any]) -> int:
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        base = pool.used_bytes()
        top = [base]

        class Peak(cupy.cuda.MemoryHook):
            name = "gpu-check-peak"

            def malloc_postprocess(self, **kw: Any) -> None:
                top[0] = max(top[0], pool.used_bytes())

        with Peak():
            func()
            device.synchronize()
        return top[0] - base

    return Device(cupy, device.synchronize, bench, peak_memory, peak)


def versions_header(dry_run: bool) -> str:
    parts = [f"NumPy {np.__version__}"]
    if not dry_run:
        import cupy  # noqa: PLC0415

        rt, drv = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        parts = [
            f"device {name.decode() if isinstance(name, bytes) else name}",
            f"CUDA runtime {rt // 1000}.{rt % 1000 // 10}",
            f"driver (CUDA) {drv // 1000}.{drv % 1000 // 10}",
            f"CuPy {cupy.__version__}",
            *parts,
        ]
    return "; ".join(parts)


def roc_vs_sklearn(dev: Device, rows: int, repeat: int) -> tuple[str, bool]:
    """ROC AUC on ``rows`` scores on the device against scikit-learn on this machine's CPU
    (the goal: at least 20x faster at 100M rows); the line to print, and whether it agreed."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    rng = np.random.default_rng(7)
    y = (rng.random(rows) < 0.3).astype(np.int8)
    score = rng.random(rows).astype(np.float32) + 0.3 * y
    y_dev, score_dev = dev.xp.asarray(y), dev.xp.asarray(score)
    ours = float(ev.roc_auc_score(y_dev, score_dev))
    t_dev = dev.time(lambda: ev.roc_auc_score(y_dev, score_dev), repeat)
    t0 = time.perf_counter()
    reference = float(roc_auc_score(y, score))
    t_cpu = time.perf_counter() - t0
    agree = abs(ours - reference) <= 1e-9 * max(1.0, abs(reference))
    line = (f"ROC AUC, {rows:,} rows: device {t_dev * 1e3:.1f} ms, scikit-learn (CPU) "
            f"{t_cpu * 1e3:.1f} ms, {t_cpu / max(t_dev, 1e-12):.1f}x; |difference| "
            f"{abs(ours - reference):.1e} ({'ok' if agree else 'FAIL'})")
    return line, agree


E2E_CELLS = {
    "on_device": (
        "%%gpu\n"
        "from jupyter_elastic._arrays.namespace import get_namespace, gpu_available\n"
        "import numpy\n"
        "xp = __import__('cupy') if gpu_available() else numpy\n"
        "B = xp.asarray(A) * 2\n"
        "total = float(B.sum())\n"
        "where = type(B).__module__.split('.')[0]\n"
    ),
    "kept": (
        "%%gpu --keep-on-device\n"
        "import numpy\n"
        "from jupyter_elastic._arrays.namespace import gpu_available\n"
        "xp = __import__('cupy') if gpu_available() else numpy\n"
        "C = xp.arange(10) * 3\n"
    ),
}


def e2e_check(on_gpu: bool, timeout: float = 300.0) -> list[tuple[str, str, str]]:
    """``%%gpu`` through a real kernel on the local backend: rows of (check, result, detail)."""
    import json
    import queue

    from jupyter_client.manager import KernelManager

    env = dict(os.environ)
    env.pop("JUPYTER_ELASTIC_SERVER_URL", None)  # the embedded control plane, local backend
    env.update({"DASK_JUPYTER_ELASTIC__BACKEND": "local", "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "30s"})
    if not on_gpu:
        env["DASK_JUPYTER_ELASTIC__WORKER__GPUS"] = "0"
    km = KernelManager(kernel_name="python3", transport="ipc")
    km.start_kernel(env=env)
    client = km.client()
    client.start_channels()
    rows: list[tuple[str, str, str]] = []

    def run(code: str) -> tuple[str, str, Any]:
        msg_id = client.execute(code)
        text: list[str] = []
        data = None
        while True:
            try:
                msg = client.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                return "timeout", "".join(text), data
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text.append(content["text"])
            elif kind == "execute_result":
                data = content["data"]
            elif kind == "error":
                text.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                reply = client.get_shell_msg(timeout=timeout)
                return reply["content"]["status"], "".join(text), data

    try:
        client.wait_for_ready(timeout=60)
        run("%load_ext jupyter_elastic\nimport numpy as np\nA = np.arange(1_000_000, dtype='float64')")
        status, text, _ = run(E2E_CELLS["on_device"])
        _, printed, _ = run("print(where, total, type(B).__module__)")
        ok = status == "ok" and printed.split()[1:2] == [f"{999_999 * 1_000_000:.1f}"]
        back = printed.split()[-1].split(".")[0] if printed.split() else "?"
        rows.append(("cell result matches", "ok" if ok else "FAIL", sanitize(printed or text)))
        rows.append(("CuPy comes back as NumPy", "ok" if back == "numpy" else "FAIL", back))
        status, text, _ = run(E2E_CELLS["kept"])
        _, printed, _ = run("print(type(C).__module__.split('.')[0])")
        expected = "cupy" if on_gpu else "numpy"
        kept_ok = status == "ok" and printed.strip() == expected
        rows.append(("--keep-on-device keeps CuPy", ("ok" if kept_ok else "FAIL") if on_gpu else
                     "skipped (no GPU)", sanitize(printed or text)))
        _, printed, _ = run("import json\nprint(json.dumps(get_ipython().run_line_magic('gpu', 'status --json')))")
        report = json.loads(printed.strip().splitlines()[-1]) if printed.strip() else {}
        workers = [w for c in report.get("clusters", []) for w in c.get("worker_details", [])]
        gpus = [w for w in workers if w.get("gpus")]
        util = [w.get("gpu_utilization") for w in gpus]
        if on_gpu:
            rows.append(("one worker per GPU, GPU listed", "ok" if gpus else "FAIL", f"{len(gpus)} GPU worker(s)"))
            rows.append(("GPU utilisation in %gpu status --json",
                         "ok" if util and all(u is not None for u in util) else "FAIL", str(util)))
        else:
            rows.append(("workers listed in %gpu status --json", "ok" if workers else "FAIL",
                         f"{len(workers)} CPU worker(s)"))
        run("%gpu stop --all")
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=False)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="NumPy stands in for the GPU")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every data size")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs, CPU and device alike")
    parser.add_argument("--no-e2e", action="store_true", help="skip the %%%%gpu end-to-end check")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one run (with --dry-run: checks that it runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.repeat = 0.001, 1
    if args.dry_run:
        print("dry run: NumPy stands in for the device (checks the checking logic, not a GPU)")
        print(versions_header(True) + "\n")
        failures = check(Device(np), args.scale, args.repeat)
    elif not gpu_available():
        print("no GPU: CuPy is not installed or cupy.is_available() is False; nothing to check")
        return 0
    else:
        dev = cupy_device()
        print(versions_header(False) + f"; peak bandwidth {dev.peak_gbs:.0f} GB/s\n")
        failures = check(dev, args.scale, args.repeat)
    if gpu_available() or args.dry_run:
        line, agree = roc_vs_sklearn(Device(np) if args.dry_run else dev,
                                     max(1000, int(100_000_000 * args.scale)), args.repeat)
        print("\n" + line)
        failures += 0 if agree else 1
    print(f"\n{failures} failing function(s)")
    if not args.no_e2e:
        rows = e2e_check(on_gpu=not args.dry_run)
        print("\n| %%gpu end-to-end check | result | detail |\n|---|---|---|")
        for name, result, detail in rows:
            print(f"| {name} | {result} | {detail} |")
        e2e_failures = sum(result == "FAIL" for _, result, _ in rows)
        print(f"\n{e2e_failures} failing end-to-end check(s)")
        failures += e2e_failures
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
