"""Mergeable per-block statistics for classification, probabilistic and regression metrics.

Three statistics cover every non-ranking metric in ``evaluation.py``: a *confusion*
statistic (the labels seen and the weighted count of every (true, predicted) pair), a
*log-loss* statistic (per true label, the weighted sum of ``-log p`` for every probability
column) and *moments* (total weight, weighted mean and centred sum of squares of ``y_true``
merged with Chan et al.'s pairwise update, plus summed squared and absolute errors). Each is
computed in the block's namespace (NumPy or CuPy), returned on the host, and merged
associatively, so chunked Dask results equal single-pass results.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from .._arrays.chunked import union_labels
from .._arrays.namespace import cast, get_namespace, to_numpy

__all__ = [
    "SMALL_LABEL_RANGE",
    "ConfusionStat",
    "LogLossStat",
    "MomentStat",
    "combine_confusion",
    "combine_logloss",
    "combine_moments",
    "confusion_stat",
    "logloss_stat",
    "moment_stat",
]


#: Integer labels spanning at most this many values are counted with ``bincount`` directly
#: (no sort); wider or non-integer labels go through ``unique``.
SMALL_LABEL_RANGE = 1024


def _is_str(x: Any) -> bool:
    return x.dtype.kind in "USO"


def _int_range(xp: Any, *arrays: Any) -> tuple[int, int] | None:
    """(min, max) of integer/bool label arrays when the span is small, else None."""
    if not all(a.dtype.kind in "biu" for a in arrays):
        return None
    ends = [xp.min(a).astype(np.int64) for a in arrays] + [xp.max(a).astype(np.int64) for a in arrays]
    ext = to_numpy(xp.stack(ends))  # one device sync for all the bounds
    lo, hi = int(ext[: len(arrays)].min()), int(ext[len(arrays) :].max())
    return (lo, hi) if hi - lo < SMALL_LABEL_RANGE else None


def encode_labels(y: Any, xp: Any) -> tuple[Any, Any]:
    """Sorted labels present in ``y`` and each sample's index into them."""
    span = _int_range(xp, y)
    if span is None:
        return xp.unique(y, return_inverse=True)
    lo, hi = span
    offset = y.astype(np.int64) - lo
    present = xp.bincount(offset, minlength=hi - lo + 1) > 0
    remap = xp.cumsum(present) - 1
    labels = (xp.arange(lo, hi + 1)[present]).astype(y.dtype)
    return labels, remap[offset]


class ConfusionStat(TypedDict):
    """``matrix[i, j]``: weight of samples with true ``labels[i]`` predicted ``labels[j]``."""

    labels: np.ndarray
    matrix: np.ndarray


def confusion_stat(y_true: Any, y_pred: Any, sample_weight: Any = None) -> ConfusionStat:
    """Confusion statistic of one block over the labels it contains."""
    if _is_str(y_true) != _is_str(y_pred):
        raise ValueError(
            f"y_true and y_pred mix label types ({y_true.dtype} and {y_pred.dtype}); "
            "pass labels of one type (all strings or all numbers)"
        )
    xp = get_namespace(y_true, y_pred, sample_weight)
    if _is_str(y_true):
        xp = np
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        sample_weight = None if sample_weight is None else to_numpy(sample_weight)
    span = None if _is_str(y_true) else _int_range(xp, y_true, y_pred)
    if span is not None:  # small integer labels: count pairs directly, then drop unused labels
        lo, hi = span
        k = hi - lo + 1
        key = (y_true.astype(np.int64) - lo) * k + (y_pred.astype(np.int64) - lo)
        labels = xp.arange(lo, hi + 1)
    else:
        labels = xp.unique(xp.concatenate([xp.reshape(y_true, (-1,)), xp.reshape(y_pred, (-1,))]))
        k = int(labels.shape[0])
        key = xp.searchsorted(labels, y_true) * k + xp.searchsorted(labels, y_pred)
    if sample_weight is None:
        matrix = xp.bincount(key, minlength=k * k)
    else:
        matrix = xp.bincount(key, weights=sample_weight.astype(np.float64), minlength=k * k)
    matrix = xp.reshape(matrix, (k, k))
    if span is not None:
        seen = (xp.bincount(y_true.astype(np.int64) - lo, minlength=k) > 0) | (
            xp.bincount(y_pred.astype(np.int64) - lo, minlength=k) > 0
        )
        labels = labels[seen].astype(np.result_type(y_true.dtype, y_pred.dtype))
        matrix = matrix[seen][:, seen]
    return ConfusionStat(labels=to_numpy(labels), matrix=to_numpy(matrix))


def combine_confusion(stats: list[ConfusionStat]) -> ConfusionStat:
    """Merge confusion statistics over the union of their labels."""
    if len(stats) == 1:
        return stats[0]
    labels = union_labels([s["labels"] for s in stats])
    dtype = np.result_type(*[s["matrix"].dtype for s in stats])
    matrix = np.zeros((labels.shape[0], labels.shape[0]), dtype=dtype)
    for s in stats:
        idx = np.searchsorted(labels, s["labels"])
        matrix[np.ix_(idx, idx)] += s["matrix"]
    return ConfusionStat(labels=labels, matrix=matrix)


class LogLossStat(TypedDict):
    """``loss[i, j]``: sum over samples with true ``labels[i]`` of ``-w * log(p[:, j])``."""

    labels: np.ndarray
    loss: np.ndarray
    weight: float
    p_min: float
    p_max: float


