"""Metrics and ``evaluate`` against scikit-learn, on NumPy, Dask (odd chunks) and CuPy inputs.

Random inputs include ties, class imbalance, float32 and integer scores, weights and string
labels. On Dask input every metric must give the number scikit-learn gives for the
concatenated array; unweighted ROC AUC / average precision must be *bit-identical* to the
single-pass result whatever the chunking (integer counts merge exactly). Hypothesis checks
metric invariants; every bad input is checked for its message.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import strict_xp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from jupyter_elastic import evaluation as ev

strict_xp.install()




def to_kind(x: Any, kind: str, rows: int = 97) -> Any:
    if x is None:
        return None
    x = np.asarray(x)
    if kind == "dask":
        return da.from_array(x, chunks=(rows,) + x.shape[1:])
    if kind in ("cupy", "strict") and x.dtype.kind in "USO":
        pytest.skip("CuPy has no string arrays")
    if kind == "cupy":
        import cupy

        return cupy.asarray(x)
    if kind == "strict":
        return strict_xp.asarray(x)
    return x


def close(got: Any, want: Any, rtol: float = 1e-10) -> None:
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64), rtol=rtol, atol=1e-12
    )


def binary(n: int = 1000, pos: float = 0.3, seed: int = 0, decimals: int = 2) -> tuple:
    """Imbalanced binary labels, rounded (tied) scores correlated with them, weights."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos).astype(int)
    s = np.round(rng.random(n) * 0.7 + 0.3 * y, decimals)
    w = rng.random(n) * 2
    return y, s, w


def multiclass(n: int = 1000, k: int = 4, seed: int = 1) -> tuple:
    rng = np.random.default_rng(seed)
    p = np.arange(1, k + 1, dtype=float) ** 2
    y = rng.choice(k, size=n, p=p / p.sum())
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    return y, pred, rng.random(n)


LABEL_KINDS = {
    "int": lambda y: y,
    "str": lambda y: np.array(["ant", "bee", "cat", "dog", "eel"])[y],
    "float": lambda y: y.astype(np.float32) * 2 - 1,
    "bool": lambda y: y.astype(bool),
}


