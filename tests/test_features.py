"""Feature functions against scikit-learn / SciPy / float64 NumPy references, on every namespace.

One body per function, run on NumPy, Dask (odd chunk sizes, so windows and statistics
straddle chunk boundaries) and CuPy (marked ``gpu``, skipped without a usable GPU). Each
test checks the result's values *and* that it comes back as the kind of array it was given.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import dask.bag as db
import numpy as np
import pytest
import scipy.signal
import strict_xp
from numpy.lib.stride_tricks import sliding_window_view
from sklearn import preprocessing as skp
from sklearn.feature_extraction import FeatureHasher

from jupyter_elastic import features
from jupyter_elastic._arrays import namespace as _array
from jupyter_elastic.features import _quantiles

strict_xp.install()




def to_kind(x: np.ndarray, kind: str, rows: int = 37) -> Any:
    """NumPy reference input as ``kind`` (Dask: odd row chunks, columns split in two)."""
    if kind == "dask":
        chunks = (rows,) + tuple(max(1, (s + 1) // 2) for s in x.shape[1:])
        return da.from_array(x, chunks=chunks)
    if kind == "cupy":
        import cupy

        return cupy.asarray(x)
    if kind == "strict":
        return strict_xp.asarray(x)
    return x


def back(result: Any, kind: str) -> np.ndarray:
    """Check ``result`` is of ``kind`` and return it as NumPy."""
    if kind == "dask":
        assert isinstance(result, da.Array), type(result)
        result = result.compute()
    if kind == "cupy":
        import cupy

        assert isinstance(result, cupy.ndarray), type(result)
        return result.get()
    if kind == "strict":
        assert isinstance(result, strict_xp.StrictArray), type(result)
        return _array.to_numpy(result)
    assert isinstance(result, np.ndarray), type(result)
    return result


def data(dtype: str = "float64", n: int = 211, d: int = 5, seed: int = 0) -> np.ndarray:
    """Random columns with ties, a constant column, an outlier and an offset."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 1] = np.round(X[:, 1])  # heavy ties
    X[:, 2] = 4.0  # constant
    X[3, 0] = 50.0  # outlier
    X[:, -1] = X[:, -1] * 10 + 100
    if dtype.startswith("int"):
        return np.round(X).astype(dtype)
    return X.astype(dtype)


def tol(dtype: str) -> dict[str, float]:
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-10}


