"""Array-namespace dispatch for the compute library: the one module that knows CuPy exists.

``features.py`` and ``evaluation.py`` are written once against the array API and ask this
module which namespace an input belongs to (:func:`get_namespace`), whether it is a Dask
array (:func:`is_dask`), and how to bring a (small) result back to host memory
(:func:`to_numpy`). CuPy is imported lazily, only when an input already is a CuPy array or
when :func:`gpu_available` is asked, and a GPU counts as available only when
``cupy.is_available()`` says so — a CuPy wheel on a machine without a driver is not a GPU.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "cast",
    "get_namespace",
    "gpu_available",
    "is_cupy",
    "is_dask",
    "meta_namespace",
    "to_device",
    "to_numpy",
]


def _cupy() -> ModuleType | None:
    """Import CuPy on first use; ``None`` when it is not installed or fails to import."""
    if "cupy" in sys.modules:
        return sys.modules["cupy"]
    try:
        import cupy  # noqa: PLC0415  (lazy by design)
    except Exception:  # ImportError, or a CUDA library that fails to load
        return None
    return cupy


def gpu_available() -> bool:
    """Whether CuPy imports *and* reports a usable CUDA device.

    Returns
    -------
    bool
        ``True`` only when ``cupy.is_available()`` is true; import success alone is not enough.

    Examples
    --------
    >>> gpu_available() in (True, False)
    True
    """
    cp = _cupy()
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:
        return False


def is_dask(x: Any) -> bool:
    """Whether ``x`` is a Dask array (checked without importing Dask when it is not loaded).

    Examples
    --------
    >>> import numpy as np
    >>> is_dask(np.zeros(3))
    False
    """
    if "dask.array" not in sys.modules:
        return False
    import dask.array as da  # noqa: PLC0415

    return isinstance(x, da.Array)


def is_cupy(x: Any) -> bool:
    """Whether ``x`` is a CuPy array (never imports CuPy to find out).

    Examples
    --------
    >>> import numpy as np
    >>> is_cupy(np.zeros(3))
    False
    """
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(x, cp.ndarray)


def meta_namespace(x: Any) -> ModuleType:
    """The namespace of a Dask array's chunks (from its ``_meta``), or of ``x`` itself.

    Examples
    --------
    >>> import numpy as np
    >>> meta_namespace(np.zeros(2)).__name__
    'numpy'
    """
    if is_dask(x):
        return get_namespace(x._meta)
    return get_namespace(x)


def get_namespace(*arrays: Any) -> ModuleType:
    """Return the array module shared by ``arrays``: ``numpy`` or ``cupy``.

    Python scalars, lists and ``None`` are ignored; a Dask array counts as the namespace
    of its chunks. Mixing NumPy and CuPy inputs is an error rather than a silent copy.

    Parameters
    ----------
    *arrays
        Arrays (or ``None``) whose namespace is wanted.

    Returns
    -------
    module
        ``numpy`` when no CuPy array is among the inputs, else ``cupy``.

    Raises
    ------
    ValueError
        When the inputs come from different array libraries, or from one this library does
        not support.

    Examples
    --------
    >>> import numpy as np
    >>> get_namespace(np.ones(3), None, [1, 2]).__name__
    'numpy'
    """
    found: dict[str, ModuleType] = {}
    for x in arrays:
        if x is None or isinstance(x, (int, float, bool, complex, list, tuple, str)):
            continue
        if is_dask(x):
            x = x._meta
        if isinstance(x, (np.ndarray, np.generic)):
            found["numpy"] = np
        elif is_cupy(x):
            found["cupy"] = sys.modules["cupy"]
        else:
            try:
                from array_api_compat import array_namespace  # noqa: PLC0415

                name = array_namespace(x).__name__
            except Exception:
                name = type(x).__module__
            raise ValueError(
                f"unsupported array type {type(x).__module__}.{type(x).__name__} "
                f"(namespace {name}); pass a NumPy, CuPy or Dask array"
            )
    if len(found) > 1:
        raise ValueError(
            "inputs mix NumPy and CuPy arrays; move them to one device first "
            "(jupyter_elastic._array.to_numpy or to_device)"
        )
    return next(iter(found.values()), np)


def to_numpy(x: Any) -> Any:
    """Bring ``x`` to host memory as NumPy: CuPy via ``.get()``, Dask chunks likewise (lazily).

    Parameters
    ----------
    x
        A NumPy, CuPy or Dask array, or a scalar.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        A NumPy array (a Dask array with NumPy chunks when ``x`` is a Dask array).

    Examples
    --------
    >>> to_numpy([1, 2]).tolist()
    [1, 2]
    """
    if is_dask(x):
        if get_namespace(x._meta) is np:
            return x
        return x.map_blocks(to_numpy, meta=np.empty((0,) * x.ndim, dtype=x.dtype))
    if is_cupy(x):
        return x.get()
    return np.asarray(x)


def to_device(x: Any, xp: ModuleType) -> Any:
    """Put ``x`` into namespace ``xp`` (``numpy`` or ``cupy``); a no-op when it is there.

    Examples
    --------
    >>> import numpy as np
    >>> to_device([1.0], np).dtype.name
    'float64'
    """
    if xp is np:
        return to_numpy(x)
    if is_dask(x):
        return x.map_blocks(xp.asarray, meta=xp.empty((0,) * x.ndim, dtype=x.dtype))
    return xp.asarray(x)


def cast(x: Any, dtype: Any) -> Any:
    """``x`` as ``dtype``, without a copy when it already has that dtype (any namespace).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros(2)
    >>> cast(a, np.float64) is a
    True
    """
    return x if x.dtype == np.dtype(dtype) else x.astype(dtype)
