"""Feature extraction for NumPy, CuPy and Dask arrays, with scikit-learn's names and results.

Scalers (``scale``, ``minmax_scale``, ``robust_scale``, ``normalize``) and
``polynomial_features`` match ``sklearn.preprocessing``; ``hash_features`` matches
``FeatureHasher(input_type="string")`` but returns a dense matrix. Spectral features, rolling
window statistics and histogram/quantile features live in ``_signal.py`` and
``_quantiles.py`` and are re-exported here. Every function returns the kind of array it was
given (NumPy, CuPy, or a lazy Dask array with the same row chunks); statistics over Dask
input are computed with reductions, never by gathering the array into one process.

Why one module this long: it is the package's public face, one documented function after
another; the machinery lives in the private modules beside it.
"""

from __future__ import annotations

from functools import partial
from itertools import combinations, combinations_with_replacement
from statistics import NormalDist
from types import ModuleType
from typing import Any

import numpy as np

from .._arrays.checks import as_array, check_float_array, check_ndim, float_dtype
from .._arrays.namespace import cast, get_namespace, is_dask, nanquantile, to_device, to_numpy
from ._hashing import hash_rows
from ._quantiles import exact_nanquantile, histogram_features, quantile_features
from ._signal import (
    band_powers,
    dominant_frequency,
    rolling_max,
    rolling_mean,
    rolling_min,
    rolling_std,
    spectral_centroid,
    spectral_features,
)

__all__ = [
    "band_powers",
    "dominant_frequency",
    "hash_features",
    "histogram_features",
    "minmax_scale",
    "normalize",
    "polynomial_features",
    "quantile_features",
    "robust_scale",
    "rolling_max",
    "rolling_mean",
    "rolling_min",
    "rolling_std",
    "scale",
    "spectral_centroid",
    "spectral_features",
]


def _float_input(
    X: Any, name: str, ndims: tuple[int, ...], allow_nan: bool, check: bool = True
) -> tuple[Any, Any, Any]:
    """Validate a numeric array; return it in its computing dtype, its namespace and the
    result dtype. float32 stays float32 (no float64 copy of the data; statistics are
    accumulated in float64 where that matters), float64 stays, all else becomes float64.
    ``check=False`` leaves the non-finite check of in-memory input to the caller (``scale``
    folds it into its first pass); Dask input is always checked per chunk."""
    X = as_array(X, name)
    check_ndim(X, name, ndims)
    check_float_array(X, name)
    dtype = float_dtype(X)
    X = cast(X, dtype)
    xp = get_namespace(X)
    if is_dask(X):
        checked = X.map_blocks(_check_block, allow_nan=allow_nan, what=name, meta=X._meta)
        return checked, xp, dtype
    return (_check_block(X, allow_nan, name) if check else X), xp, dtype


def _check_block(X: Any, allow_nan: bool, what: str) -> Any:
    """One pass and one device sync when the data is clean; the error path looks closer."""
    xp = get_namespace(X)
    bad = xp.any(xp.isinf(X)) if allow_nan else ~xp.all(xp.isfinite(X))
    if bool(to_numpy(bad)):
        kind = "infinity" if bool(to_numpy(xp.any(xp.isinf(X)))) else "NaN"
        raise ValueError(f"{what} contains {kind}; remove or impute non-finite values first")
    return X


def _zeros_to_one(values: Any, xp: ModuleType) -> Any:
    """Scales below 10 machine epsilons mean a constant feature: divide it by 1 instead."""
    eps = float(np.finfo(values.dtype).eps)
    return xp.where(values < 10 * eps, xp.ones_like(values), values)


def _along(X: Any, axis: int) -> Any:
    if axis not in (0, 1) or (X.ndim == 1 and axis != 0):
        raise ValueError(f"axis must be 0 or 1 (0 only for 1-D input), got {axis!r}")
    return X if axis == 0 else X.T