@pytest.mark.parametrize("labels", ["int", "str", "float"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("average", ["micro", "macro", "weighted", None])
@pytest.mark.parametrize("name", ["precision_score", "recall_score", "f1_score"])
def test_precision_recall_f1_multiclass(
    kind: str, labels: str, weighted: bool, average: Any, name: str
) -> None:
    y, pred, w = multiclass()
    y, pred = LABEL_KINDS[labels](y), LABEL_KINDS[labels](pred)
    w = w if weighted else None
    got = getattr(ev, name)(
        to_kind(y, kind), to_kind(pred, kind, 131), average=average, sample_weight=to_kind(w, kind)
    )
    close(got, getattr(skm, name)(y, pred, average=average, sample_weight=w))


@pytest.mark.parametrize("labels", ["int", "bool", "float"])
@pytest.mark.parametrize("name", ["precision_score", "recall_score", "f1_score", "accuracy_score"])
def test_binary_classification_metrics(kind: str, labels: str, name: str) -> None:
    y, s, w = binary()
    pred = (s > 0.5).astype(int)
    y, pred = LABEL_KINDS[labels](y), LABEL_KINDS[labels](pred)
    kwargs = {"pos_label": y.max()} if name != "accuracy_score" and labels != "int" else {}
    got = getattr(ev, name)(
        to_kind(y, kind), to_kind(pred, kind), sample_weight=to_kind(w, kind), **kwargs
    )
    close(got, getattr(skm, name)(y, pred, sample_weight=w, **kwargs))


@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
def test_zero_division_and_explicit_labels(kind: str, zero_division: float) -> None:
    y = np.array([0, 0, 1, 1, 2, 2] * 20)
    pred = np.array([0, 0, 0, 1, 0, 1] * 20)  # label 2 never predicted; label 7 absent
    for average in ("macro", "weighted", None, "micro"):
        for name in ("precision_score", "recall_score", "f1_score"):
            kw = {"labels": [2, 0, 7], "average": average, "zero_division": zero_division}
            got = getattr(ev, name)(to_kind(y, kind), to_kind(pred, kind, 7), **kw)
            np.testing.assert_allclose(got, getattr(skm, name)(y, pred, **kw), equal_nan=True)


def test_zero_division_warn_gives_zero_with_a_warning() -> None:
    with pytest.warns(ev.UndefinedMetricWarning, match="precision is ill-defined"):
        assert ev.precision_score([0, 1, 1], [0, 0, 0]) == 0.0


@pytest.mark.parametrize("normalize", [None, "true", "pred", "all"])
@pytest.mark.parametrize("weights", [None, "int", "float"])
@pytest.mark.parametrize("labels", [None, [3, 1, 0], [1, 9]])
def test_confusion_matrix(kind: str, normalize: Any, weights: Any, labels: Any) -> None:
    y, pred, w = multiclass()
    w = {None: None, "int": (w * 5).astype(int), "float": w}[weights]
    got = ev.confusion_matrix(
        to_kind(y, kind),
        to_kind(pred, kind),
        labels=labels,
        sample_weight=to_kind(w, kind),
        normalize=normalize,
    )
    want = skm.confusion_matrix(y, pred, labels=labels, sample_weight=w, normalize=normalize)
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_accuracy_multiclass_strings(kind: str, normalize: bool) -> None:
    y, pred, w = multiclass()
    y, pred = LABEL_KINDS["str"](y), LABEL_KINDS["str"](pred)
    got = ev.accuracy_score(
        to_kind(y, kind), to_kind(pred, kind), normalize=normalize, sample_weight=to_kind(w, kind)
    )
    close(got, skm.accuracy_score(y, pred, normalize=normalize, sample_weight=w))


SCORE_DTYPES = ["float64", "float32", "int64"]


@pytest.mark.parametrize("score_dtype", SCORE_DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos", [0.5, 0.02])
@pytest.mark.parametrize("max_fpr", [None, 0.1, 0.5])
def test_roc_auc_score(
    kind: str, score_dtype: str, weighted: bool, pos: float, max_fpr: Any
) -> None:
    y, s, w = binary(pos=pos)
    s = (s * 100).astype(score_dtype)  # int scores: many ties
    w = w if weighted else None
    got = ev.roc_auc_score(
        to_kind(y, kind), to_kind(s, kind, 61), sample_weight=to_kind(w, kind), max_fpr=max_fpr
    )
    close(got, skm.roc_auc_score(y, s, sample_weight=w, max_fpr=max_fpr))


@pytest.mark.parametrize("labels", ["int", "str", "float", "bool"])
def test_roc_auc_positive_class_is_the_larger_label(kind: str, labels: str) -> None:
    y, s, _ = binary(seed=3)
    y = LABEL_KINDS[labels](y)
    close(ev.roc_auc_score(to_kind(y, kind), to_kind(s, kind)), skm.roc_auc_score(y, s))


@pytest.mark.parametrize("score_dtype", SCORE_DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos", [0.5, 0.02])
def test_average_precision_score(kind: str, score_dtype: str, weighted: bool, pos: float) -> None:
    y, s, w = binary(pos=pos, seed=2)
    s = (s * 100).astype(score_dtype)
    w = w if weighted else None
    got = ev.average_precision_score(
        to_kind(y, kind), to_kind(s, kind, 61), sample_weight=to_kind(w, kind)
    )
    close(got, skm.average_precision_score(y, s, sample_weight=w))


def test_average_precision_with_string_pos_label(kind: str) -> None:
    y, s, _ = binary(seed=4)
    y = LABEL_KINDS["str"](y)
    got = ev.average_precision_score(to_kind(y, kind), to_kind(s, kind), pos_label="ant")
    close(got, skm.average_precision_score(y, s, pos_label="ant"))


@pytest.mark.parametrize("chunks", [1, 2, 7, 100, 999, 1000])
def test_ranking_is_bit_identical_for_any_chunking(chunks: int) -> None:
    y, s, _ = binary(decimals=3)
    auc, ap = ev.roc_auc_score(y, s), ev.average_precision_score(y, s)
    yd, sd = da.from_array(y, chunks=chunks), da.from_array(s, chunks=max(1, chunks // 2 + 1))
    assert ev.roc_auc_score(yd, sd) == auc
    assert ev.average_precision_score(yd, sd) == ap


@pytest.mark.parametrize("shape", ["1d", "2d", "3class"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_log_loss(kind: str, shape: str, weighted: bool, normalize: bool) -> None:
    rng = np.random.default_rng(6)
    n = 700
    if shape == "3class":
        y = rng.integers(0, 3, n)
        p = rng.random((n, 3))
        p /= p.sum(axis=1, keepdims=True)
        p[0] = [1.0, 0.0, 0.0]  # clipped, not -inf
    else:
        y = rng.integers(0, 2, n)
        p1 = rng.random(n).astype(np.float32)
        p1[:3] = [0.0, 1.0, 0.5]
        p = p1 if shape == "1d" else np.column_stack([1 - p1, p1])
    w = rng.random(n) if weighted else None
    got = ev.log_loss(
        to_kind(y, kind), to_kind(p, kind, 83), sample_weight=to_kind(w, kind), normalize=normalize
    )
    # float32 probabilities: scikit-learn sums float32 logs; we accumulate in float64
    close(
        got,
        skm.log_loss(y, p, sample_weight=w, normalize=normalize),
        rtol=1e-9 if shape == "3class" else 1e-6,
    )


def test_log_loss_strings_and_explicit_labels(kind: str) -> None:
    y = np.array(["spam", "ham", "ham", "spam"] * 25)
    p = np.tile([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.35, 0.65]], (25, 1))
    close(ev.log_loss(to_kind(y, kind, 9), to_kind(p, kind, 9)), skm.log_loss(y, p))
    y1 = np.zeros(50, dtype=int)
    p3 = np.tile([0.7, 0.2, 0.1], (50, 1))
    close(
        ev.log_loss(to_kind(y1, kind, 9), to_kind(p3, kind, 9), labels=[0, 1, 2]),
        skm.log_loss(y1, p3, labels=[0, 1, 2]),
    )


REGRESSION = {
    "mean_squared_error": "mean_squared_error",
    "mean_absolute_error": "mean_absolute_error",
    "r2_score": "r2_score",
}


# Only the combinations that exist: variance_weighted is r2_score's alone, and custom output
# weights need several outputs (one output with weights is a ValueError, tested below).
_REGRESSION_CASES = [
    pytest.param(name, outputs, multioutput, id=f"{name}-{outputs}-{'weights' if isinstance(multioutput, list) else multioutput}")
    for name in REGRESSION
    for outputs in (1, 3)
    for multioutput in ("uniform_average", "raw_values", [0.2, 0.3, 0.5], "variance_weighted")
    if (multioutput != "variance_weighted" or name == "r2_score")
    and not (isinstance(multioutput, list) and outputs == 1)
]


@pytest.mark.parametrize("name, outputs, multioutput", _REGRESSION_CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@pytest.mark.parametrize("weighted", [False, True])
def test_regression_metrics(
    kind: str, name: str, outputs: int, multioutput: Any, dtype: str, weighted: bool
) -> None:
    rng = np.random.default_rng(7)
    shape = (600,) if outputs == 1 else (600, outputs)
    y = (rng.normal(size=shape) * 10 + 1e3).astype(dtype)  # an offset: catches naive variance
    pred = (y + rng.normal(size=shape) * 3).astype(dtype)
    w = rng.random(600) if weighted else None
    got = getattr(ev, name)(
        to_kind(y, kind, 77),
        to_kind(pred, kind, 77),
        sample_weight=to_kind(w, kind),
        multioutput=multioutput,
    )
    # the float64 reference on the same values: float32 input is accumulated in float64
    want = getattr(skm, name)(
        y.astype(np.float64), pred.astype(np.float64), sample_weight=w, multioutput=multioutput
    )
    close(got, want, rtol=1e-9)


@pytest.mark.parametrize("force_finite", [True, False])
def test_r2_constant_target(kind: str, force_finite: bool) -> None:
    y = np.full((50, 2), 3.0)
    pred = np.column_stack([np.full(50, 3.0), np.linspace(0, 1, 50)])
    got = ev.r2_score(
        to_kind(y, kind, 7),
        to_kind(pred, kind, 7),
        multioutput="raw_values",
        force_finite=force_finite,
    )
    np.testing.assert_array_equal(
        got, skm.r2_score(y, pred, multioutput="raw_values", force_finite=force_finite)
    )


# ------------------------------------------------------------------ hypothesis ---

_small = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scored(draw: Any) -> tuple[np.ndarray, np.ndarray, int]:
    n = draw(st.integers(2, 60))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    if y.min() == y.max():
        y[0] = 1 - y[0]
    s = np.array(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), dtype=float)
    return y, s, draw(st.integers(1, n))


@_small
@given(scored())
def test_property_roc_auc_invariants(case: tuple) -> None:
    y, s, chunk = case
    auc = ev.roc_auc_score(y, s)
    assert 0.0 <= auc <= 1.0
    assert auc == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert ev.roc_auc_score(y, np.exp(s / 3) * 7 - 2) == auc  # strictly increasing map
    assert ev.roc_auc_score(y, -s) == pytest.approx(1 - auc, abs=1e-12)  # reversed ranking
    assert ev.roc_auc_score(1 - y, s) == pytest.approx(1 - auc, abs=1e-12)  # swapped classes
    assert ev.roc_auc_score(da.from_array(y, chunks=chunk), da.from_array(s, chunks=chunk)) == auc


@_small
@given(scored())
def test_property_average_precision_and_weights(case: tuple) -> None:
    y, s, chunk = case
    ap = ev.average_precision_score(y, s)
    assert 0.0 < ap <= 1.0
    assert ap == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    twice = np.concatenate([y, y]), np.concatenate([s, s])
    assert ev.average_precision_score(y, s, sample_weight=np.full(len(y), 2.0)) == pytest.approx(
        ev.average_precision_score(*twice), abs=1e-12
    )


@_small
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=80),
    st.integers(1, 9),
)
def test_property_confusion_accounting(pairs: list, chunk: int) -> None:
    y, pred = np.array(pairs).T
    cm = ev.confusion_matrix(da.from_array(y, chunks=chunk), da.from_array(pred, chunks=chunk))
    assert cm.sum() == len(y)
    assert np.trace(cm) / len(y) == pytest.approx(ev.accuracy_score(y, pred))
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred))


@_small
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=50), st.integers(1, 7))
def test_property_regression_chunking(values: list, chunk: int) -> None:
    y = np.array(values)
    pred = y[::-1] * 0.5
    names = ["mean_squared_error", "mean_absolute_error"]
    if np.ptp(y) > 1e-6 * max(1.0, float(np.max(np.abs(y)))):
        # a constant y_true: scikit-learn divides by its rounding noise, we report 0.0
        names.append("r2_score")
    for name in names:
        want = getattr(skm, name)(y, pred)
        got = getattr(ev, name)(da.from_array(y, chunks=chunk), da.from_array(pred, chunks=chunk))
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------- evaluate() ---


class ThresholdModel:
    """A tiny NumPy/CuPy-agnostic model: a linear score and its thresholded label."""

    def __init__(self, coef: np.ndarray) -> None:
        self.coef = coef

    def scores(self, X: Any) -> Any:
        return 1 / (1 + np.exp(-(X @ self.coef)))

    def both(self, X: Any) -> dict[str, Any]:
        p = self.scores(X)
        return {"proba": p, "label": (p > 0.5).astype(int)}


def problem(n: int = 3001, seed: int = 8) -> tuple:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(size=n) > 0).astype(int)
    return X, y, ThresholdModel(np.array([0.8, -1.5, 0.4, 0.1])), rng.random(n)


