"""Finishing metrics from merged statistics, on the host in float64, as scikit-learn defines them.

``evaluation.py`` reduces inputs to statistics; this module turns a statistic into the
number scikit-learn would report for the same data — per-label precision/recall/F1 with
``average`` and ``zero_division``, confusion matrices with ``labels``/``normalize``, log
loss with label checks, ``multioutput`` averaging and R² with ``force_finite`` — and raises
``ValueError`` where scikit-learn would warn and return NaN.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._ranking import average_precision_from_stat, roc_auc_from_stat


class UndefinedMetricWarning(UserWarning):
    """A score was ill-defined and set to ``zero_division`` (as asked with ``"warn"``)."""


def _zero_division_value(zero_division: Any) -> float:
    if isinstance(zero_division, str):
        if zero_division != "warn":
            raise ValueError(
                f"zero_division must be 'warn', 0.0, 1.0 or np.nan, got {zero_division!r}"
            )
        return 0.0
    if not (zero_division in (0, 1) or np.isnan(zero_division)):
        raise ValueError(f"zero_division must be 'warn', 0.0, 1.0 or np.nan, got {zero_division!r}")
    return float(zero_division)


def _divide(num: np.ndarray, den: np.ndarray, zero_division: Any, what: str) -> np.ndarray:
    value = _zero_division_value(zero_division)
    out = np.full(num.shape, value, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    if zero_division == "warn" and np.any(den == 0):
        warnings.warn(
            f"{what} is ill-defined and set to 0.0 for labels with no {'predicted' if what == 'precision' else 'true'} "
            "samples; use zero_division to control this",
            UndefinedMetricWarning,
            stacklevel=4,
        )
    return out


def _prf_final(
    stat: dict, which: str, labels: Any, pos_label: Any, average: Any, zero_division: Any
) -> float | np.ndarray:
    if average not in (None, "binary", "micro", "macro", "weighted"):
        raise ValueError(
            f"average must be one of None, 'binary', 'micro', 'macro', 'weighted'; got {average!r}"
        )
    _zero_division_value(zero_division)
    present, matrix = stat["labels"], stat["matrix"]
    if average == "binary":
        if len(present) > 2:
            raise ValueError(
                f"Target is multiclass ({len(present)} labels) but average='binary'; "
                "choose average=None, 'micro', 'macro' or 'weighted'"
            )
        if pos_label not in present.tolist() and len(present) >= 2:
            raise ValueError(
                f"pos_label={pos_label!r} is not a valid label: it should be one of {present.tolist()}"
            )
        use = np.asarray([pos_label])
    else:
        if pos_label not in (None, 1):
            warnings.warn(
                f"pos_label={pos_label!r} is ignored when average={average!r}; "
                "use labels=[pos_label] to score a single class",
                UserWarning,
                stacklevel=3,
            )
        use = present if labels is None else np.asarray(labels)
        if use.size == 0:
            raise ValueError("labels is empty; pass at least one label")
    idx = np.searchsorted(present, use) if present.size else np.zeros(len(use), int)
    found = (idx < len(present)) & (present[np.minimum(idx, len(present) - 1)] == use)
    idx = np.where(found, idx, 0)
    tp = np.where(found, np.diag(matrix)[idx], 0).astype(np.float64)
    pred_sum = np.where(found, matrix.sum(axis=0)[idx], 0).astype(np.float64)
    true_sum = np.where(found, matrix.sum(axis=1)[idx], 0).astype(np.float64)
    if average == "micro":
        tp, pred_sum, true_sum = (
            tp.sum(keepdims=True),
            pred_sum.sum(keepdims=True),
            true_sum.sum(keepdims=True),
        )
    if which == "precision":
        score = _divide(tp, pred_sum, zero_division, "precision")
    elif which == "recall":
        score = _divide(tp, true_sum, zero_division, "recall")
    else:
        score = _divide(2 * tp, pred_sum + true_sum, zero_division, "F-score")
    if average is None:
        return score
    keep = ~np.isnan(score)
    if not keep.any():
        return float("nan")  # only reachable with zero_division=np.nan, as asked
    weights = true_sum[keep] if average == "weighted" else None
    if weights is not None and weights.sum() == 0:
        weights = None
    return float(np.average(score[keep], weights=weights))


def _confusion_final(stat: dict, labels: Any, normalize: Any, weight_dtype: Any) -> np.ndarray:
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be one of None, 'true', 'pred', 'all'; got {normalize!r}")
    present, matrix = stat["labels"], stat["matrix"]
    if labels is None:
        use = present
    else:
        use = np.asarray(labels)
        if use.size == 0:
            raise ValueError("labels is empty; pass at least one label")
        if not np.isin(use, present[matrix.sum(axis=1) > 0]).any():
            raise ValueError("none of the labels given is in y_true; at least one must be")
    pos = np.searchsorted(present, use)
    found = (pos < len(present)) & (present[np.minimum(pos, len(present) - 1)] == use)
    out = np.zeros((len(use), len(use)), dtype=matrix.dtype)
    rows = np.flatnonzero(found)
    out[np.ix_(rows, rows)] = matrix[np.ix_(pos[rows], pos[rows])]
    if weight_dtype is None or np.dtype(weight_dtype).kind in "biu":
        out = np.rint(out).astype(np.int64)
    else:
        out = out.astype(np.float64)
    if normalize is None:
        return out
    with np.errstate(all="ignore"):
        if normalize == "true":
            out = out / out.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            out = out / out.sum(axis=0, keepdims=True)
        else:
            out = out / out.sum()
    return np.nan_to_num(out)


def _binary_positive(stat: dict, what: str) -> Any:
    labels = stat["labels"]
    if len(labels) == 1:
        raise ValueError(f"Only one class ({labels[0]!r}) is present in y_true; {what} needs two")
    if len(labels) > 2:
        raise ValueError(
            f"y_true has {len(labels)} classes; only binary {what} is supported "
            "(score one class against the rest by passing y_true == label)"
        )
    return labels[1]


def _logloss_final(stat: dict, labels: Any, normalize: bool) -> float:
    if stat["p_max"] > 1:
        raise ValueError(f"y_proba contains values greater than 1: {stat['p_max']}")
    if stat["p_min"] < 0:
        raise ValueError(f"y_proba contains values lower than 0: {stat['p_min']}")
    seen = stat["labels"]
    classes = seen if labels is None else np.unique(np.asarray(labels))
    if labels is None and len(classes) == 1:
        raise ValueError(
            f"y_true contains only one label ({classes[0]!r}); pass the full set of labels "
            "through the labels argument"
        )
    if labels is not None and not np.isin(seen, classes).all():
        raise ValueError(
            f"y_true contains labels not in labels: {sorted(set(seen.tolist()) - set(classes.tolist()))}"
        )
    n_cols = stat["loss"].shape[1]
    if len(classes) != n_cols:
        raise ValueError(
            f"y_true and y_proba have different numbers of classes: {len(classes)} and {n_cols}; "
            f"classes found: {classes.tolist()} (pass labels= to name all classes)"
        )
    cols = np.searchsorted(classes, seen)
    total = float(stat["loss"][np.arange(len(seen)), cols].sum())
    return total / stat["weight"] if normalize else total


def _multioutput(values: np.ndarray, multioutput: Any, den: np.ndarray | None = None) -> Any:
    if isinstance(multioutput, str):
        if multioutput == "raw_values":
            return values
        if multioutput == "uniform_average":
            return float(np.mean(values))
        if multioutput == "variance_weighted" and den is not None:
            return float(np.average(values, weights=den if np.any(den != 0) else None))
        allowed = "'raw_values', 'uniform_average'" + (
            ", 'variance_weighted'" if den is not None else ""
        )
        raise ValueError(
            f"multioutput must be {allowed} or an array of weights; got {multioutput!r}"
        )
    weights = np.asarray(multioutput, dtype=np.float64)
    if values.size == 1:
        raise ValueError("custom multioutput weights need several outputs; y has one")
    if weights.shape != values.shape:
        raise ValueError(
            f"multioutput has {weights.size} weights but there are {values.size} outputs"
        )
    return float(np.average(values, weights=weights))


def _r2_final(stat: dict, multioutput: Any, force_finite: bool) -> Any:
    if stat["count"] < 2:
        raise ValueError(f"R² is not defined for fewer than two samples (got {stat['count']})")
    num, den = stat["sse"], stat["m2"]
    with np.errstate(all="ignore"):
        scores = 1 - num / den
    constant = den == 0
    if force_finite:
        scores = np.where(constant, np.where(num == 0, 1.0, 0.0), scores)
    return _multioutput(scores, multioutput, den)


def _accuracy_final(stat: dict, normalize: bool = True) -> float:
    correct = float(np.trace(stat["matrix"]))
    return correct / float(stat["matrix"].sum()) if normalize else correct


def _roc_final(stat: Any, max_fpr: float | None = None) -> float:
    if max_fpr is not None and not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr!r}")
    return roc_auc_from_stat(stat, _binary_positive(stat, "ROC AUC"), max_fpr)


def _ap_final(stat: Any, pos_label: Any = 1) -> float:
    present = stat["labels"]
    if len(present) > 2:
        raise ValueError(
            f"y_true has {len(present)} classes; only binary average precision is supported"
        )
    if len(present) == 2 and pos_label not in present.tolist():
        raise ValueError(
            f"pos_label={pos_label!r} is not a valid label: it should be one of {present.tolist()}"
        )
    return average_precision_from_stat(stat, pos_label)