def scale(
    X: Any, *, axis: int = 0, with_mean: bool = True, with_std: bool = True, copy: bool = True
) -> Any:
    """Standardise along ``axis``: subtract the mean, divide by the standard deviation.

    Same arguments and results as ``sklearn.preprocessing.scale``: NaN are ignored in the
    statistics and kept in the output; a constant feature is only centred; integers become
    float64, float32 stays float32. ``copy`` is accepted for compatibility; the input is
    never modified.

    Parameters
    ----------
    X : array of shape (n_samples,) or (n_samples, n_features)
    axis : {0, 1}, default 0
        0 standardises each feature (column), 1 each sample (row).
    with_mean, with_std : bool, default True

    Returns
    -------
    array of the same kind and shape as ``X``

    Examples
    --------
    >>> scale([[1.0, 10.0], [3.0, 10.0]]).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    X, xp, dtype = _float_input(X, "X", (1, 2), allow_nan=True, check=False)
    Xa = _along(X, axis)
    mean, std = _moments(Xa, xp, dtype, with_std)
    out = Xa
    if with_mean:
        out = Xa - cast(mean, dtype)
    if with_std:
        spread = cast(_zeros_to_one(std, _module(Xa, xp)), dtype)
        if with_mean and not is_dask(out):
            out /= spread  # ``out`` is our own array: divide in place, no second copy
        else:
            out = out / spread
    return _along(out, axis)


def _moments(Xa: Any, xp: ModuleType, dtype: Any, with_std: bool) -> tuple[Any, Any]:
    """Column means and standard deviations of ``Xa`` (float64; NaN ignored).

    In-memory input: the float64 column sums double as the validation (a NaN or infinity
    makes its column's sum non-finite), so clean data costs one pass for the means, one
    sync on a vector of ``n_features`` flags, and one pass for the centred squares
    (centred in the data's dtype, squared sums accumulated in float64). Only when a sum is
    not finite is the data inspected again for infinity and NaN-aware statistics used.
    float32 results agree with a float64 computation to about 1e-6 relative (the centring
    rounds to float32); float64 ones to rounding.
    """
    if is_dask(Xa):
        import dask.array as da  # noqa: PLC0415

        mean = da.nanmean(Xa, axis=0, dtype=np.float64)
        return mean, (da.nanstd(Xa, axis=0, dtype=np.float64) if with_std else None)
    n = Xa.shape[0]
    total = xp.sum(Xa, axis=0, dtype=np.float64)
    if bool(to_numpy(xp.all(xp.isfinite(total)))):
        mean = total / n
        if not with_std:
            return mean, None
        centred = Xa - cast(mean, dtype)
        return mean, xp.sqrt(xp.sum(centred * centred, axis=0, dtype=np.float64) / n)
    _check_block(Xa, True, "X")  # raises on infinity; otherwise there are NaN
    mean = xp.nanmean(Xa, axis=0, dtype=np.float64)
    return mean, (xp.nanstd(Xa, axis=0, dtype=np.float64) if with_std else None)


def _module(X: Any, xp: ModuleType) -> Any:
    """``dask.array`` for Dask input, else the array namespace (both have nan-reductions)."""
    if is_dask(X):
        import dask.array as da  # noqa: PLC0415

        return da
    return xp


def minmax_scale(
    X: Any, feature_range: tuple[float, float] = (0, 1), *, axis: int = 0, copy: bool = True
) -> Any:
    """Rescale each feature (``axis=0``) or sample (``axis=1``) to ``feature_range``.

    Same results as ``sklearn.preprocessing.minmax_scale``: ``X * scale + min`` with
    ``scale = (hi - lo) / (max - min)``; NaN are ignored and kept; constant features map to
    ``lo``.

    Examples
    --------
    >>> minmax_scale([[1.0], [2.0], [5.0]]).ravel().tolist()
    [0.0, 0.25, 1.0]
    """
    lo, hi = feature_range
    if not lo < hi:
        raise ValueError(
            f"feature_range minimum must be below its maximum, got {tuple(feature_range)}"
        )
    X, xp, dtype = _float_input(X, "X", (1, 2), allow_nan=True)
    Xa = _along(X, axis)
    mod = _module(Xa, xp)
    data_min, data_max = mod.nanmin(Xa, axis=0), mod.nanmax(Xa, axis=0)
    factor = (hi - lo) / _zeros_to_one(data_max - data_min, mod)
    return _along(Xa * factor + (lo - data_min * factor), axis)


def robust_scale(
    X: Any,
    *,
    axis: int = 0,
    with_centering: bool = True,
    with_scaling: bool = True,
    quantile_range: tuple[float, float] = (25.0, 75.0),
    copy: bool = True,
    unit_variance: bool = False,
) -> Any:
    """Centre on the median and divide by the inter-quantile range, per feature or sample.

    Same results as ``sklearn.preprocessing.robust_scale`` (NaN ignored and kept;
    percentiles by linear interpolation). On Dask input with ``axis=0`` the quantiles are
    computed *exactly* by distributed selection (``_quantiles.exact_nanquantile``): a few
    passes over the data that exchange only counts and the values near each quantile,
    after which the scaling itself is lazy. With ``axis=1`` each row is scaled inside its
    chunk.

    Examples
    --------
    >>> robust_scale([[1.0], [2.0], [3.0], [4.0], [100.0]]).ravel().tolist()
    [-1.0, -0.5, 0.0, 0.5, 48.5]
    """
    q_lo, q_hi = quantile_range
    if not 0 <= q_lo <= q_hi <= 100:
        raise ValueError(
            f"quantile_range must satisfy 0 <= low <= high <= 100, got {tuple(quantile_range)}"
        )
    X, xp, dtype = _float_input(X, "X", (1, 2), allow_nan=True)
    Xa = _along(X, axis)
    if is_dask(X) and axis == 1:
        per_row = partial(
            robust_scale,
            axis=1,
            with_centering=with_centering,
            with_scaling=with_scaling,
            quantile_range=quantile_range,
            unit_variance=unit_variance,
        )
        return X.rechunk({1: -1}).map_blocks(per_row, meta=X._meta).astype(dtype)
    qs = np.array([50.0, q_lo, q_hi]) / 100
    if is_dask(Xa):
        stats = xp.asarray(exact_nanquantile(Xa, qs))
    else:
        stats = nanquantile(Xa, qs, axis=0)  # float64, on the device for CuPy
    out = Xa
    if with_centering:
        out = out - cast(stats[0], dtype)
    if with_scaling:
        spread = _zeros_to_one(stats[2] - stats[1], xp)
        if unit_variance:
            normal = NormalDist()
            spread = spread / (normal.inv_cdf(q_hi / 100) - normal.inv_cdf(q_lo / 100))
        out = out / cast(spread, dtype)
    return cast(_along(out, axis), dtype)


def normalize(
    X: Any, norm: str = "l2", *, axis: int = 1, copy: bool = True, return_norm: bool = False
) -> Any:
    """Scale each sample (``axis=1``) or feature (``axis=0``) to unit ``l1``, ``l2`` or ``max`` norm.

    Same results as ``sklearn.preprocessing.normalize`` for dense input; zero vectors are
    left as they are. With ``return_norm`` also returns the norms used.

    Examples
    --------
    >>> normalize([[3.0, 4.0]]).tolist()
    [[0.6, 0.8]]
    """
    if norm not in ("l1", "l2", "max"):
        raise ValueError(f"norm must be 'l1', 'l2' or 'max', got {norm!r}")
    X, xp, dtype = _float_input(X, "X", (2,), allow_nan=False)
    Xa = _along(X, 1 - axis if axis in (0, 1) else axis)  # rows of Xa are the vectors
    mod = _module(Xa, xp)
    if norm == "l1":
        norms = mod.sum(abs(Xa), axis=1)
    elif norm == "l2":
        norms = mod.sqrt(mod.einsum("ij,ij->i", Xa, Xa))
    else:
        norms = mod.max(abs(Xa), axis=1)
    norms = _zeros_to_one(norms, mod)
    out = cast(_along(Xa / norms[:, None], 1 - axis), dtype)
    return (out, cast(norms, dtype)) if return_norm else out


def _poly_blocks(n_features: int, degree: int, interaction_only: bool) -> list[list[int]]:
    """For each degree, the column offset where combinations starting at feature i begin."""
    starts = [list(range(n_features + 1))]  # degree 1: feature i is column i
    for _ in range(2, degree + 1):
        prev = starts[-1]
        sizes = [prev[-1] - prev[i + interaction_only] for i in range(n_features)]
        starts.append([0, *np.cumsum(sizes).tolist()])
    return starts


def _poly_block(X: Any, degree: tuple[int, int], interaction_only: bool, include_bias: bool) -> Any:
    """All monomials of ``X`` up to ``degree[1]``, written into one preallocated matrix.

    Layout: [bias][degree 1][degree 2]...; inside degree ``k + 1`` the monomials starting
    with feature ``i`` are ``X[:, i]`` times a contiguous suffix of the degree-``k`` block.
    """
    xp = get_namespace(X)
    n, d = X.shape
    lo, hi = degree
    starts = _poly_blocks(d, hi, interaction_only)
    sizes = [s[-1] for s in starts]
    bias = int(include_bias)
    offsets = [bias + sum(sizes[:k]) for k in range(hi)]
    out = xp.empty((n, bias + sum(sizes)), dtype=X.dtype)
    if bias:
        out[:, 0] = 1
    if hi >= 1:
        out[:, offsets[0] : offsets[0] + d] = X
    for k in range(1, hi):
        prev, cur = offsets[k - 1], offsets[k]
        for i in range(d):
            a, b = cur + starts[k][i], cur + starts[k][i + 1]
            if b > a:  # monomials (i, ...) exist at this degree
                src = out[:, prev + starts[k - 1][i + interaction_only] : prev + sizes[k - 1]]
                xp.multiply(src, X[:, i : i + 1], out=out[:, a:b])
    if lo <= 1:
        return out
    keep = list(range(bias)) + list(range(offsets[lo - 1], out.shape[1]))
    return out[:, keep]


def n_polynomial_features(
    n_features: int, degree: int | tuple[int, int], interaction_only: bool, include_bias: bool
) -> int:
    """Number of output columns of :func:`polynomial_features`."""
    lo, hi = (0, degree) if isinstance(degree, int) else degree
    comb = combinations if interaction_only else combinations_with_replacement
    count = sum(sum(1 for _ in comb(range(n_features), k)) for k in range(max(lo, 1), hi + 1))
    return count + int(include_bias)


def polynomial_features(
    X: Any,
    degree: int | tuple[int, int] = 2,
    interaction_only: bool = False,
    include_bias: bool = True,
) -> Any:
    """Polynomial and interaction features, columns in ``PolynomialFeatures`` order.

    The columns are the bias (if ``include_bias``), then all monomials of degree 1, 2, …
    in ``itertools.combinations_with_replacement`` order (``combinations`` when
    ``interaction_only``), exactly as ``sklearn.preprocessing.PolynomialFeatures``.
    ``degree`` may be ``(min_degree, max_degree)``.

    Examples
    --------
    >>> polynomial_features([[2.0, 3.0]]).tolist()
    [[1.0, 2.0, 3.0, 4.0, 6.0, 9.0]]
    """
    lo, hi = (0, degree) if isinstance(degree, (int, np.integer)) else tuple(degree)
    if not (0 <= lo <= hi) or hi < 1 and not include_bias:
        raise ValueError(
            f"degree must be an int >= 0 or (min, max) with 0 <= min <= max, got {degree!r}"
        )
    X, xp, dtype = _float_input(X, "X", (2,), allow_nan=True)
    args = ((int(lo), int(hi)), bool(interaction_only), bool(include_bias))
    if not is_dask(X):
        return cast(_poly_block(X, *args), dtype)
    n_out = n_polynomial_features(X.shape[1], (int(lo), int(hi)), interaction_only, include_bias)
    X = X.rechunk({1: -1})
    out = X.map_blocks(_poly_block, *args, chunks=(X.chunks[0], (n_out,)), meta=X._meta)
    return cast(out, dtype)


def hash_features(
    tokens: Any,
    n_features: int = 1024,
    *,
    alternate_sign: bool = True,
    dtype: Any = np.float64,
    xp: ModuleType | None = None,
) -> Any:
    """Hash token lists into a dense ``(n_samples, n_features)`` count matrix.

    Matches ``sklearn.feature_extraction.FeatureHasher(n_features, input_type="string",
    alternate_sign=...)`` (signed 32-bit MurmurHash3 of each UTF-8 token, seed 0; column
    ``|h| % n_features``; sign of ``h`` when ``alternate_sign``), densified. Hashing runs on
    the CPU (tokens are Python strings); pass ``xp=`` a GPU array namespace to get it on the GPU. A
    ``dask.bag.Bag`` of token lists gives a Dask array with one chunk per partition.

    Examples
    --------
    >>> hash_features([["a", "b", "a"]], n_features=8, alternate_sign=False).sum()
    np.float64(3.0)
    """
    if not isinstance(n_features, (int, np.integer)) or not 1 <= n_features < 2**31:
        raise ValueError(f"n_features must be an integer in [1, 2**31), got {n_features!r}")
    if np.dtype(dtype).kind not in "fiu":
        raise ValueError(f"dtype must be a real numeric dtype, got {np.dtype(dtype)}")
    if type(tokens).__module__.startswith("dask.bag"):
        import dask  # noqa: PLC0415
        import dask.array as da  # noqa: PLC0415

        parts = [
            da.from_delayed(
                dask.delayed(hash_rows)(p, int(n_features), alternate_sign, dtype),
                shape=(np.nan, int(n_features)),
                dtype=dtype,
            )
            for p in tokens.to_delayed()
        ]
        out = da.concatenate(parts)
        return out if xp is None or xp is np else to_device(out, xp)
    if isinstance(tokens, (str, bytes)):
        raise ValueError("tokens must be a sequence of token lists, got a single string")
    rows = list(tokens)
    if not rows:
        raise ValueError("tokens is empty; pass at least one sample (a list of tokens)")
    out = hash_rows(rows, int(n_features), alternate_sign, dtype)
    return out if xp is None or xp is np else to_device(out, xp)