METRIC_SPECS = {
    "auc": ("roc_auc", {"on": "proba"}),
    "ap": (ev.average_precision_score, {"on": "proba"}),
    "ll": ("log_loss", {"on": "proba"}),
    "acc": ("accuracy", {"on": "label"}),
    "f1": ("f1", {"on": "label", "average": "macro"}),
    "cm": ("confusion_matrix", {"on": "label"}),
    "mse": ("mse", {"on": "proba"}),
}


def reference(X: np.ndarray, y: np.ndarray, model: ThresholdModel, w: Any) -> dict:
    out = model.both(X)
    p, lab = out["proba"], out["label"]
    return {
        "auc": skm.roc_auc_score(y, p, sample_weight=w),
        "ap": skm.average_precision_score(y, p, sample_weight=w),
        "ll": skm.log_loss(y, p, sample_weight=w),
        "acc": skm.accuracy_score(y, lab, sample_weight=w),
        "f1": skm.f1_score(y, lab, average="macro", sample_weight=w),
        "cm": skm.confusion_matrix(y, lab, sample_weight=w),
        "mse": skm.mean_squared_error(y, p, sample_weight=w),
    }


def check_results(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, err_msg=key)


@pytest.mark.parametrize("chunk_size", [None, 1, 257, 5000])
@pytest.mark.parametrize("weighted", [False, True])
def test_evaluate_numpy_input_in_chunks(chunk_size: Any, weighted: bool) -> None:
    X, y, model, w = problem(n=600 if chunk_size == 1 else 3001)
    w = w if weighted else None
    got = ev.evaluate(model.both, X, y, METRIC_SPECS, chunk_size=chunk_size, sample_weight=w)
    check_results(got, reference(X, y, model, w))


