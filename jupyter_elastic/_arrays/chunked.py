"""Chunk-wise map/reduce of sufficient statistics over NumPy, CuPy and Dask inputs.

Metrics and exact quantiles on Dask input never gather the data into one process: each
block is reduced on its worker to a small *sufficient statistic* (a confusion matrix, score
groups with per-class weights, running moments), statistics are merged in a tree of fan-in
:data:`SPLIT_EVERY`, and only the merged statistic reaches the caller. The same statistic
functions run directly on in-memory arrays, so the chunked and single-pass results agree.
The graph is computed with :func:`dask.compute`, which uses an active ``distributed.Client``
when there is one and the threaded scheduler otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .namespace import is_dask, register_device_tokens

__all__ = ["SPLIT_EVERY", "align_rows", "map_reduce"]

#: How many statistics one merge task combines.
SPLIT_EVERY = 8


def align_rows(arrays: Sequence[Any], chunk_size: int | None = None) -> list[Any]:
    """Turn ``arrays`` (some may be ``None``) into Dask arrays sharing the same row chunks.

    Rows follow the first Dask array's chunks (or ``chunk_size`` when given); other axes
    become a single chunk, so that every block holds whole samples.
    """
    import dask.array as da  # noqa: PLC0415

    register_device_tokens()  # from_array hashes device arrays on the device, not via pickle
    ref = next((a for a in arrays if a is not None and is_dask(a)), None)
    if chunk_size is not None:
        row_chunks: Any = chunk_size
    elif ref is not None:
        row_chunks = ref.chunks[0]
    else:
        row_chunks = "auto"
    out: list[Any] = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        chunks = (row_chunks,) + (-1,) * (a.ndim - 1)
        if is_dask(a):
            out.append(a.rechunk(chunks))
        else:
            out.append(da.from_array(a, chunks=chunks))
    if chunk_size is None and ref is None:
        first = out[0]
        out = [
            o if o is None else o.rechunk((first.chunks[0],) + (-1,) * (o.ndim - 1)) for o in out
        ]
    return out


def _row_blocks(a: Any) -> list[Any]:
    """The delayed row blocks of a Dask array whose non-row axes are one chunk."""
    blocks = a.to_delayed()
    return list(blocks.reshape(blocks.shape[0], -1)[:, 0])


def map_reduce(
    stat: Callable[..., Any],
    combine: Callable[[list[Any]], Any],
    arrays: Sequence[Any],
    *,
    chunk_size: int | None = None,
    **kwargs: Any,
) -> Any:
    """Apply ``stat`` to aligned row blocks of ``arrays`` and merge with ``combine``.

    Parameters
    ----------
    stat
        ``stat(*blocks, **kwargs)`` returns the (host) statistic of one block.
    combine
        Merges a list of statistics into one; must be associative.
    arrays
        Arrays aligned on their first axis (``None`` entries are passed through as ``None``).
        When none is a Dask array (and ``chunk_size`` is None) ``stat`` runs once, in memory.
    chunk_size
        Rows per block; forces the chunked path even for in-memory input.

    Returns
    -------
    object
        The merged statistic.

    Examples
    --------
    >>> import numpy as np
    >>> map_reduce(lambda x: float(x.sum()), sum, [np.arange(10)], chunk_size=3)
    45.0
    """
    if chunk_size is None and not any(a is not None and is_dask(a) for a in arrays):
        return stat(*arrays, **kwargs)
    import uuid  # noqa: PLC0415

    import dask  # noqa: PLC0415

    aligned = align_rows(arrays, chunk_size)
    per_array = [None if a is None else _row_blocks(a) for a in aligned]
    n_blocks = len(next(p for p in per_array if p is not None))
    # Explicit key names: tokenizing ``stat`` would pickle whatever it closes over (a
    # model's weights on the GPU, in ``evaluate``), copying it to the host just for a name.
    run = uuid.uuid4().hex
    delayed_stat = dask.delayed(stat, pure=True, name=f"stat-{run}")
    delayed_combine = dask.delayed(combine, pure=True, name=f"combine-{run}")
    level = [
        delayed_stat(
            *[None if p is None else p[i] for p in per_array],
            dask_key_name=f"stat-{run}-{i}",
            **kwargs,
        )
        for i in range(n_blocks)
    ]
    depth = 0
    while len(level) > 1 or n_blocks == 1 and depth == 0:
        depth += 1
        level = [
            delayed_combine(level[i : i + SPLIT_EVERY], dask_key_name=f"combine-{run}-{depth}-{i}")
            for i in range(0, len(level), SPLIT_EVERY)
        ]
    (result,) = dask.compute(level[0])
    return result


def union_labels(label_sets: Sequence[np.ndarray]) -> np.ndarray:
    """Sorted union of label arrays, refusing to mix strings with numbers."""
    kinds = {"str" if ls.dtype.kind in "USO" else "num" for ls in label_sets if ls.size}
    if len(kinds) > 1:
        raise ValueError(
            "labels mix strings and numbers; pass class labels of one type "
            "(all strings or all numbers)"
        )
    nonempty = [ls for ls in label_sets if ls.size]
    if not nonempty:
        return label_sets[0]
    return np.unique(np.concatenate(nonempty))