DTYPES = ["float64", "float32", "int64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("with_mean,with_std", [(True, True), (False, True), (True, False)])
def test_scale(kind: str, dtype: str, axis: int, with_mean: bool, with_std: bool) -> None:
    X = data(dtype)
    if dtype != "int64":
        X[7, 3] = np.nan  # ignored in the statistics, kept in the output
    got = back(
        features.scale(to_kind(X, kind), axis=axis, with_mean=with_mean, with_std=with_std), kind
    )
    want = skp.scale(X, axis=axis, with_mean=with_mean, with_std=with_std)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, equal_nan=True, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("feature_range", [(0, 1), (-3, 0.5)])
def test_minmax_scale(kind: str, dtype: str, axis: int, feature_range: tuple) -> None:
    X = data(dtype)
    got = back(features.minmax_scale(to_kind(X, kind), feature_range, axis=axis), kind)
    np.testing.assert_allclose(got, skp.minmax_scale(X, feature_range, axis=axis), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize(
    "options",
    [{}, {"quantile_range": (10.0, 83.3), "unit_variance": True}, {"with_centering": False}],
)
def test_robust_scale(kind: str, dtype: str, axis: int, options: dict) -> None:
    X = data(dtype)
    if dtype != "int64":
        X[::9, 0] = np.nan
    got = back(features.robust_scale(to_kind(X, kind), axis=axis, **options), kind)
    np.testing.assert_allclose(
        got, skp.robust_scale(X, axis=axis, **options), equal_nan=True, **tol(dtype)
    )


def test_robust_scale_one_dimensional(kind: str) -> None:
    x = data()[:, 0]
    got = back(features.robust_scale(to_kind(x, kind)), kind)
    np.testing.assert_allclose(got, skp.robust_scale(x), rtol=1e-12)


@pytest.mark.parametrize("limits", [(4, 10), (2, 1), (1024, 1 << 16)])
def test_exact_quantiles_match_numpy_through_every_selection_path(
    monkeypatch: pytest.MonkeyPatch, limits: tuple[int, int]
) -> None:
    """Tiny BINS/GATHER_LIMIT force several histogram passes, heavy ties and gathers."""
    monkeypatch.setattr(_quantiles, "BINS", limits[0])
    monkeypatch.setattr(_quantiles, "GATHER_LIMIT", limits[1])
    rng = np.random.default_rng(3)
    X = np.round(rng.standard_cauchy(size=(3001, 3)), 1)
    X[:, 1] = np.repeat([1.0, 2.0, 2.0], 1001)[:3001] + np.where(
        np.arange(3001) % 500 == 0, 1e-9, 0
    )
    X[::5, 2] = np.nan
    q = np.array([0.0, 0.001, 0.25, 0.5, 0.6667, 0.999, 1.0])
    got = _quantiles.exact_nanquantile(da.from_array(X, chunks=(333, 3)), q)
    np.testing.assert_array_equal(got, np.nanquantile(X, q, axis=0))


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize(kind: str, norm: str, axis: int, dtype: str) -> None:
    X = data(dtype)
    X[5] = 0  # a zero vector is left alone
    got, norms = features.normalize(to_kind(X, kind), norm, axis=axis, return_norm=True)
    want, want_norms = skp.normalize(X, norm, axis=axis, return_norm=True)
    np.testing.assert_allclose(back(got, kind), want, **tol(dtype))
    np.testing.assert_allclose(back(norms, kind), want_norms, **tol(dtype))


@pytest.mark.parametrize("degree", [1, 2, 3, (2, 3), (0, 2)])
@pytest.mark.parametrize("interaction_only", [False, True])
@pytest.mark.parametrize("include_bias", [False, True])
def test_polynomial_features(
    kind: str, degree: Any, interaction_only: bool, include_bias: bool
) -> None:
    X = data(n=41, d=4)
    got = back(
        features.polynomial_features(to_kind(X, kind), degree, interaction_only, include_bias), kind
    )
    want = skp.PolynomialFeatures(
        degree, interaction_only=interaction_only, include_bias=include_bias
    )
    np.testing.assert_allclose(got, want.fit_transform(X), rtol=1e-12)


def test_polynomial_features_int_and_float32(kind: str) -> None:
    for dtype in ("int32", "float32"):
        X = data(dtype, n=30, d=3)
        got = back(features.polynomial_features(to_kind(X, kind), 3), kind)
        want = skp.PolynomialFeatures(3).fit_transform(X)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)


BANDS = [(0.0, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 50.0)]


def signals(n: int = 9, length: int = 250, dtype: str = "float64") -> np.ndarray:
    rng = np.random.default_rng(4)
    t = np.arange(length) / 100.0
    freqs = rng.choice([3.0, 6.0, 10.0, 20.0], size=(n, 1))
    return (np.sin(2 * np.pi * freqs * t) + 0.3 * rng.normal(size=(n, length)) + 0.5).astype(dtype)


@pytest.mark.parametrize("detrend", [False, True])
@pytest.mark.parametrize("length", [250, 251])
def test_spectral_features(kind: str, detrend: bool, length: int) -> None:
    x = signals(length=length)
    f, p = scipy.signal.periodogram(
        x, fs=100.0, window="boxcar", detrend="constant" if detrend else False
    )
    df = f[1] - f[0]
    want_bands = np.stack([p[:, (f >= lo) & (f < hi)].sum(axis=1) * df for lo, hi in BANDS], axis=1)
    want_centroid = (p * f).sum(axis=1) / p.sum(axis=1)
    want_dominant = f[np.argmax(p, axis=1)]
    xk = to_kind(x, kind, rows=4)
    np.testing.assert_allclose(
        back(features.band_powers(xk, 100.0, BANDS, detrend=detrend), kind),
        want_bands,
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        back(features.spectral_centroid(xk, 100.0, detrend=detrend), kind),
        want_centroid,
        rtol=1e-10,
    )
    np.testing.assert_array_equal(
        back(features.dominant_frequency(xk, 100.0, detrend=detrend), kind), want_dominant
    )
    table = back(features.spectral_features(xk, 100.0, BANDS, detrend=detrend), kind)
    np.testing.assert_allclose(
        table, np.column_stack([want_bands, want_centroid, want_dominant]), rtol=1e-10, atol=1e-12
    )


def test_spectral_single_signal_float32_and_silence(kind: str) -> None:
    x = signals(n=1, dtype="float32")[0]
    f, p = scipy.signal.periodogram(x.astype(np.float64), fs=100.0, window="boxcar", detrend=False)
    got = back(features.band_powers(to_kind(x, kind), 100.0, BANDS), kind)
    assert got.dtype == np.float32 and got.shape == (len(BANDS),)
    np.testing.assert_allclose(
        got, [p[(f >= lo) & (f < hi)].sum() * (f[1] - f[0]) for lo, hi in BANDS], rtol=1e-4
    )
    silent = back(features.spectral_centroid(to_kind(np.zeros((2, 16)), kind), 8.0), kind)
    np.testing.assert_array_equal(silent, [0.0, 0.0])  # defined as 0, never NaN


ROLLING = {
    features.rolling_mean: np.mean,
    features.rolling_std: np.std,
    features.rolling_min: np.min,
    features.rolling_max: np.max,
}


@pytest.mark.parametrize("func", list(ROLLING), ids=lambda f: f.__name__)
@pytest.mark.parametrize("window", [1, 2, 7, 38, 211])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rolling(kind: str, func: Any, window: int, dtype: str) -> None:
    X = data(dtype)
    want = ROLLING[func](sliding_window_view(X.astype(np.float64), window, axis=0), axis=-1)
    got = back(func(to_kind(X, kind, rows=13), window), kind)
    assert got.shape == (X.shape[0] - window + 1, X.shape[1])
    np.testing.assert_allclose(
        got,
        want,
        rtol=1e-9 if dtype != "float32" else 1e-5,
        atol=1e-8 if dtype != "float32" else 1e-4,
    )


@pytest.mark.parametrize("func", list(ROLLING), ids=lambda f: f.__name__)
def test_rolling_along_rows_of_a_3d_array(kind: str, func: Any) -> None:
    X = np.random.default_rng(5).normal(size=(4, 30, 3))
    want = ROLLING[func](sliding_window_view(X, 5, axis=1), axis=-1)
    np.testing.assert_allclose(
        back(func(to_kind(X, kind, rows=3), 5, axis=1), kind), want, rtol=1e-10, atol=1e-12
    )


def test_rolling_std_ddof_and_constant_windows_are_exactly_zero(kind: str) -> None:
    X = np.repeat([[1e6, -3.0]], 50, axis=0)
    X[25:] += 1.5
    got = back(features.rolling_std(to_kind(X, kind, rows=7), 5, ddof=1), kind)
    want = np.std(sliding_window_view(X, 5, axis=0), axis=-1, ddof=1)
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert np.all(got[:20] == 0) and np.all(got[-20:] == 0)


@pytest.mark.parametrize(
    "bins,range_,density", [(10, None, False), (7, (-1.0, 1.0), False), (5, (-2.0, 3.0), True)]
)
def test_histogram_features(kind: str, bins: int, range_: Any, density: bool) -> None:
    X = data(n=60, d=40)
    X[0, :5] = np.nan
    lo, hi = range_ if range_ is not None else (np.nanmin(X), np.nanmax(X))
    want = np.stack(
        [np.histogram(r[~np.isnan(r)], bins, range=(lo, hi), density=density)[0] for r in X]
    )
    got = back(features.histogram_features(to_kind(X, kind), bins, range_, density=density), kind)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantile_features(kind: str, axis: int, dtype: str) -> None:
    X = data(dtype, n=120, d=9)
    if dtype != "int64":
        X[4, ::2] = np.nan
    q = [0.0, 0.1, 0.5, 0.9, 1.0]
    got = back(features.quantile_features(to_kind(X, kind), q, axis=axis), kind)
    want = np.nanquantile(X.astype(np.float64), q, axis=axis)
    np.testing.assert_allclose(got, want.T if axis == 1 else want, **tol(dtype))


TOKENS = [
    ["the", "cat", "sat", "on", "the", "mat"],
    [],
    ["ünïcödé", "emoji-🙂", "", "x" * 41, "abc", "abcd", "abcde"],
    [str(i) for i in range(500)],
]


@pytest.mark.parametrize("n_features", [1, 16, 1000, 2**20])
@pytest.mark.parametrize("alternate_sign", [True, False])
def test_hash_features_matches_feature_hasher(n_features: int, alternate_sign: bool) -> None:
    want = FeatureHasher(n_features, input_type="string", alternate_sign=alternate_sign)
    rows = TOKENS if n_features < 2**20 else TOKENS[:1]
    got = features.hash_features(rows, n_features, alternate_sign=alternate_sign)
    np.testing.assert_array_equal(got, want.transform(rows).toarray())


def test_hash_features_on_a_dask_bag_and_on_device(kind: str) -> None:
    want = FeatureHasher(64, input_type="string").transform(TOKENS).toarray()
    if kind == "dask":
        got = features.hash_features(db.from_sequence(TOKENS, npartitions=3), 64)
    elif kind == "cupy":
        import cupy

        got = features.hash_features(TOKENS, 64, xp=cupy)
    elif kind == "strict":
        got = features.hash_features(TOKENS, 64, xp=strict_xp.xp)
    else:
        got = features.hash_features(TOKENS, 64, dtype=np.float32)
    np.testing.assert_array_equal(back(got, kind), want)


def test_int_scaling_from_dask_never_computes_whole_array_in_one_task() -> None:
    """The scaled Dask array keeps the input's row chunks: no rechunk to one block."""
    X = da.from_array(data(n=500), chunks=(50, 5))
    for out in (
        features.scale(X),
        features.minmax_scale(X),
        features.robust_scale(X),
        features.normalize(X),
    ):
        assert out.chunks[0] == X.chunks[0]


BAD = [
    (lambda: features.scale([[1.0, np.inf]]), "X contains infinity"),
    (lambda: features.scale(np.zeros((0, 3))), "X is empty"),
    (lambda: features.scale(np.zeros((2, 2, 2))), "X must be 1-D or 2-D, got a 3-D array"),
    (lambda: features.scale(np.array([["a", "b"]])), "unsupported dtype <U1"),
    (lambda: features.scale(np.ones((2, 2), dtype=complex)), "unsupported dtype complex128"),
    (lambda: features.scale([[1.0, 2.0], [3.0]]), "could not be read as an array"),
    (lambda: features.scale(np.ones((3, 2)), axis=2), "axis must be 0 or 1"),
    (lambda: features.minmax_scale(np.ones((3, 2)), (1, 0)), "feature_range minimum must be below"),
    (
        lambda: features.robust_scale(np.ones((3, 2)), quantile_range=(80, 20)),
        "quantile_range must satisfy",
    ),
    (lambda: features.normalize(np.ones(3)), "X must be 2-D, got a 1-D array"),
    (lambda: features.normalize([[np.nan, 1.0]]), "X contains NaN"),
    (lambda: features.normalize(np.ones((2, 2)), "l3"), "norm must be 'l1', 'l2' or 'max'"),
    (lambda: features.polynomial_features(np.ones((2, 2)), (3, 2)), "degree must be"),
    (
        lambda: features.band_powers(np.ones((2, 8)), 0.0, BANDS),
        "fs .sampling frequency. must be a positive",
    ),
    (
        lambda: features.band_powers(np.ones((2, 8)), 10.0, [(5, 1)]),
        "each band must satisfy 0 <= low < high",
    ),
    (lambda: features.band_powers(np.ones((2, 8)), 10.0, []), "bands must be a non-empty list"),
    (lambda: features.spectral_centroid([[np.nan, 1.0, 2.0]]), "x contains NaN"),
    (lambda: features.dominant_frequency(np.ones((3, 1))), "at least 2 samples"),
    (lambda: features.rolling_mean(np.ones(5), 6), r"window must be an integer in \[1, 5\]"),
    (lambda: features.rolling_mean(np.ones(5), 0), r"window must be an integer in \[1, 5\]"),
    (lambda: features.rolling_max(np.ones((5, 2)), 2, axis=3), "axis 3 is out of range"),
    (
        lambda: features.rolling_std(np.ones(5), 2, ddof=2),
        r"ddof must be an integer in \[0, window\)",
    ),
    (lambda: features.histogram_features(np.ones((2, 3)), 0), "bins must be a positive integer"),
    (lambda: features.histogram_features(np.ones((2, 3)), 3, (2, 1)), "range must be finite"),
    (lambda: features.histogram_features(np.full((2, 3), np.nan)), "X holds only NaN"),
    (
        lambda: features.quantile_features(np.ones((2, 3)), [1.5]),
        r"q must be quantiles in \[0, 1\]",
    ),
    (lambda: features.quantile_features([[np.nan, np.nan]]), "a row of X holds only NaN"),
    (
        lambda: features.quantile_features(da.full((4, 2), np.nan, chunks=2), axis=0).compute(),
        "column 0 holds only NaN",
    ),
    (lambda: features.hash_features("just a string"), "got a single string"),
    (lambda: features.hash_features([]), "tokens is empty"),
    (lambda: features.hash_features([["a", 3]]), "tokens must be strings, got int"),
    (lambda: features.hash_features(["abc"]), "sample 0 is a single string"),
    (lambda: features.hash_features([["a"]], 0), "n_features must be an integer"),
    (
        lambda: features.scale(da.from_array(np.array([[1.0], [np.inf]]), chunks=1)).compute(),
        "X contains infinity",
    ),
]


@pytest.mark.parametrize("call,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_value_error_naming_the_problem(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
