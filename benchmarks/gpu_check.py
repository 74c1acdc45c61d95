"""One prepared GPU check: every compute function on CuPy against float64 NumPy references.

On a machine with a usable GPU (``cupy.is_available()``) each function runs on CuPy input,
its result is compared with the float64 NumPy reference (scikit-learn / SciPy semantics are
covered by the test-suite; here the CPU path of this library, run in float64, is the
reference), and the script reports the achieved bandwidth (input + output bytes / time) as
a share of the device's peak (H200: 4.8 TB/s) and the speed-up over the CPU path. Without a
GPU it prints why and exits 0. ``--dry-run`` runs the identical checking logic with NumPy
standing in for the device, so the script is exercised where no GPU exists.

Run: ``python benchmarks/gpu_check.py [--dry-run] [--scale 1.0] [--peak-gbs 4800]``.
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
from jupyter_elastic._arrays.namespace import gpu_available, to_numpy  # noqa: E402

BANDS = [(0.0, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 128.0)]


def cases(scale: float) -> list[tuple[str, Callable[..., Any], tuple[np.ndarray, ...], dict]]:
    """(name, function, NumPy float64 inputs, kwargs) for every function."""
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
    ]


def timed(func: Callable[[], Any], sync: Callable[[], None], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs after one warm-up, synchronising the device."""
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


def check(
    dev: ModuleType, sync: Callable[[], None], scale: float, repeat: int, peak_gbs: float
) -> int:
    """Run every case on ``dev`` (cupy, or numpy in a dry run); print a table; count failures."""
    failures = 0
    print(
        "| function | max rel. error vs float64 | device (ms) | GB/s | % of peak | CPU (ms) | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, func, inputs, kwargs in cases(scale):
        t_cpu, want = timed(lambda f=func, a=inputs, k=kwargs: f(*a, **k), lambda: None, 1)
        on_dev = tuple(dev.asarray(a) for a in inputs)
        try:
            t_dev, got = timed(lambda f=func, a=on_dev, k=kwargs: f(*a, **k), sync, repeat)
        except Exception as exc:  # report every function, not just the first failure
            failures += 1
            print(f"| {name} | FAILED: {type(exc).__name__}: {exc} | | | | | |", flush=True)
            continue
        if (
            not isinstance(got, (float, int, np.floating, np.integer))
            and type(got).__module__.split(".")[0] != dev.__name__
        ):
            failures += 1
            print(
                f"| {name} | FAILED: returned {type(got).__module__}.{type(got).__name__} | | | | | |"
            )
            continue
        got_np = np.asarray(to_numpy(got), dtype=np.float64)
        want_np = np.asarray(want, dtype=np.float64)
        scale_ref = max(1.0, float(np.max(np.abs(want_np)))) if want_np.size else 1.0
        err = (
            float(np.max(np.abs(got_np - want_np))) / scale_ref
            if got_np.shape == want_np.shape
            else float("inf")
        )
        ok = err <= 1e-9
        failures += not ok
        moved = sum(nbytes(a) for a in on_dev) + nbytes(got)
        gbs = moved / t_dev / 1e9
        print(
            f"| {name} | {err:.1e}{'' if ok else ' FAIL'} | {t_dev * 1e3:.2f} | {gbs:.1f} "
            f"| {100 * gbs / peak_gbs:.1f} | {t_cpu * 1e3:.1f} | {t_cpu / t_dev:.1f}x |",
            flush=True,
        )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="NumPy stands in for the GPU")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every data size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--peak-gbs", type=float, default=4800.0, help="device peak GB/s (H200: 4800)"
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        print("dry run: NumPy stands in for the device (checks the checking logic, not a GPU)\n")
        failures = check(np, lambda: None, args.scale, args.repeat, args.peak_gbs)
    elif not gpu_available():
        print("no GPU: CuPy is not installed or cupy.is_available() is False; nothing to check")
        return 0
    else:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        print(f"device: {props['name'].decode()}; CuPy {cupy.__version__}\n")
        failures = check(
            cupy, cupy.cuda.Device().synchronize, args.scale, args.repeat, args.peak_gbs
        )
    print(f"\n{failures} failing function(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
