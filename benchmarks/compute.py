"""Benchmark the compute library's CPU path against scikit-learn / NumPy, and Dask memory.

Prints two tables in one run (about two minutes on 2 cores):

1. time of every ``jupyter_elastic.features`` / ``evaluation`` function on in-memory NumPy
   data (millions of rows; ROC AUC on 5M rows) next to the scikit-learn or NumPy function
   it matches, best of ``--repeat`` runs, with the largest difference between the results;
2. peak resident memory of the same work on an in-memory NumPy array versus a lazily
   generated Dask array of the same size (chunked path), each measured in a fresh
   subprocess with ``resource.getrusage``.

Run: ``python benchmarks/compute.py [--scale 1.0] [--repeat 2]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ.setdefault("DASK_CONFIG", tempfile.mkdtemp(prefix="bench-dask-"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def best_time(func: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def max_diff(a: Any, b: Any) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b.toarray() if hasattr(b, "toarray") else b, dtype=np.float64)
    if a.shape != b.shape:
        return float("nan")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def timing_cases(scale: float) -> list[tuple[str, str, Callable[[], Any], Callable[[], Any]]]:
    """(name, size, ours, reference) for every function."""
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import signal
    from sklearn import metrics as skm
    from sklearn import preprocessing as skp
    from sklearn.feature_extraction import FeatureHasher

    from jupyter_elastic import evaluation as ev
    from jupyter_elastic import features as ft

    rng = np.random.default_rng(0)
    n = int(2_000_000 * scale)
    X = rng.normal(size=(n, 8))
    Xs = X[: n // 4]
    n_auc = int(5_000_000 * scale)
    y = (rng.random(n_auc) < 0.3).astype(np.int64)
    score = rng.random(n_auc) * 0.7 + 0.3 * y
    label = (score > 0.5).astype(np.int64)
    yr, pr = rng.normal(size=n_auc), rng.normal(size=n_auc)
    sig = rng.normal(size=(int(20_000 * scale), 256))
    f, p = None, None

    def scipy_bands() -> np.ndarray:
        nonlocal f, p
        f, p = signal.periodogram(sig, fs=256.0, window="boxcar", detrend=False)
        return np.stack([p[:, (f >= lo) & (f < hi)].sum(1) * (f[1] - f[0]) for lo, hi in BANDS], 1)

    rows = [[f"w{i % 997}" for i in range(j, j + 20)] for j in range(int(100_000 * scale))]
    H = rng.normal(size=(int(200_000 * scale), 64))
    size = f"{n:,}x8"
    return [
        ("scale", size, lambda: ft.scale(X), lambda: skp.scale(X)),
        ("minmax_scale", size, lambda: ft.minmax_scale(X), lambda: skp.minmax_scale(X)),
        ("robust_scale", size, lambda: ft.robust_scale(X), lambda: skp.robust_scale(X)),
        ("normalize", size, lambda: ft.normalize(X), lambda: skp.normalize(X)),
        (
            "polynomial_features(2)",
            f"{len(Xs):,}x8",
            lambda: ft.polynomial_features(Xs),
            lambda: skp.PolynomialFeatures(2).fit_transform(Xs),
        ),
        (
            "band_powers",
            f"{len(sig):,}x256",
            lambda: ft.band_powers(sig, 256.0, BANDS),
            scipy_bands,
        ),
        (
            "spectral_centroid",
            f"{len(sig):,}x256",
            lambda: ft.spectral_centroid(sig, 256.0),
            lambda: (lambda fp: (fp[1] * fp[0]).sum(1) / fp[1].sum(1))(
                signal.periodogram(sig, fs=256.0, window="boxcar", detrend=False)
            ),
        ),
        (
            "rolling_mean(50)",
            size,
            lambda: ft.rolling_mean(X, 50),
            lambda: sliding_window_view(X, 50, axis=0).mean(-1),
        ),
        (
            "rolling_std(50)",
            size,
            lambda: ft.rolling_std(X, 50),
            lambda: sliding_window_view(X, 50, axis=0).std(-1),
        ),
        (
            "rolling_max(50)",
            size,
            lambda: ft.rolling_max(X, 50),
            lambda: sliding_window_view(X, 50, axis=0).max(-1),
        ),
        (
            "histogram_features(16)",
            f"{len(H):,}x64",
            lambda: ft.histogram_features(H, 16, (-3, 3)),
            lambda: np.stack([np.histogram(r, 16, (-3, 3))[0] for r in H]),
        ),
        (
            "quantile_features",
            f"{len(H):,}x64",
            lambda: ft.quantile_features(H),
            lambda: np.nanquantile(H, [0.25, 0.5, 0.75], axis=1).T,
        ),
        (
            "hash_features(1024)",
            f"{len(rows):,} docs x20",
            lambda: ft.hash_features(rows, 1024),
            lambda: FeatureHasher(1024, input_type="string").transform(rows).toarray(),
        ),
        (
            "roc_auc_score",
            f"{n_auc:,}",
            lambda: ev.roc_auc_score(y, score),
            lambda: skm.roc_auc_score(y, score),
        ),
        (
            "average_precision_score",
            f"{n_auc:,}",
            lambda: ev.average_precision_score(y, score),
            lambda: skm.average_precision_score(y, score),
        ),
        ("log_loss", f"{n_auc:,}", lambda: ev.log_loss(y, score), lambda: skm.log_loss(y, score)),
        (
            "accuracy_score",
            f"{n_auc:,}",
            lambda: ev.accuracy_score(y, label),
            lambda: skm.accuracy_score(y, label),
        ),
        (
            "f1_score(macro)",
            f"{n_auc:,}",
            lambda: ev.f1_score(y, label, average="macro"),
            lambda: skm.f1_score(y, label, average="macro"),
        ),
        (
            "confusion_matrix",
            f"{n_auc:,}",
            lambda: ev.confusion_matrix(y, label),
            lambda: skm.confusion_matrix(y, label),
        ),
        (
            "mean_squared_error",
            f"{n_auc:,}",
            lambda: ev.mean_squared_error(yr, pr),
            lambda: skm.mean_squared_error(yr, pr),
        ),
        (
            "mean_absolute_error",
            f"{n_auc:,}",
            lambda: ev.mean_absolute_error(yr, pr),
            lambda: skm.mean_absolute_error(yr, pr),
        ),
        ("r2_score", f"{n_auc:,}", lambda: ev.r2_score(yr, pr), lambda: skm.r2_score(yr, pr)),
    ]


BANDS = [(0.0, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 128.0)]


# ----------------------------------------------------------- memory (subprocesses) ---

MEMORY_CASES = {
    "(imports only)": "imports",
    "scale + minmax_scale": "features",
    "evaluate: accuracy, log_loss, mse": "evaluate",
    "evaluate: + roc_auc, average_precision": "evaluate_rank",
}


def reset_peak() -> None:
    """Forget the peak RSS inherited across fork/exec (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mib() -> float:
    """Peak resident memory of this process since :func:`reset_peak`, in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_case(case: str, path: str, rows: int) -> None:
    """Run one memory case in this (fresh) process and print its peak RSS in MiB."""
    reset_peak()
    import dask.array as da

    from jupyter_elastic import evaluation as ev
    from jupyter_elastic import features as ft

    if case == "imports":
        print(peak_mib())
        return

    d = 16
    chunk = 250_000
    if path == "dask":
        X = da.random.default_rng(0).normal(size=(rows, d), chunks=(chunk, d))
    else:
        X = np.random.default_rng(0).normal(size=(rows, d))
    coef = np.linspace(-1, 1, d)
    if case == "features":
        for out in (ft.scale(X), ft.minmax_scale(X)):
            total = out.sum()
            float(total.compute() if path == "dask" else total)
    else:
        y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)

        def predict(block: Any) -> dict[str, Any]:
            p = 1 / (1 + np.exp(-(block @ coef)))
            return {"proba": p, "label": (p > 0.5).astype(np.int64)}

        metrics: dict[str, Any] = {
            "acc": ("accuracy", {"on": "label"}),
            "ll": ("log_loss", {"on": "proba"}),
            "mse": ("mse", {"on": "proba"}),
        }
        if case == "evaluate_rank":
            metrics |= {
                "auc": ("roc_auc", {"on": "proba"}),
                "ap": ("average_precision", {"on": "proba"}),
            }
        if path == "dask":
            ev.evaluate(predict, X, y, metrics)
        else:  # the in-memory way: predict everything, then score
            out = predict(X)
            ev.accuracy_score(y, out["label"])
            ev.log_loss(y, out["proba"])
            ev.mean_squared_error(y, out["proba"])
            if case == "evaluate_rank":
                ev.roc_auc_score(y, out["proba"])
                ev.average_precision_score(y, out["proba"])
    print(peak_mib())


def measure_memory(rows: int, cases: int | None = None) -> list[tuple[str, float, float]]:
    """(case, in-memory peak MiB, Dask peak MiB) from fresh subprocesses (the first
    ``cases`` cases only, when given)."""
    results = []
    for label, case in list(MEMORY_CASES.items())[:cases]:
        peaks = []
        for path in ("numpy", "dask"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--memory-case",
                    case,
                    "--path",
                    path,
                    "--rows",
                    str(rows),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            peaks.append(float(out.stdout.strip().splitlines()[-1]))
        results.append((label, *peaks))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every data size")
    parser.add_argument("--repeat", type=int, default=2, help="timing runs per function (best)")
    parser.add_argument("--memory-rows", type=int, default=4_000_000)
    parser.add_argument("--memory-case")
    parser.add_argument("--path")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one run: checks that it runs (tests/test_benchmarks_quick.py)")
    args = parser.parse_args()
    if args.quick:
        args.scale, args.repeat, args.memory_rows = 0.001, 1, 20_000
    if args.memory_case:
        memory_case(args.memory_case, args.path, args.rows)
        return

    started = time.perf_counter()
    rows = int(args.memory_rows * args.scale)
    print(
        f"\nPeak RSS, {rows:,} x 16 float64 ({rows * 16 * 8 / 2**20:,.0f} MiB): "
        "in-memory NumPy vs lazily generated Dask array (250k-row chunks)\n"
    )
    print("| work | NumPy in memory (MiB) | Dask chunked (MiB) |")
    print("|---|---:|---:|")
    for label, numpy_peak, dask_peak in measure_memory(rows, 1 if args.quick else None):
        print(f"| {label} | {numpy_peak:,.0f} | {dask_peak:,.0f} |", flush=True)
    print()
    print(
        f"CPU path vs reference (best of {args.repeat}; {os.cpu_count()} CPUs; NumPy {np.__version__})\n"
    )
    print("| function | data | jupyter-elastic (s) | reference (s) | speed-up | max abs diff |")
    print("|---|---|---:|---:|---:|---:|")
    for name, size, ours, ref in timing_cases(args.scale):
        t_ours = t_ref = float("inf")
        for _ in range(args.repeat):  # interleaved: the first call's page faults hit neither side
            t, r_ref = best_time(ref, 1)
            t_ref = min(t_ref, t)
            t, r_ours = best_time(ours, 1)
            t_ours = min(t_ours, t)
        print(
            f"| {name} | {size} | {t_ours:.3f} | {t_ref:.3f} | {t_ref / t_ours:.1f}x "
            f"| {max_diff(r_ours, r_ref):.1e} |",
            flush=True,
        )
    print(f"\ntotal benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
