"""Exact ranking statistics behind ROC AUC and average precision, mergeable across chunks.

The sufficient statistic of a block is its *score groups*: the sorted distinct scores, and
for each distinct score the (weighted) count of samples of every class label seen. Merging
two statistics is a union of labels and a merge of sorted score lists with counts added, so
any chunking yields exactly the statistic of the concatenated data — integer counts stay
integers, so unweighted results do not depend on the chunking at all. Tied scores form one
group, i.e. one threshold, which is how scikit-learn's ``roc_curve`` and
``precision_recall_curve`` treat ties (a diagonal step on the ROC curve). Memory is bounded
by the number of distinct scores, never by the number of features.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from .._arrays.chunked import union_labels
from .._arrays.namespace import get_namespace, to_numpy
from ._stats import encode_labels

__all__ = [
    "RankStat",
    "average_precision_from_stat",
    "combine_rank",
    "rank_stat",
    "roc_auc_from_stat",
    "split_binary",
]


class RankStat(TypedDict):
    """Score groups: ``scores`` (G,) ascending, ``counts`` (G, K) per label in ``labels`` (K,)."""

    labels: np.ndarray
    scores: np.ndarray
    counts: np.ndarray


def rank_stat(y_true: Any, y_score: Any, sample_weight: Any = None) -> RankStat:
    """Score groups of one block (computed in the block's namespace, returned on the host)."""
    xp = get_namespace(y_true, y_score, sample_weight)
    if y_true.dtype.kind in "USO":
        xp = np
        y_true, y_score = np.asarray(y_true), to_numpy(y_score)
        sample_weight = None if sample_weight is None else to_numpy(sample_weight)
    labels, label_idx = encode_labels(y_true, xp)
    k = int(labels.shape[0])
    s = y_score.astype(np.float64)
    order = xp.argsort(s)
    s_sorted = s[order]
    first = xp.ones(s_sorted.shape, dtype=bool)
    first[1:] = s_sorted[1:] != s_sorted[:-1]
    group = xp.cumsum(first) - 1
    scores = s_sorted[first]
    n_groups = int(scores.shape[0])
    key = group * k + xp.reshape(label_idx, (-1,))[order]
    if sample_weight is None:
        counts = xp.bincount(key, minlength=n_groups * k)
    else:
        w = sample_weight[order].astype(np.float64)
        counts = xp.bincount(key, weights=w, minlength=n_groups * k)
    counts = xp.reshape(counts, (n_groups, k))
    return RankStat(labels=to_numpy(labels), scores=to_numpy(scores), counts=to_numpy(counts))


def combine_rank(stats: list[RankStat]) -> RankStat:
    """Merge score-group statistics (associative; exact for integer counts)."""
    if len(stats) == 1:
        return stats[0]
    labels = union_labels([s["labels"] for s in stats])
    dtype = np.result_type(*[s["counts"].dtype for s in stats])
    blocks = []
    for s in stats:
        cols = np.searchsorted(labels, s["labels"])
        full = np.zeros((s["counts"].shape[0], labels.shape[0]), dtype=dtype)
        full[:, cols] = s["counts"]
        blocks.append(full)
    scores = np.concatenate([s["scores"] for s in stats])
    counts = np.concatenate(blocks)
    order = np.argsort(scores, kind="stable")  # runs are sorted already: a cheap merge
    scores = scores[order]
    first = np.ones(scores.shape, dtype=bool)
    first[1:] = scores[1:] != scores[:-1]
    starts = np.flatnonzero(first)
    return RankStat(
        labels=labels,
        scores=scores[starts],
        counts=np.add.reduceat(counts[order], starts, axis=0),
    )


def split_binary(stat: RankStat, pos_label: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-group positive and negative weights, in *descending* score order."""
    is_pos = stat["labels"] == pos_label
    counts = stat["counts"]
    pos = counts[:, is_pos].sum(axis=1)
    neg = counts.sum(axis=1) - pos
    return pos[::-1], neg[::-1]


def _cumulative(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tps = np.cumsum(pos, dtype=np.float64 if pos.dtype.kind == "f" else np.int64)
    fps = np.cumsum(neg, dtype=tps.dtype)
    return tps, fps


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """``np.trapezoid`` (NumPy >= 2) or ``np.trapz`` (NumPy 1.26, which pyproject allows)."""
    integrate = getattr(np, "trapezoid", None) or getattr(np, "trapz")  # noqa: B009
    return float(integrate(y, x))


def roc_auc_from_stat(stat: RankStat, pos_label: Any, max_fpr: float | None = None) -> float:
    """Exact (optionally McClish-standardised partial) area under the ROC curve."""
    tps, fps = _cumulative(*split_binary(stat, pos_label))
    if tps[-1] <= 0 or fps[-1] <= 0:
        which = "positive" if tps[-1] <= 0 else "negative"
        raise ValueError(
            f"y_true has no {which} samples (with non-zero weight); ROC AUC needs both classes"
        )
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    if max_fpr is None or max_fpr == 1:
        return _trapezoid(tpr, fpr)
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    y_at = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
    partial = _trapezoid(np.append(tpr[:stop], y_at), np.append(fpr[:stop], max_fpr))
    min_area = 0.5 * max_fpr**2
    return 0.5 * (1 + (partial - min_area) / (max_fpr - min_area))


def average_precision_from_stat(stat: RankStat, pos_label: Any) -> float:
    """Exact step-wise average precision: sum of (R_k - R_k-1) * P_k over distinct scores."""
    tps, fps = _cumulative(*split_binary(stat, pos_label))
    if tps[-1] <= 0:
        raise ValueError(
            f"y_true has no positive samples (pos_label={pos_label!r}); "
            "average precision is undefined without positives"
        )
    predicted = tps + fps
    precision = np.divide(
        tps, predicted, out=np.zeros(tps.shape, dtype=np.float64), where=predicted != 0
    )
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))
