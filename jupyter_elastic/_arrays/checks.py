"""Input checks shared by ``features.py`` and ``evaluation.py``, each failing with one clear line.

Every public compute function validates its inputs here before any work is scheduled, so a
bad call fails at the call site with a ``ValueError`` that names the argument, what was
wrong (lengths, dimensions, dtype, NaN/infinity, emptiness) and what is accepted — rather
than deep inside a Dask task or, worse, as a silent NaN. Checks that need the data itself
(NaN, infinity) run per chunk on Dask input and surface when the result is computed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .namespace import get_namespace, is_dask, is_device, to_numpy

__all__ = [
    "as_array",
    "check_finite",
    "check_float_array",
    "check_labels",
    "check_lengths",
    "check_ndim",
    "check_weights",
    "float_dtype",
]


def as_array(x: Any, name: str) -> Any:
    """Return ``x`` as a NumPy, CuPy or Dask array (lists and tuples become NumPy)."""
    if x is None:
        raise ValueError(f"{name} is None; pass an array")
    if (
        is_dask(x)
        or is_device(x)
        or hasattr(x, "__array_namespace__")
        or hasattr(x, "__cuda_array_interface__")
    ):
        get_namespace(x)  # rejects unsupported array libraries with a clear message
        return x
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} could not be read as an array: {err}") from None
    if arr.dtype == object and arr.size and not all(isinstance(v, str) for v in arr.ravel()[:100]):
        raise ValueError(
            f"{name} has unsupported dtype object (ragged rows or mixed types); "
            "pass a rectangular numeric, boolean or string array"
        )
    return arr


def check_ndim(x: Any, name: str, ndims: tuple[int, ...]) -> None:
    """Raise unless ``x.ndim`` is one of ``ndims``; also reject empty inputs."""
    if x.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got a {x.ndim}-D array of shape {tuple(x.shape)}")
    if any(isinstance(s, (int, np.integer)) and s == 0 for s in x.shape):
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one sample")


def check_lengths(**arrays: Any) -> int:
    """Raise when the named arrays differ in their first dimension; return that length."""
    lengths = {}
    for name, x in arrays.items():
        if x is None:
            continue
        n = x.shape[0]
        if isinstance(n, float) and math.isnan(n):  # Dask array with unknown chunk sizes
            x.compute_chunk_sizes()
            n = x.shape[0]
        lengths[name] = int(n)
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise ValueError(f"inconsistent numbers of samples: {described}")
    return next(iter(lengths.values()))


def _kind(dtype: Any) -> str:
    return np.dtype(dtype).kind


def check_float_array(x: Any, name: str) -> None:
    """Raise unless ``x`` holds real numbers (bool, integer or floating point)."""
    kind = _kind(x.dtype)
    if kind not in "biuf":
        raise ValueError(
            f"{name} has unsupported dtype {x.dtype}; expected real numbers "
            "(bool, integer or floating point)"
        )


def float_dtype(x: Any) -> Any:
    """The floating dtype results on ``x`` have: float32 stays float32, all else float64."""
    return x.dtype if _kind(x.dtype) == "f" and x.dtype.itemsize >= 4 else np.dtype("float64")


def check_finite(x: Any, name: str) -> Any:
    """Raise on NaN or infinity in ``x`` (eagerly for NumPy/CuPy, per chunk for Dask).

    Returns ``x`` (for Dask, a lazily checked view of it).
    """
    if _kind(x.dtype) != "f":
        return x
    if is_dask(x):
        return x.map_blocks(_finite_block, what=name, dtype=x.dtype, meta=x._meta)
    return _finite_block(x, what=name)


def _finite_block(x: Any, what: str) -> Any:
    xp = get_namespace(x)
    if not bool(to_numpy(xp.all(xp.isfinite(x)))):  # one device sync, a 1-byte copy
        bad = "NaN" if bool(to_numpy(xp.any(xp.isnan(x)))) else "infinity"
        raise ValueError(f"{what} contains {bad}; remove or impute non-finite values first")
    return x


def check_weights(sample_weight: Any, n: int) -> Any:
    """Validate ``sample_weight``: 1-D, ``n`` long, real and finite. Returns the array or None."""
    if sample_weight is None:
        return None
    w = as_array(sample_weight, "sample_weight")
    check_ndim(w, "sample_weight", (1,))
    check_float_array(w, "sample_weight")
    check_lengths(y_true=_Len(n), sample_weight=w)
    return check_finite(w, "sample_weight")


class _Len:
    """A stand-in with only a ``shape``, for comparing a known length in check_lengths."""

    def __init__(self, n: int) -> None:
        self.shape = (n,)


def check_labels(y: Any, name: str) -> Any:
    """Raise unless ``y`` is a 1-D array of discrete class labels; return it.

    Accepted: integers, booleans, strings, and floats that hold whole numbers. Float labels
    with fractions are continuous targets, not classes, as in scikit-learn.
    """
    y = as_array(y, name)
    check_ndim(y, name, (1,))
    kind = _kind(y.dtype)
    if kind in "biuUSO":
        return y
    if kind != "f":
        raise ValueError(
            f"{name} has unsupported dtype {y.dtype}; class labels must be integers, "
            "booleans, strings or whole-number floats"
        )
    if is_dask(y):
        return y.map_blocks(_discrete_block, what=name, dtype=y.dtype, meta=y._meta)
    return _discrete_block(y, what=name)


def _discrete_block(y: Any, what: str) -> Any:
    _finite_block(y, what)
    xp = get_namespace(y)
    if not bool(to_numpy(xp.all(y == xp.round(y)))):
        raise ValueError(
            f"{what} contains continuous values (floats with a fractional part); "
            "classification metrics need discrete class labels"
        )
    return y


def host_scalar(x: Any) -> float:
    """A Python float from a 0-d NumPy/CuPy value."""
    return float(to_numpy(x))
