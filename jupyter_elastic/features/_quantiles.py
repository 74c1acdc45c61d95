"""Exact quantiles of Dask columns by distributed selection, and histogram/quantile features.

``dask.array.percentile`` is approximate (it merges per-chunk percentiles), so column
quantiles of Dask input (``robust_scale``, ``quantile_features(axis=0)``) are computed here
*exactly*, matching ``numpy.nanquantile`` with linear interpolation. Each wanted order
statistic keeps a window ``[lo, hi]`` of actual data values known to contain it and the
count of values below the window. A pass over the data either histograms each window into
:data:`BINS` bins (returning per-bin counts, minima and maxima, so the next window is the
tight value range of one bin) or, once a window holds at most :data:`GATHER_LIMIT` values,
gathers just those values and picks the order statistic. Only counts and those few values
ever travel; a window whose ends are equal is resolved at once. Typically three or four
passes: one for counts/min/max, one or two histograms, one gather.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from .._arrays.checks import as_array, check_float_array, check_ndim, float_dtype
from .._arrays.chunked import map_reduce
from .._arrays.namespace import get_namespace, is_dask, nanquantile, to_device, to_numpy

__all__ = ["BINS", "GATHER_LIMIT", "exact_nanquantile", "histogram_features", "quantile_features"]

#: Histogram bins per window and pass.
BINS = 1024
#: A window with at most this many values is gathered and resolved in one more pass.
GATHER_LIMIT = 1 << 16


def _select_block(
    X: Any, cols: np.ndarray, lo: np.ndarray, hi: np.ndarray, gather: np.ndarray
) -> list[Any]:
    """One block's share of a selection pass, computed in the block's namespace.

    Sorting, window search and binning run where the block lives (on the GPU for CuPy
    chunks); only the per-window statistics (``BINS`` counts, minima and maxima) or the at
    most :data:`GATHER_LIMIT` gathered values come back to the host.
    """
    xp = get_namespace(X)
    out: list[Any] = []
    sorted_cols: dict[int, tuple[Any, int]] = {}
    for t, j in enumerate(cols):
        if j not in sorted_cols:
            col = xp.sort(X[:, int(j)])  # NaN sorts last
            sorted_cols[j] = (col, int(to_numpy(xp.sum(~xp.isnan(col)))))
        v, valid = sorted_cols[j]
        v = v[:valid]
        ends = xp.concatenate(
            [
                xp.searchsorted(v, xp.asarray([lo[t]], dtype=v.dtype), side="left"),
                xp.searchsorted(v, xp.asarray([hi[t]], dtype=v.dtype), side="right"),
            ]
        )
        a, b = (int(e) for e in to_numpy(ends))
        window = v[a:b]
        if gather[t]:
            out.append(to_numpy(window))
            continue
        if b == a:
            out.append((np.zeros(BINS, np.int64), np.full(BINS, np.inf), np.full(BINS, -np.inf)))
            continue
        edges = xp.asarray(np.linspace(lo[t], hi[t], BINS + 1))
        cut = xp.searchsorted(window, edges[1:-1].astype(window.dtype), side="left")
        bounds = xp.concatenate(
            [xp.zeros(1, dtype=cut.dtype), cut, xp.full(1, b - a, dtype=cut.dtype)]
        )
        counts = bounds[1:] - bounds[:-1]
        nonempty = counts > 0
        first = window[xp.minimum(bounds[:-1], b - a - 1)].astype(np.float64)
        last = window[xp.maximum(bounds[1:] - 1, 0)].astype(np.float64)
        stats = to_numpy(
            xp.stack(
                [
                    counts.astype(np.float64),
                    xp.where(nonempty, first, xp.inf),
                    xp.where(nonempty, last, -xp.inf),
                ]
            )
        )  # one small copy per window: 3 x BINS values
        out.append((stats[0].astype(np.int64), stats[1], stats[2]))
    return out


def _select_combine(parts: list[list[Any]]) -> list[Any]:
    merged: list[Any] = []
    for items in zip(*parts, strict=True):
        if isinstance(items[0], np.ndarray):
            merged.append(np.concatenate(items))
        else:
            merged.append(
                (
                    sum(i[0] for i in items),
                    np.minimum.reduce([i[1] for i in items]),
                    np.maximum.reduce([i[2] for i in items]),
                )
            )
    return merged


def _order_statistics(X: Any, cols: np.ndarray, ranks: np.ndarray, start: tuple) -> np.ndarray:
    """Exact ``ranks``-th smallest non-NaN value of column ``cols`` of Dask array ``X``."""
    lo, hi, below, inside = (a.astype(float) for a in start)
    value = np.full(len(cols), np.nan)
    done = lo == hi
    value[done] = lo[done]
    while not done.all():
        todo = np.flatnonzero(~done)
        gather = inside[todo] <= GATHER_LIMIT
        stats = map_reduce(
            partial(_select_block, cols=cols[todo], lo=lo[todo], hi=hi[todo], gather=gather),
            _select_combine,
            [X],
        )
        for t, g, stat in zip(todo, gather, stats, strict=True):
            r = int(ranks[t] - below[t])
            if g:
                value[t] = np.partition(stat, r)[r]
                done[t] = True
                continue
            counts, mins, maxs = stat
            cum = np.cumsum(counts)
            b = int(np.searchsorted(cum, r, side="right"))
            below[t] += cum[b - 1] if b else 0
            inside[t], lo[t], hi[t] = counts[b], mins[b], maxs[b]
            if lo[t] == hi[t]:
                value[t], done[t] = lo[t], True
    return value


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """NumPy's quantile interpolation: ``a + (b - a) t``, from ``b`` when ``t >= 0.5``."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def exact_nanquantile(X: Any, q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Exact ``numpy.nanquantile(X, q, axis=0)`` (linear) of a Dask array, on the host.

    Parameters
    ----------
    X : dask array of shape (n_samples,) or (n_samples, n_columns)
    q : sequence of float in [0, 1]

    Returns
    -------
    ndarray of shape (len(q), n_columns) (or (len(q),) for 1-D ``X``)

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> exact_nanquantile(da.from_array(np.arange(10.0), chunks=3), [0.5]).tolist()
    [4.5]
    """
    import dask  # noqa: PLC0415
    import dask.array as da  # noqa: PLC0415

    q = np.asarray(q, dtype=np.float64)
    X2 = (X[:, None] if X.ndim == 1 else X).rechunk({1: -1})
    with warnings.catch_warnings():  # an all-NaN column is reported below, clearly
        warnings.simplefilter("ignore", RuntimeWarning)
        count, low, high = dask.compute(
            da.sum(~da.isnan(X2), axis=0), da.nanmin(X2, axis=0), da.nanmax(X2, axis=0)
        )
    count, low, high = to_numpy(count), to_numpy(low), to_numpy(high)
    if np.any(count == 0):
        raise ValueError(
            f"column {int(np.flatnonzero(count == 0)[0])} holds only NaN; no quantile exists"
        )
    virtual = count[None, :] * q[:, None] + (1 - q[:, None]) - 1  # NumPy's 'linear' index
    prev = np.clip(np.floor(virtual), 0, count - 1).astype(np.int64)
    nxt = np.minimum(prev + 1, count - 1)
    prev = np.where(virtual >= count - 1, count - 1, prev)
    gamma = virtual - np.floor(virtual)
    cols = np.broadcast_to(np.arange(X2.shape[1]), prev.shape)
    keys = np.unique(
        np.stack([np.concatenate([cols.ravel()] * 2), np.concatenate([prev.ravel(), nxt.ravel()])]),
        axis=1,
    )
    tcols, tranks = keys
    start = (low[tcols], high[tcols], np.zeros(len(tcols)), count[tcols])
    values = _order_statistics(X2, tcols, tranks, start)
    lookup = {(int(c), int(r)): v for c, r, v in zip(tcols, tranks, values, strict=True)}
    a = np.vectorize(lambda c, r: lookup[(int(c), int(r))])(cols, prev).astype(X2.dtype)
    b = np.vectorize(lambda c, r: lookup[(int(c), int(r))])(cols, nxt).astype(X2.dtype)
    out = _lerp(a, b, gamma)  # float64, as NumPy with an array of quantiles
    return out[:, 0] if X.ndim == 1 else out


def _features_input(X: Any) -> Any:
    X = as_array(X, "X")
    check_ndim(X, "X", (2,))
    check_float_array(X, "X")
    X = X.astype(float_dtype(X))
    if is_dask(X):
        return X.map_blocks(_no_inf, meta=X._meta)
    return _no_inf(X)


def _no_inf(X: Any) -> Any:
    xp = get_namespace(X)
    if bool(to_numpy(xp.any(xp.isinf(X)))):
        raise ValueError("X contains infinity; remove or impute non-finite values first")
    return X


def _hist_block(X: Any, edges: np.ndarray, density: bool) -> Any:
    xp = get_namespace(X)
    e = xp.asarray(edges)
    bins = edges.size - 1
    idx = xp.searchsorted(e, X, side="right") - 1
    idx = xp.where(X == e[-1], bins - 1, idx)
    inside = (idx >= 0) & (idx < bins) & ~xp.isnan(X)
    rows = xp.arange(X.shape[0])[:, None] * bins
    keys = (rows + xp.where(inside, idx, 0))[inside]
    counts = xp.reshape(xp.bincount(keys, minlength=X.shape[0] * bins), (X.shape[0], bins))
    if not density:
        return counts.astype(np.int64)
    total = xp.sum(counts, axis=1, keepdims=True).astype(np.float64)
    width = xp.asarray(np.diff(edges))
    safe = xp.where(total > 0, total, xp.ones_like(total))
    return counts / width / safe


def histogram_features(
    X: Any, bins: int = 10, range: tuple[float, float] | None = None, *, density: bool = False
) -> Any:
    """Per-row histogram over shared bin edges: shape (n_samples, bins).

    Row ``i`` equals ``numpy.histogram(X[i], bins, range, density=density)[0]`` (NaN and
    values outside ``range`` are not counted). With ``range=None`` the edges span the
    global minimum and maximum of ``X`` (one reduction on Dask input). With
    ``density=True`` a row with no counted values is all zeros (NumPy would give NaN).

    Examples
    --------
    >>> histogram_features([[0.0, 1.0, 1.0, 2.0]], bins=2).tolist()
    [[1, 3]]
    """
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    X = _features_input(X)
    if range is None:
        if is_dask(X):
            import dask  # noqa: PLC0415
            import dask.array as da  # noqa: PLC0415

            lo, hi = (float(to_numpy(v)) for v in dask.compute(da.nanmin(X), da.nanmax(X)))
        else:
            xp = get_namespace(X)
            lo, hi = (float(v) for v in to_numpy(xp.stack([xp.nanmin(X), xp.nanmax(X)])))
        if np.isnan(lo):
            raise ValueError("X holds only NaN; pass range= or data with values")
    else:
        lo, hi = (float(v) for v in range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"range must be finite (low, high) with low <= high, got {range!r}")
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    func = partial(_hist_block, edges=edges, density=density)
    if not is_dask(X):
        return func(X)
    X = X.rechunk({1: -1})
    meta = X._meta.astype(np.float64 if density else np.int64)
    return X.map_blocks(func, chunks=(X.chunks[0], (int(bins),)), dtype=meta.dtype, meta=meta)


def _row_quantiles(X: Any, q: np.ndarray) -> Any:
    xp = get_namespace(X)
    nan = xp.isnan(X)
    flags = to_numpy(xp.stack([xp.any(nan), xp.any(xp.all(nan, axis=1))]))  # one sync
    if not flags[0]:  # the plain quantile is much faster than the NaN-aware one
        return xp.quantile(X, xp.asarray(q), axis=1).T.astype(X.dtype)
    if flags[1]:
        raise ValueError("a row of X holds only NaN; no quantile exists")
    return nanquantile(X, q, axis=1).T.astype(X.dtype)


def quantile_features(X: Any, q: Sequence[float] = (0.25, 0.5, 0.75), *, axis: int = 1) -> Any:
    """Quantiles of each row (``axis=1``, shape (n_samples, len(q))) or column (``axis=0``).

    Equal to ``numpy.nanquantile(X, q, axis=axis)`` (linear interpolation, NaN ignored),
    transposed for ``axis=1``. Rows are handled inside their chunks; column quantiles of
    Dask input are computed exactly by distributed selection (see the module docs).

    Examples
    --------
    >>> quantile_features([[1.0, 2.0, 3.0, 4.0]], q=[0.5]).tolist()
    [[2.5]]
    """
    q_arr = np.asarray(q, dtype=np.float64).ravel()
    if q_arr.size == 0 or np.any((q_arr < 0) | (q_arr > 1)):
        raise ValueError(f"q must be quantiles in [0, 1], got {q!r}")
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis!r}")
    X = _features_input(X)
    if axis == 0:
        if is_dask(X):
            import dask.array as da  # noqa: PLC0415

            values = exact_nanquantile(X, q_arr).astype(X.dtype)  # small: len(q) x columns
            return to_device(da.from_array(values), get_namespace(X))  # keeps X's chunk type
        return _row_quantiles(X.T, q_arr).T
    func = partial(_row_quantiles, q=q_arr)
    if not is_dask(X):
        return func(X)
    X = X.rechunk({1: -1})
    return X.map_blocks(func, chunks=(X.chunks[0], (q_arr.size,)), meta=X._meta)