def _prob_columns(y_prob: Any, xp: Any) -> Any:
    if y_prob.ndim == 1:
        y_prob = xp.reshape(y_prob, (-1, 1))
    if y_prob.shape[1] == 1:
        y_prob = xp.concatenate([1 - y_prob, y_prob], axis=1)
    return y_prob


def logloss_stat(y_true: Any, y_prob: Any, sample_weight: Any = None) -> LogLossStat:
    """Log-loss statistic of one block; probabilities are clipped to [eps, 1 - eps]."""
    xp = get_namespace(y_prob, sample_weight)
    if not _is_str(y_true):
        xp = get_namespace(y_true, y_prob, sample_weight)
    dtype = y_prob.dtype if y_prob.dtype.kind == "f" else np.dtype(np.float64)
    y_prob = cast(y_prob, dtype)
    p_min, p_max = (float(v) for v in to_numpy(xp.stack([xp.min(y_prob), xp.max(y_prob)])))
    eps = np.finfo(dtype).eps
    probs = xp.clip(_prob_columns(y_prob, xp), eps, 1 - eps)
    neg_log = -xp.log(probs)
    if _is_str(y_true):
        labels, idx = np.unique(np.asarray(y_true), return_inverse=True)
        idx = xp.asarray(idx)
    else:
        labels, idx = encode_labels(y_true, xp)
    k = int(labels.shape[0])
    w = None if sample_weight is None else sample_weight.astype(np.float64)
    loss = xp.stack(
        [
            xp.bincount(idx, weights=neg_log[:, j] if w is None else neg_log[:, j] * w, minlength=k)
            for j in range(neg_log.shape[1])
        ],
        axis=1,
    )
    return LogLossStat(
        labels=to_numpy(labels),
        loss=to_numpy(loss),
        weight=float(neg_log.shape[0]) if w is None else float(to_numpy(xp.sum(w))),
        p_min=p_min,
        p_max=p_max,
    )


def combine_logloss(stats: list[LogLossStat]) -> LogLossStat:
    """Merge log-loss statistics over the union of their labels."""
    if len(stats) == 1:
        return stats[0]
    labels = union_labels([s["labels"] for s in stats])
    loss = np.zeros((labels.shape[0], stats[0]["loss"].shape[1]))
    for s in stats:
        loss[np.searchsorted(labels, s["labels"])] += s["loss"]
    return LogLossStat(
        labels=labels,
        loss=loss,
        weight=sum(s["weight"] for s in stats),
        p_min=min(s["p_min"] for s in stats),
        p_max=max(s["p_max"] for s in stats),
    )


class MomentStat(TypedDict):
    """Per output: total weight, weighted mean/centred squares of y_true, error sums."""

    count: int
    weight: float
    mean: np.ndarray
    m2: np.ndarray
    sse: np.ndarray
    sae: np.ndarray


def moment_stat(
    y_true: Any, y_pred: Any, sample_weight: Any = None, *, parts: str = "sse,sae,m2"
) -> MomentStat:
    """Moments and error sums of one block (float64 accumulation).

    ``parts`` names what to compute (``sse``, ``sae``, ``m2``); the others are left zero,
    so MSE does not pay for R²'s moments.
    """
    xp = get_namespace(y_true, y_pred, sample_weight)
    want = set(parts.split(","))
    y = cast(y_true, np.float64)
    yhat = cast(y_pred, np.float64)
    if y.ndim == 1:
        y, yhat = xp.reshape(y, (-1, 1)), xp.reshape(yhat, (-1, 1))
    zero = xp.zeros(y.shape[1])
    w = None if sample_weight is None else xp.reshape(sample_weight.astype(np.float64), (-1, 1))
    weight = float(y.shape[0]) if w is None else float(to_numpy(xp.sum(w)))

    def total(values: Any) -> Any:
        return xp.sum(values if w is None else w * values, axis=0)

    err = y - yhat
    sse = total(err * err) if "sse" in want else zero
    sae = total(xp.abs(err)) if "sae" in want else zero
    mean, m2 = zero, zero
    if "m2" in want and weight != 0:
        mean = total(y) / weight
        centred = y - mean
        m2 = total(centred * centred)
    return MomentStat(
        count=int(y.shape[0]),
        weight=weight,
        mean=to_numpy(mean),
        m2=to_numpy(m2),
        sse=to_numpy(sse),
        sae=to_numpy(sae),
    )


def combine_moments(stats: list[MomentStat]) -> MomentStat:
    """Merge moments pairwise (Chan, Golub & LeVeque), summing the error terms."""
    out = stats[0]
    for s in stats[1:]:
        total = out["weight"] + s["weight"]
        if s["weight"] == 0:
            mean, m2 = out["mean"], out["m2"] + s["m2"]
        elif out["weight"] == 0:
            mean, m2 = s["mean"], out["m2"] + s["m2"]
        else:
            delta = s["mean"] - out["mean"]
            mean = out["mean"] + delta * (s["weight"] / total)
            m2 = out["m2"] + s["m2"] + delta**2 * (out["weight"] * s["weight"] / total)
        out = MomentStat(
            count=out["count"] + s["count"],
            weight=total,
            mean=mean,
            m2=m2,
            sse=out["sse"] + s["sse"],
            sae=out["sae"] + s["sae"],
        )
    return out
