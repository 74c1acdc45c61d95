"""Model-evaluation metrics with scikit-learn's names and results, on NumPy, CuPy and Dask input.

Every metric reduces its inputs to a small mergeable statistic (``_stats.py``,
``_ranking.py``) and finishes on the host in float64, so a Dask array gives the same number
as the concatenated NumPy array without the data ever being gathered into one process, and
CuPy input is reduced on the GPU. ``evaluate`` runs a model over a dataset in chunks on the
Dask workers (threaded scheduler, or the active ``distributed.Client``) and merges the
same statistics, so its results — ROC AUC included, with no binning — equal one pass over
the whole data. Where scikit-learn only warns and returns NaN (one class for ROC AUC, fewer
than two samples for R²), these functions raise ``ValueError`` instead.

Why one module this long: it is the package's public face, one documented metric after
another; the machinery lives in the private modules beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from .._arrays.checks import (
    as_array,
    check_finite,
    check_float_array,
    check_labels,
    check_lengths,
    check_ndim,
    check_weights,
)
from .._arrays.chunked import map_reduce
from ._evaluate import run_evaluate
from ._finalize import (
    UndefinedMetricWarning,
    _accuracy_final,
    _ap_final,
    _confusion_final,
    _logloss_final,
    _multioutput,
    _prf_final,
    _r2_final,
    _roc_final,
)
from ._ranking import combine_rank, rank_stat
from ._stats import (
    combine_confusion,
    combine_logloss,
    combine_moments,
    confusion_stat,
    logloss_stat,
    moment_stat,
)

__all__ = [
    "UndefinedMetricWarning",
    "accuracy_score",
    "average_precision_score",
    "confusion_matrix",
    "evaluate",
    "f1_score",
    "log_loss",
    "mean_absolute_error",
    "mean_squared_error",
    "precision_score",
    "r2_score",
    "recall_score",
    "roc_auc_score",
]


# --------------------------------------------------------------------------- inputs ---


def _classification_inputs(y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any, Any]:
    y_true = check_labels(y_true, "y_true")
    y_pred = check_labels(y_pred, "y_pred")
    n = check_lengths(y_true=y_true, y_pred=y_pred)
    return y_true, y_pred, check_weights(sample_weight, n)


def _score_inputs(
    y_true: Any, y_score: Any, sample_weight: Any, name: str = "y_score", ndims: tuple = (1,)
) -> tuple[Any, Any, Any]:
    y_true = check_labels(y_true, "y_true")
    y_score = as_array(y_score, name)
    check_ndim(y_score, name, ndims)
    check_float_array(y_score, name)
    n = check_lengths(y_true=y_true, **{name: y_score})
    return y_true, check_finite(y_score, name), check_weights(sample_weight, n)


def _regression_inputs(y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any, Any]:
    y_true, y_pred = as_array(y_true, "y_true"), as_array(y_pred, "y_pred")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        check_ndim(y, name, (1, 2))
        check_float_array(y, name)
    n = check_lengths(y_true=y_true, y_pred=y_pred)
    outs = [1 if y.ndim == 1 else y.shape[1] for y in (y_true, y_pred)]
    if outs[0] != outs[1]:
        raise ValueError(
            f"y_true and y_pred have different numbers of outputs: {outs[0]} and {outs[1]}"
        )
    w = check_weights(sample_weight, n)
    return check_finite(y_true, "y_true"), check_finite(y_pred, "y_pred"), w


# ----------------------------------------------------------------- the metrics ---

_KINDS: dict[str, tuple[Callable, Callable]] = {
    "confusion": (confusion_stat, combine_confusion),
    "rank": (rank_stat, combine_rank),
    "logloss": (logloss_stat, combine_logloss),
    "squared_errors": (partial(moment_stat, parts="sse"), combine_moments),
    "absolute_errors": (partial(moment_stat, parts="sae"), combine_moments),
    "moments": (partial(moment_stat, parts="sse,m2"), combine_moments),
}


def _reduce(kind: str, *arrays: Any) -> dict:
    stat, combine = _KINDS[kind]
    return map_reduce(stat, combine, arrays)


def accuracy_score(
    y_true: Any, y_pred: Any, *, normalize: bool = True, sample_weight: Any = None
) -> float:
    """Fraction (or weighted count) of exactly correct predictions, as ``sklearn.metrics``.

    Parameters
    ----------
    y_true, y_pred : array of shape (n_samples,)
        True and predicted class labels (NumPy, CuPy or Dask).
    normalize : bool, default True
        Return the fraction correct; ``False`` returns the (weighted) number correct.
    sample_weight : array of shape (n_samples,), optional
        Sample weights.

    Returns
    -------
    float

    Examples
    --------
    >>> accuracy_score([0, 1, 2, 3], [0, 2, 1, 3])
    0.5
    """
    stat = _reduce("confusion", *_classification_inputs(y_true, y_pred, sample_weight))
    return _accuracy_final(stat, normalize)


def confusion_matrix(
    y_true: Any,
    y_pred: Any,
    *,
    labels: Any = None,
    sample_weight: Any = None,
    normalize: str | None = None,
) -> np.ndarray:
    """Confusion matrix ``C[i, j]``: samples of true class ``i`` predicted as ``j``.

    Same arguments and result as ``sklearn.metrics.confusion_matrix``; the result is a
    NumPy array (int64, or float64 with float weights or ``normalize``).

    Examples
    --------
    >>> confusion_matrix([2, 0, 2, 2, 0, 1], [0, 0, 2, 2, 0, 2]).tolist()
    [[2, 0, 0], [0, 0, 1], [1, 0, 2]]
    """
    y_true, y_pred, w = _classification_inputs(y_true, y_pred, sample_weight)
    stat = _reduce("confusion", y_true, y_pred, w)
    return _confusion_final(stat, labels, normalize, None if w is None else w.dtype)


def _prf_doc(which: str) -> Callable[[Callable], Callable]:
    def wrap(func: Callable) -> Callable:
        func.__doc__ = f"""{which.capitalize()} with scikit-learn's ``{func.__name__}`` semantics.

    Parameters
    ----------
    y_true, y_pred : array of shape (n_samples,)
        True and predicted labels.
    labels : array-like, optional
        Labels to include (and their order for ``average=None``).
    pos_label : int, str or bool, default 1
        The positive class when ``average='binary'``.
    average : {{'binary', 'micro', 'macro', 'weighted'}} or None, default 'binary'
        How per-label scores are combined; ``None`` returns one score per label.
    sample_weight : array of shape (n_samples,), optional
    zero_division : {{'warn', 0.0, 1.0, np.nan}}, default 'warn'
        Value for an ill-defined score; ``'warn'`` means 0.0 with an UndefinedMetricWarning.

    Returns
    -------
    float or ndarray

    Examples
    --------
    >>> round({func.__name__}([0, 1, 1, 0], [0, 1, 0, 0]), 4)
    {dict(precision=1.0, recall=0.5, f1=0.6667)[which]}
    """
        return func

    return wrap


@_prf_doc("precision")
def precision_score(
    y_true: Any,
    y_pred: Any,
    *,
    labels: Any = None,
    pos_label: Any = 1,
    average: str | None = "binary",
    sample_weight: Any = None,
    zero_division: Any = "warn",
) -> float | np.ndarray:
    stat = _reduce("confusion", *_classification_inputs(y_true, y_pred, sample_weight))
    return _prf_final(stat, "precision", labels, pos_label, average, zero_division)


@_prf_doc("recall")
def recall_score(
    y_true: Any,
    y_pred: Any,
    *,
    labels: Any = None,
    pos_label: Any = 1,
    average: str | None = "binary",
    sample_weight: Any = None,
    zero_division: Any = "warn",
) -> float | np.ndarray:
    stat = _reduce("confusion", *_classification_inputs(y_true, y_pred, sample_weight))
    return _prf_final(stat, "recall", labels, pos_label, average, zero_division)


@_prf_doc("f1")
def f1_score(
    y_true: Any,
    y_pred: Any,
    *,
    labels: Any = None,
    pos_label: Any = 1,
    average: str | None = "binary",
    sample_weight: Any = None,
    zero_division: Any = "warn",
) -> float | np.ndarray:
    stat = _reduce("confusion", *_classification_inputs(y_true, y_pred, sample_weight))
    return _prf_final(stat, "f1", labels, pos_label, average, zero_division)


def roc_auc_score(
    y_true: Any,
    y_score: Any,
    *,
    average: str | None = "macro",
    sample_weight: Any = None,
    max_fpr: float | None = None,
    multi_class: str = "raise",
    labels: Any = None,
) -> float:
    """Exact area under the ROC curve for binary ``y_true`` (the larger label is positive).

    Ties in ``y_score`` form one threshold, as in scikit-learn; ``max_fpr`` gives the
    McClish-standardised partial AUC. ``average``, ``multi_class`` and ``labels`` are
    accepted for signature compatibility and do not change a binary result. One class in
    ``y_true`` raises ``ValueError`` (scikit-learn warns and returns NaN).

    Examples
    --------
    >>> roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y_true, y_score, w = _score_inputs(y_true, y_score, sample_weight)
    return _roc_final(_reduce("rank", y_true, y_score, w), max_fpr)