def test_evaluate_dask_input_keeps_chunks_and_matches_a_single_pass() -> None:
    X, y, model, w = problem()
    Xd = da.from_array(X, chunks=(333, 2))
    yd = da.from_array(y, chunks=500)
    calls: list[int] = []

    def predict(block: np.ndarray) -> dict:
        calls.append(block.shape[0])
        return model.both(block)

    got = ev.evaluate(predict, Xd, yd, METRIC_SPECS, sample_weight=da.from_array(w, chunks=1000))
    check_results(got, reference(X, y, model, w))
    assert max(calls) == 333 and sum(calls) == len(y)  # one task per chunk, never the whole array


def test_evaluate_single_output_with_a_distributed_client(no_leaked_processes: None) -> None:
    distributed = pytest.importorskip("distributed")
    X, y, model, _ = problem()
    with distributed.Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0"
    ) as client:
        with dask.config.set(scheduler=client):
            got = ev.evaluate(
                model.scores,
                da.from_array(X, chunks=(400, 4)),
                y,
                ["roc_auc", "average_precision", (ev.r2_score, {})],
            )
    p = model.scores(X)
    check_results(
        got,
        {
            "roc_auc": skm.roc_auc_score(y, p),
            "average_precision": skm.average_precision_score(y, p),
            "r2": skm.r2_score(y, p),
        },
    )


