"""Spectral features of batches of 1-D signals and rolling-window statistics, any namespace.

Spectral features use the one-sided periodogram with a rectangular window, the same
density ``scipy.signal.periodogram(x, fs, window="boxcar", detrend=False)`` returns:
``P = |rfft(x)|**2 / (fs * n)``, doubled except at DC (and Nyquist for even ``n``).
Band power is ``sum(P[lo <= f < hi]) * fs / n``. Rolling statistics are in *valid* mode
(one value per full window, ``n - window + 1`` along the axis, no NaN padding): the mean
and standard deviation come from float64 prefix sums of the centred data, the minimum and
maximum from a doubling (sparse-table) scheme in ``O(n log window)``. On Dask input every
signal (row) is processed inside its chunk, and rolling windows that straddle chunks read
only ``window - 1`` rows of the previous chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from .._arrays.checks import as_array, check_finite, check_float_array, check_ndim, float_dtype
from .._arrays.namespace import cast, get_namespace, is_dask

__all__ = [
    "band_powers",
    "dominant_frequency",
    "periodogram",
    "rolling_max",
    "rolling_mean",
    "rolling_min",
    "rolling_std",
    "spectral_centroid",
    "spectral_features",
]


def _signals(x: Any) -> Any:
    x = as_array(x, "x")
    check_ndim(x, "x", (1, 2))
    check_float_array(x, "x")
    x = check_finite(cast(x, float_dtype(x)), "x")
    if x.shape[-1] < 2:
        raise ValueError(f"signals need at least 2 samples along the last axis, got {x.shape[-1]}")
    return x


def periodogram(x: Any, fs: float = 1.0, *, detrend: bool = False) -> tuple[Any, Any]:
    """One-sided periodogram density of each signal (last axis): ``(freqs, P)``.

    Examples
    --------
    >>> f, p = periodogram([1.0, -1.0, 1.0, -1.0], fs=4.0)
    >>> f.tolist(), p.tolist()
    ([0.0, 1.0, 2.0], [0.0, 0.0, 1.0])
    """
    x = as_array(x, "x")
    xp = get_namespace(x)
    n = x.shape[-1]
    if detrend:
        x = x - xp.mean(x, axis=-1, keepdims=True)
    spec = xp.fft.rfft(x, axis=-1)
    power = (spec.real**2 + spec.imag**2) / (fs * n)
    double = xp.ones(power.shape[-1], dtype=power.dtype) * 2
    double[0] = 1
    if n % 2 == 0:
        double[-1] = 1
    freqs = xp.fft.rfftfreq(n, d=1.0 / fs).astype(power.dtype)
    return freqs, power * double


def _check_fs(fs: float) -> float:
    if not np.isfinite(fs) or fs <= 0:
        raise ValueError(f"fs (sampling frequency) must be a positive number, got {fs!r}")
    return float(fs)


def _check_bands(bands: Sequence[tuple[float, float]]) -> np.ndarray:
    arr = np.asarray(bands, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"bands must be a non-empty list of (low, high) pairs, got {bands!r}")
    if np.any(arr[:, 0] >= arr[:, 1]) or np.any(arr < 0):
        raise ValueError(f"each band must satisfy 0 <= low < high, got {arr.tolist()}")
    return arr


def _spectral_block(x: Any, fs: float, bands: Any, what: str, detrend: bool) -> Any:
    xp = get_namespace(x)
    freqs, power = periodogram(x, fs, detrend=detrend)
    cols = []
    if what in ("bands", "all"):
        df = fs / x.shape[-1]
        for lo, hi in bands:
            mask = xp.asarray((freqs >= lo) & (freqs < hi), dtype=power.dtype)
            cols.append(xp.sum(power * mask, axis=-1) * df)
    if what in ("centroid", "all"):
        total = xp.sum(power, axis=-1)
        weighted = xp.sum(power * freqs, axis=-1)
        safe = xp.where(total > 0, total, xp.ones_like(total))
        cols.append(xp.where(total > 0, weighted / safe, xp.zeros_like(total)))
    if what in ("dominant", "all"):
        cols.append(freqs[xp.argmax(power, axis=-1)])
    out = xp.stack(cols, axis=-1)
    return out if what in ("bands", "all") else out[..., 0]


def _spectral(x: Any, fs: float, bands: Any, what: str, detrend: bool) -> Any:
    fs = _check_fs(fs)
    band_arr: Any = None if bands is None else _check_bands(bands)
    x = _signals(x)
    if x.ndim == 1:
        return _spectral(x[None, :], fs, bands, what, detrend)[0]
    func = partial(_spectral_block, fs=fs, bands=band_arr, what=what, detrend=detrend)
    if not is_dask(x):
        return func(x)
    x = x.rechunk({1: -1})
    if what == "bands" or what == "all":
        n_out = len(band_arr) + (2 if what == "all" else 0)
        return x.map_blocks(func, chunks=(x.chunks[0], (n_out,)), meta=x._meta)
    return x.map_blocks(func, drop_axis=1, meta=get_namespace(x._meta).empty((0,), dtype=x.dtype))


def band_powers(
    x: Any, fs: float, bands: Sequence[tuple[float, float]], *, detrend: bool = False
) -> Any:
    """Power of each signal in each frequency band ``[low, high)``: shape (n_signals, n_bands).

    Parameters
    ----------
    x : array of shape (n_samples,) or (n_signals, n_samples)
    fs : float
        Sampling frequency.
    bands : sequence of (low, high)
        Frequency bands in the units of ``fs``.
    detrend : bool, default False
        Subtract each signal's mean first.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(256) / 256
    >>> band_powers(np.sin(2 * np.pi * 10 * t), 256.0, [(5, 15), (20, 40)]).round(3).tolist()
    [0.5, 0.0]
    """
    return _spectral(x, fs, bands, "bands", detrend)


def spectral_centroid(x: Any, fs: float = 1.0, *, detrend: bool = False) -> Any:
    """Power-weighted mean frequency of each signal (0 for a signal with no power).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(256) / 256
    >>> float(spectral_centroid(np.sin(2 * np.pi * 10 * t), 256.0).round(6))
    10.0
    """
    return _spectral(x, fs, None, "centroid", detrend)


def dominant_frequency(x: Any, fs: float = 1.0, *, detrend: bool = False) -> Any:
    """Frequency of the largest periodogram value of each signal (the lowest on ties).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(256) / 256
    >>> float(dominant_frequency(np.sin(2 * np.pi * 10 * t), 256.0))
    10.0
    """
    return _spectral(x, fs, None, "dominant", detrend)


def spectral_features(
    x: Any, fs: float, bands: Sequence[tuple[float, float]], *, detrend: bool = False
) -> Any:
    """Columns ``[band powers..., spectral centroid, dominant frequency]`` per signal.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(256) / 256
    >>> spectral_features(np.sin(2 * np.pi * 10 * t), 256.0, [(5, 15)]).round(3).tolist()
    [0.5, 10.0, 10.0]
    """
    return _spectral(x, fs, bands, "all", detrend)


# ------------------------------------------------------------------ rolling windows ---


def _window_moments(X: Any, window: int, spread: bool = True) -> tuple[Any, Any]:
    """Mean and centred sum of squares of every full window, merged pairwise (stable).

    Level ``k`` holds the moments of all windows of length ``2**k`` (two halves merged with
    Chan et al.'s update); a window of length ``window`` is the merge of one level-``k``
    window per set bit ``k`` of ``window``, laid end to end: ``O(n log window)`` and no
    prefix-sum cancellation, so constant windows give exactly zero spread. With
    ``spread=False`` only the means are computed (the second value is None).
    """
    xp = get_namespace(X)
    n_out = X.shape[0] - window + 1
    mean_k = X.astype(np.float64)
    m2_k: Any = xp.zeros_like(mean_k) if spread else None
    acc_mean: Any = None
    acc_m2: Any = None
    acc_n, size = 0, 1
    while True:
        if window & size:
            seg_mean = mean_k[acc_n : acc_n + n_out]
            seg_m2 = m2_k[acc_n : acc_n + n_out] if spread else None
            if acc_mean is None:
                acc_mean, acc_m2 = seg_mean, seg_m2
            else:
                total = acc_n + size
                delta = seg_mean - acc_mean
                acc_mean = acc_mean + delta * (size / total)
                if spread:
                    acc_m2 = acc_m2 + seg_m2 + delta * delta * (acc_n * size / total)
            acc_n += size
        if 2 * size > window:
            return acc_mean, acc_m2
        if spread:
            delta = mean_k[size:] - mean_k[:-size]
            m2_k = m2_k[:-size] + m2_k[size:] + delta * delta * (size / 2)
        mean_k = (mean_k[:-size] + mean_k[size:]) / 2
        size *= 2


def _mean_block(X: Any, window: int) -> Any:
    return cast(_window_moments(X, window, spread=False)[0], X.dtype)


def _std_block(X: Any, window: int, ddof: int = 0) -> Any:
    xp = get_namespace(X)
    m2 = _window_moments(X, window)[1]
    return cast(xp.sqrt(m2 / (window - ddof)), X.dtype)


def _extreme_block(X: Any, window: int, op: str) -> Any:
    xp = get_namespace(X)
    pick = getattr(xp, op)
    m, span = X, 1
    while 2 * span <= window:  # m[i] = op(X[i : i + 2*span])
        m = pick(m[:-span], m[span:])
        span *= 2
    n_out = X.shape[0] - window + 1
    return pick(m[:n_out], m[window - span : window - span + n_out])


def _rolling(X: Any, window: int, axis: int, func: Callable[..., Any], **kw: Any) -> Any:
    X = as_array(X, "X")
    check_ndim(X, "X", (1, 2, 3))
    check_float_array(X, "X")
    if not -X.ndim <= axis < X.ndim:
        raise ValueError(f"axis {axis} is out of range for a {X.ndim}-D array")
    axis %= X.ndim
    n = X.shape[axis]
    if not isinstance(window, (int, np.integer)) or not 1 <= window <= n:
        raise ValueError(
            f"window must be an integer in [1, {n}] (the length of axis {axis}), got {window!r}"
        )
    X = check_finite(cast(X, float_dtype(X)), "X")
    block = partial(func, window=int(window), **kw)
    if not is_dask(X):
        xp = get_namespace(X)
        return xp.moveaxis(block(xp.moveaxis(X, axis, 0)), 0, axis)
    import dask.array as da  # noqa: PLC0415

    Xm = da.moveaxis(X, axis, 0)
    pieces, start = [], 0
    for size in Xm.chunks[0]:
        stop = start + size
        first_end = max(start, window - 1)  # the first window ending in this chunk
        if first_end <= stop - 1:
            seg = Xm[first_end - (window - 1) : stop].rechunk({0: -1})
            chunks = ((stop - first_end,), *seg.chunks[1:])
            pieces.append(seg.map_blocks(block, chunks=chunks, meta=seg._meta))
        start = stop
    return da.moveaxis(da.concatenate(pieces, axis=0), 0, axis)


def rolling_mean(X: Any, window: int, *, axis: int = 0) -> Any:
    """Mean over each full window of ``window`` consecutive values along ``axis``.

    The result has ``n - window + 1`` entries along ``axis`` (``sliding_window_view``'s
    *valid* windows), equal to ``sliding_window_view(X, window, axis).mean(-1)``.

    Examples
    --------
    >>> rolling_mean([1.0, 2.0, 3.0, 4.0], 2).tolist()
    [1.5, 2.5, 3.5]
    """
    return _rolling(X, window, axis, _mean_block)


def rolling_std(X: Any, window: int, *, axis: int = 0, ddof: int = 0) -> Any:
    """Standard deviation (``ddof`` as NumPy) over each full window along ``axis``.

    Examples
    --------
    >>> rolling_std([1.0, 3.0, 3.0, 7.0], 2).tolist()
    [1.0, 0.0, 2.0]
    """
    if not isinstance(ddof, (int, np.integer)) or not 0 <= ddof < window:
        raise ValueError(f"ddof must be an integer in [0, window), got {ddof!r}")
    return _rolling(X, window, axis, _std_block, ddof=int(ddof))


def rolling_min(X: Any, window: int, *, axis: int = 0) -> Any:
    """Minimum over each full window along ``axis``.

    Examples
    --------
    >>> rolling_min([3.0, 1.0, 2.0, 5.0], 2).tolist()
    [1.0, 1.0, 2.0]
    """
    return _rolling(X, window, axis, _extreme_block, op="minimum")


def rolling_max(X: Any, window: int, *, axis: int = 0) -> Any:
    """Maximum over each full window along ``axis``.

    Examples
    --------
    >>> rolling_max([3.0, 1.0, 2.0, 5.0], 2).tolist()
    [3.0, 2.0, 5.0]
    """
    return _rolling(X, window, axis, _extreme_block, op="maximum")