def average_precision_score(
    y_true: Any,
    y_score: Any,
    *,
    average: str | None = "macro",
    pos_label: Any = 1,
    sample_weight: Any = None,
) -> float:
    """Average precision (step-wise area under the precision-recall curve), binary ``y_true``.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over distinct score thresholds, as scikit-learn.
    ``y_true`` without positives raises ``ValueError``.

    Examples
    --------
    >>> round(average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y_true, y_score, w = _score_inputs(y_true, y_score, sample_weight)
    return _ap_final(_reduce("rank", y_true, y_score, w), pos_label)


def log_loss(
    y_true: Any,
    y_proba: Any,
    *,
    normalize: bool = True,
    sample_weight: Any = None,
    labels: Any = None,
) -> float:
    """Cross-entropy of predicted probabilities, as ``sklearn.metrics.log_loss``.

    ``y_proba`` is (n_samples,) for the probability of the larger label, or
    (n_samples, n_classes) in sorted label order; values are clipped to
    ``[eps, 1 - eps]`` with ``eps`` of their float dtype.

    Examples
    --------
    >>> round(log_loss(["spam", "ham", "ham", "spam"], [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), 5)
    0.21616
    """
    y_true, y_proba, w = _score_inputs(y_true, y_proba, sample_weight, "y_proba", (1, 2))
    return _logloss_final(_reduce("logloss", y_true, y_proba, w), labels, normalize)


def mean_squared_error(
    y_true: Any, y_pred: Any, *, sample_weight: Any = None, multioutput: Any = "uniform_average"
) -> Any:
    """Mean squared error, as ``sklearn.metrics.mean_squared_error``.

    Examples
    --------
    >>> mean_squared_error([3, -0.5, 2, 7], [2.5, 0.0, 2, 8])
    0.375
    """
    stat = _reduce("squared_errors", *_regression_inputs(y_true, y_pred, sample_weight))
    return _multioutput(stat["sse"] / stat["weight"], multioutput)


def mean_absolute_error(
    y_true: Any, y_pred: Any, *, sample_weight: Any = None, multioutput: Any = "uniform_average"
) -> Any:
    """Mean absolute error, as ``sklearn.metrics.mean_absolute_error``.

    Examples
    --------
    >>> mean_absolute_error([3, -0.5, 2, 7], [2.5, 0.0, 2, 8])
    0.5
    """
    stat = _reduce("absolute_errors", *_regression_inputs(y_true, y_pred, sample_weight))
    return _multioutput(stat["sae"] / stat["weight"], multioutput)


def r2_score(
    y_true: Any,
    y_pred: Any,
    *,
    sample_weight: Any = None,
    multioutput: Any = "uniform_average",
    force_finite: bool = True,
) -> Any:
    """Coefficient of determination R², as ``sklearn.metrics.r2_score``.

    Fewer than two samples raise ``ValueError`` (scikit-learn warns and returns NaN).

    Examples
    --------
    >>> round(r2_score([3, -0.5, 2, 7], [2.5, 0.0, 2, 8]), 4)
    0.9486
    """
    stat = _reduce("moments", *_regression_inputs(y_true, y_pred, sample_weight))
    return _r2_final(stat, multioutput, force_finite)


#: name -> (statistic kind, finaliser(stat, weight_dtype, **kwargs), input checker)
METRICS: dict[str, tuple[str, Callable[..., Any]]] = {
    "accuracy": ("confusion", lambda s, wd, **k: _accuracy_final(s, **k)),
    "confusion_matrix": (
        "confusion",
        lambda s, wd, labels=None, normalize=None: _confusion_final(s, labels, normalize, wd),
    ),
    "precision": ("confusion", lambda s, wd, **k: _prf_final(s, "precision", **_prf_kw(k))),
    "recall": ("confusion", lambda s, wd, **k: _prf_final(s, "recall", **_prf_kw(k))),
    "f1": ("confusion", lambda s, wd, **k: _prf_final(s, "f1", **_prf_kw(k))),
    "roc_auc": ("rank", lambda s, wd, max_fpr=None, **_: _roc_final(s, max_fpr)),
    "average_precision": ("rank", lambda s, wd, pos_label=1, **_: _ap_final(s, pos_label)),
    "log_loss": (
        "logloss",
        lambda s, wd, labels=None, normalize=True: _logloss_final(s, labels, normalize),
    ),
    "mean_squared_error": (
        "squared_errors",
        lambda s, wd, multioutput="uniform_average": _multioutput(
            s["sse"] / s["weight"], multioutput
        ),
    ),
    "mean_absolute_error": (
        "absolute_errors",
        lambda s, wd, multioutput="uniform_average": _multioutput(
            s["sae"] / s["weight"], multioutput
        ),
    ),
    "r2": (
        "moments",
        lambda s, wd, multioutput="uniform_average", force_finite=True: _r2_final(
            s, multioutput, force_finite
        ),
    ),
}

_FUNCTIONS = {
    accuracy_score: "accuracy",
    confusion_matrix: "confusion_matrix",
    precision_score: "precision",
    recall_score: "recall",
    f1_score: "f1",
    roc_auc_score: "roc_auc",
    average_precision_score: "average_precision",
    log_loss: "log_loss",
    mean_squared_error: "mean_squared_error",
    mean_absolute_error: "mean_absolute_error",
    r2_score: "r2",
}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "r2_score": "r2"}


def _prf_kw(kwargs: dict) -> dict:
    out = {"labels": None, "pos_label": 1, "average": "binary", "zero_division": "warn"}
    unknown = set(kwargs) - set(out)
    if unknown:
        raise ValueError(f"unknown metric arguments {sorted(unknown)}; accepted: {sorted(out)}")
    out.update(kwargs)
    return out


def evaluate(
    predict: Callable[[Any], Any],
    X: Any,
    y: Any,
    metrics: Sequence[Any] | Mapping[str, Any],
    chunk_size: int | None = None,
    *,
    sample_weight: Any = None,
) -> dict[str, Any]:
    """Run ``predict`` over ``X`` in chunks on the Dask workers and score it exactly.

    Each chunk of rows is predicted where it lives and reduced to the metrics' sufficient
    statistics there; only the statistics travel, are merged, and give exactly the numbers
    one pass over the concatenated data would (ROC AUC and average precision included).

    Parameters
    ----------
    predict : callable
        ``predict(X_chunk)`` returns predictions for the rows of the chunk: an array, or a
        dict of arrays (then each metric names the one it uses with ``on=``).
    X : array of shape (n_samples, ...)
        NumPy, CuPy or Dask array. In-memory arrays are split into ``chunk_size`` rows.
    y : array of shape (n_samples,) or (n_samples, n_outputs)
        Targets.
    metrics : sequence or mapping
        Items are metric names (``"accuracy"``, ``"precision"``, ``"recall"``, ``"f1"``,
        ``"confusion_matrix"``, ``"roc_auc"``, ``"average_precision"``, ``"log_loss"``,
        ``"mean_squared_error"``/``"mse"``, ``"mean_absolute_error"``/``"mae"``, ``"r2"``),
        the metric functions of this module, or ``(name_or_function, kwargs)`` pairs. A
        mapping gives the result keys explicitly.
    chunk_size : int, optional
        Rows per task; default: the Dask chunks of ``X``, or 100 000 rows.
    sample_weight : array of shape (n_samples,), optional

    Returns
    -------
    dict
        Result key -> metric value.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(10.0).reshape(-1, 1); y = (X[:, 0] > 4).astype(int)
    >>> evaluate(lambda x: x[:, 0], X, y, ["roc_auc", ("mse", {})], chunk_size=3)
    {'roc_auc': 1.0, 'mean_squared_error': 22.0}
    """
    specs = _parse_metrics(metrics)
    return run_evaluate(predict, X, y, specs, chunk_size, sample_weight, METRICS, _KINDS)


def _parse_metrics(metrics: Sequence[Any] | Mapping[str, Any]) -> dict[str, tuple[str, dict]]:
    items = list(metrics.items()) if isinstance(metrics, Mapping) else [(None, m) for m in metrics]
    if not items:
        raise ValueError("metrics is empty; name at least one metric")
    specs: dict[str, tuple[str, dict]] = {}
    for key, item in items:
        kwargs: dict = {}
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], Mapping):
                raise ValueError(f"a metric tuple must be (name, kwargs dict), got {item!r}")
            item, kwargs = item[0], dict(item[1])
        name = _FUNCTIONS.get(item) if callable(item) else _ALIASES.get(item, item)
        if name not in METRICS:
            raise ValueError(f"unknown metric {item!r}; choose from {sorted(METRICS)}")
        key = name if key is None else key
        if key in specs:
            raise ValueError(
                f"metric {key!r} is listed twice; pass a dict to give each its own key"
            )
        specs[key] = (name, kwargs)
    return specs
