"""The chunked engine behind ``evaluation.evaluate``: predict and reduce where the rows live.

Rows of ``X``, ``y`` and ``sample_weight`` are aligned into the same chunks; one task per
chunk calls the user's ``predict`` and immediately reduces the predictions to every
sufficient statistic the requested metrics need (one statistic per kind and prediction
output, shared by the metrics that use it), so predictions never leave the worker. The
statistics are merged in a tree and the metrics are finished on the caller's side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

__all__ = ["DEFAULT_CHUNK_ROWS", "run_evaluate"]

#: Rows per task when ``X`` is an in-memory array and no ``chunk_size`` is given.
DEFAULT_CHUNK_ROWS = 100_000

Need = tuple[str, Any]  # (statistic kind, prediction output key or None)


def _pick(pred: Any, on: Any) -> Any:
    if isinstance(pred, Mapping):
        if on is None:
            if len(pred) != 1:
                raise ValueError(
                    f"predict returned a dict with keys {sorted(pred)}; give each metric on=KEY"
                )
            return next(iter(pred.values()))
        if on not in pred:
            raise ValueError(f"predict returned no output {on!r}; it has {sorted(pred)}")
        return pred[on]
    if on is not None:
        raise ValueError(f"a metric asks for output {on!r} but predict returned a single array")
    return pred


def _follow(y: Any, w: Any, p: Any) -> tuple[Any, Any, Any]:
    """Put the targets where the predictions are (the documented rule of ``evaluate``).

    A model that predicts on the GPU while ``y`` is in host memory gets ``y`` (and the
    weights) copied to the device per chunk, the small side of the pair; predictions on the
    host with ``y`` on the device bring ``y`` to the host. String labels cannot live on a
    device, so with them the predictions come to the host instead.
    """
    from .._arrays.namespace import get_namespace, to_device, to_numpy  # noqa: PLC0415

    xp = get_namespace(p)
    if y.dtype.kind in "USO":
        return y, w, (p if xp is np else to_numpy(p))
    if get_namespace(y) is not xp:
        y = to_device(y, xp)
    if w is not None and get_namespace(w) is not xp:
        w = to_device(w, xp)
    return y, w, p


def _block(
    X: Any,
    y: Any,
    w: Any,
    *,
    predict: Callable[[Any], Any],
    needs: list[Need],
    kinds: dict[str, tuple[Callable, Callable]],
) -> dict[Need, Any]:
    pred = predict(X)
    out: dict[Need, Any] = {}
    y0, w0 = y, w
    for kind, on in needs:
        p = as_array(_pick(pred, on), "predict output")
        y, w, p = _follow(y0, w0, p)
        if p.shape[0] != y.shape[0]:
            raise ValueError(
                f"predict returned {p.shape[0]} rows for a chunk of {y.shape[0]} rows; "
                "it must return one prediction per row"
            )
        if kind == "confusion":
            args = (check_labels(y, "y"), check_labels(p, "predict output"))
        elif kind in ("rank", "logloss"):
            check_ndim(p, "predict output", (1,) if kind == "rank" else (1, 2))
            check_float_array(p, "predict output")
            args = (check_labels(y, "y"), check_finite(p, "predict output"))
        else:
            check_float_array(p, "predict output")
            outs = (1 if y.ndim == 1 else y.shape[1], 1 if p.ndim == 1 else p.shape[1])
            if outs[0] != outs[1]:
                raise ValueError(f"y and the predictions have different numbers of outputs: {outs}")
            args = (check_finite(y, "y"), check_finite(p, "predict output"))
        out[(kind, on)] = kinds[kind][0](*args, w)
    return out


def _combine(stats: list[dict[Need, Any]], kinds: dict[str, tuple[Callable, Callable]]) -> dict:
    return {need: kinds[need[0]][1]([s[need] for s in stats]) for need in stats[0]}


def run_evaluate(
    predict: Callable[[Any], Any],
    X: Any,
    y: Any,
    specs: dict[str, tuple[str, dict]],
    chunk_size: int | None,
    sample_weight: Any,
    metrics: dict[str, tuple[str, Callable[..., Any]]],
    kinds: dict[str, tuple[Callable, Callable]],
) -> dict[str, Any]:
    """Evaluate ``specs`` (key -> (metric name, kwargs)) of ``predict`` on ``X``, ``y``."""
    if not callable(predict):
        raise ValueError(f"predict must be callable, got {type(predict).__name__}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size!r}")
    X, y = as_array(X, "X"), as_array(y, "y")
    if X.ndim == 0:
        raise ValueError("X must have at least one dimension (rows), got a 0-D array")
    check_ndim(y, "y", (1, 2))
    n = check_lengths(X=X, y=y)
    w = check_weights(sample_weight, n)
    from .._arrays.namespace import is_dask  # noqa: PLC0415

    if chunk_size is None and not is_dask(X):
        chunk_size = DEFAULT_CHUNK_ROWS
    plan = []
    for key, (name, kwargs) in specs.items():
        kwargs = dict(kwargs)
        on = kwargs.pop("on", None)
        plan.append((key, name, (metrics[name][0], on), kwargs))
    needs = list(dict.fromkeys(need for _, _, need, _ in plan))
    stats = map_reduce(
        partial(_block, predict=predict, needs=needs, kinds=kinds),
        partial(_combine, kinds=kinds),
        [X, y, w],
        chunk_size=chunk_size,
    )
    weight_dtype = None if w is None else w.dtype
    return {key: metrics[name][1](stats[need], weight_dtype, **kw) for key, name, need, kw in plan}