def test_metrics_follow_an_active_distributed_client(no_leaked_processes: None) -> None:
    distributed = pytest.importorskip("distributed")
    y, s, w = binary(n=2000)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"
    ):
        got = ev.roc_auc_score(
            da.from_array(y, chunks=333), da.from_array(s, chunks=333), sample_weight=w
        )
    close(got, skm.roc_auc_score(y, s, sample_weight=w))


# ------------------------------------------------------------------- bad input ---

Y2, S2 = np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.3])
BAD = [
    (lambda: ev.accuracy_score([0, 1, 1], [0, 1]), "y_true has 3, y_pred has 2"),
    (lambda: ev.roc_auc_score(Y2, S2[:3]), "y_true has 4, y_score has 3"),
    (
        lambda: ev.roc_auc_score(Y2, S2, sample_weight=[1.0, 2.0]),
        "y_true has 4, sample_weight has 2",
    ),
    (
        lambda: ev.roc_auc_score(da.from_array(Y2, chunks=2), da.from_array(S2[:3], chunks=2)),
        "y_true has 4, y_score has 3",
    ),
    (
        lambda: ev.roc_auc_score([1, 1, 1], [0.2, 0.3, 0.4]),
        r"Only one class \(np.int64\(1\)\) is present|Only one class \(1\) is present",
    ),
    (
        lambda: ev.roc_auc_score([0, 1, 2], [0.2, 0.3, 0.4]),
        "y_true has 3 classes; only binary ROC AUC",
    ),
    (lambda: ev.roc_auc_score(Y2, [0.1, np.nan, 0.3, 0.2]), "y_score contains NaN"),
    (lambda: ev.roc_auc_score(Y2, [0.1, np.inf, 0.3, 0.2]), "y_score contains infinity"),
    (
        lambda: ev.roc_auc_score(
            da.from_array(Y2, chunks=1), da.from_array(np.array([0.1, 0.2, 0.3, np.nan]), chunks=1)
        ),
        "y_score contains NaN",
    ),
    (lambda: ev.roc_auc_score(Y2, S2, max_fpr=0.0), r"max_fpr must be in \(0, 1\]"),
    (
        lambda: ev.roc_auc_score(Y2, S2, sample_weight=[0.0, 1.0, 1.0, 0.0]),
        "y_true has no negative samples",
    ),
    (lambda: ev.roc_auc_score(Y2, np.ones((4, 2))), "y_score must be 1-D, got a 2-D array"),
    (
        lambda: ev.roc_auc_score(Y2, np.array(["a", "b", "c", "d"])),
        "y_score has unsupported dtype <U1",
    ),
    (lambda: ev.roc_auc_score(Y2, S2.astype(complex)), "y_score has unsupported dtype complex128"),
    (
        lambda: ev.average_precision_score([0, 0, 0], [0.1, 0.2, 0.3]),
        "y_true has no positive samples",
    ),
    (lambda: ev.average_precision_score(Y2, S2, pos_label=3), r"pos_label=3 is not a valid label"),
    (lambda: ev.accuracy_score([], []), "y_true is empty"),
    (
        lambda: ev.accuracy_score(np.zeros((3, 2)), np.zeros((3, 2))),
        "y_true must be 1-D, got a 2-D array",
    ),
    (lambda: ev.accuracy_score([0.5, 1.0], [1.0, 0.0]), "y_true contains continuous values"),
    (
        lambda: ev.accuracy_score(np.array([1 + 1j]), np.array([1 + 1j])),
        "y_true has unsupported dtype complex128",
    ),
    (lambda: ev.accuracy_score(["a", "b"], [0, 1]), "mix label types"),
    (lambda: ev.accuracy_score([0, 1], [0, np.nan]), "y_pred contains NaN"),
    (
        lambda: ev.precision_score([0, 1, 2], [0, 1, 2]),
        "Target is multiclass .3 labels. but average='binary'",
    ),
    (lambda: ev.precision_score(["a", "b"], ["a", "b"]), r"pos_label=1 is not a valid label"),
    (lambda: ev.f1_score(Y2, Y2, average="samples"), "average must be one of"),
    (lambda: ev.recall_score(Y2, Y2, zero_division=2), "zero_division must be"),
    (lambda: ev.confusion_matrix(Y2, Y2, labels=[7, 8]), "none of the labels given is in y_true"),
    (lambda: ev.confusion_matrix(Y2, Y2, normalize="rows"), "normalize must be one of"),
    (lambda: ev.log_loss([1, 1, 1], [0.5, 0.6, 0.7]), "y_true contains only one label"),
    (lambda: ev.log_loss(Y2, [0.1, 1.2, 0.3, 0.4]), "y_proba contains values greater than 1"),
    (lambda: ev.log_loss(Y2, np.full((4, 3), 1 / 3)), "different numbers of classes: 2 and 3"),
    (
        lambda: ev.log_loss(Y2, np.full((4, 2), 0.5), labels=[0, 5]),
        r"y_true contains labels not in labels: \[1\]",
    ),
    (lambda: ev.mean_squared_error([1.0, 2.0], [1.0, np.inf]), "y_pred contains infinity"),
    (
        lambda: ev.mean_squared_error(np.ones((3, 2)), np.ones((3, 3))),
        "different numbers of outputs: 2 and 3",
    ),
    (
        lambda: ev.mean_squared_error(np.ones((3, 2, 1)), np.ones((3, 2, 1))),
        "y_true must be 1-D or 2-D",
    ),
    (
        lambda: ev.mean_absolute_error([1.0, 2.0], [1.0, 2.0], multioutput="median"),
        "multioutput must be",
    ),
    (
        lambda: ev.mean_squared_error([1.0, 2.0], [1.0, 2.0], multioutput=[1.0]),
        "custom multioutput weights need several outputs",
    ),
    (
        lambda: ev.r2_score(np.ones((3, 2)), np.ones((3, 2)), multioutput=[1.0]),
        "multioutput has 1 weights but there are 2 outputs",
    ),
    (lambda: ev.r2_score([1.0], [2.0]), "R² is not defined for fewer than two samples"),
    (
        lambda: ev.r2_score([1.0, 2.0], [2.0, 1.0], sample_weight=[1.0, np.nan]),
        "sample_weight contains NaN",
    ),
    (lambda: ev.evaluate(lambda x: x[:, 0], np.ones((4, 1)), Y2, ["auc"]), "unknown metric 'auc'"),
    (lambda: ev.evaluate(lambda x: x[:, 0], np.ones((4, 1)), Y2, []), "metrics is empty"),
    (lambda: ev.evaluate(lambda x: x[:, 0], np.ones((4, 1)), Y2, ["mse", "mse"]), "listed twice"),
    (lambda: ev.evaluate(lambda x: x[:, 0], np.ones((5, 1)), Y2, ["mse"]), "X has 5, y has 4"),
    (
        lambda: ev.evaluate(lambda x: x[:-1, 0], np.ones((4, 1)), Y2, ["mse"]),
        "predict returned 3 rows for a chunk of 4",
    ),
    (
        lambda: ev.evaluate(lambda x: {"a": x[:, 0]}, np.ones((4, 1)), Y2, [("mse", {"on": "b"})]),
        "predict returned no output 'b'",
    ),
    (
        lambda: ev.evaluate(lambda x: x[:, 0] * np.nan, np.ones((4, 1)), Y2, ["roc_auc"]),
        "predict output contains NaN",
    ),
    (
        lambda: ev.evaluate(lambda x: x[:, 0], np.ones((4, 1)), Y2, ["mse"], chunk_size=0),
        "chunk_size must be a positive",
    ),
    (lambda: ev.evaluate("model", np.ones((4, 1)), Y2, ["mse"]), "predict must be callable"),
    (
        lambda: ev.evaluate(
            lambda x: x[:, 0], np.ones((4, 1)), np.array([1, 1, 1, 1]), ["roc_auc"], chunk_size=1
        ),
        "Only one class",
    ),
]


@pytest.mark.parametrize("call,message", BAD, ids=[m[:60] for _, m in BAD])
def test_bad_input_raises_value_error_naming_the_problem(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_precision_average_none_returns_per_label_array() -> None:
    got = ev.recall_score([0, 1, 2, 2], [0, 2, 2, 2], average=None)
    np.testing.assert_allclose(got, [1.0, 0.0, 1.0])
