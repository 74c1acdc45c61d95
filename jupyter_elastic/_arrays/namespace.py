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
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "cast",
    "device_token",
    "get_namespace",
    "gpu_available",
    "is_cupy",
    "is_dask",
    "is_device",
    "meta_namespace",
    "nanquantile",
    "register_device_tokens",
    "register_namespace",
    "to_device",
    "to_numpy",
]

#: Extra device array types: type -> (namespace, sanctioned copy to host). CuPy is built in;
#: tests register a strict CuPy stand-in here (``tests/strict_xp.py``).
_NAMESPACES: dict[type, tuple[ModuleType, Callable[[Any], Any]]] = {}


def register_namespace(
    array_type: type, namespace: ModuleType, to_host: Callable[[Any], Any]
) -> None:
    """Let arrays of ``array_type`` belong to ``namespace``, a device namespace like CuPy.

    ``to_host`` is the one sanctioned copy back to NumPy (CuPy's is ``.get()``); it is what
    :func:`to_numpy` calls. Used by the test-suite's strict CuPy stand-in.
    """
    _NAMESPACES[array_type] = (namespace, to_host)


def _registered(x: Any) -> tuple[ModuleType, Callable[[Any], Any]] | None:
    for array_type, entry in _NAMESPACES.items():
        if isinstance(x, array_type):
            return entry
    return None


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


def is_device(x: Any) -> bool:
    """Whether ``x`` is a device array: CuPy, or a type given to :func:`register_namespace`.

    Examples
    --------
    >>> import numpy as np
    >>> is_device(np.zeros(3))
    False
    """
    return is_cupy(x) or _registered(x) is not None


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
        entry = _registered(x)
        if entry is not None:
            found[entry[0].__name__] = entry[0]
        elif isinstance(x, (np.ndarray, np.generic)):
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
            f"inputs mix {' and '.join(sorted(found))} arrays; move them to one device first "
            "(jupyter_elastic._arrays.namespace.to_numpy or to_device)"
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
    entry = _registered(x)
    if entry is not None:
        return entry[1](x)
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


# ------------------------------------------------------------ device-side hashing ---

#: Words hashed per step by :func:`device_token` (bounds its temporary memory).
_HASH_STEP = 1 << 24
_K = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93)


def device_token(x: Any) -> tuple[str, tuple[int, ...], int, int]:
    """A content hash of a device array computed on the device; only 16 bytes come back.

    The bytes of ``x`` (C order) are read as 64-bit words; each word is mixed with its
    position (splitmix64-style multiply/xor-shift, wrapping in ``uint64``) and two
    differently mixed sums are reduced on the device, in steps of :data:`_HASH_STEP` words.
    Equal contents give equal tokens; a change to any byte changes the token except with
    probability about 2**-128 for non-adversarial data. It is a cache key, not a
    cryptographic digest.

    Examples
    --------
    >>> import numpy as np
    >>> device_token(np.arange(3.0)) == device_token(np.arange(3.0))
    True
    >>> device_token(np.arange(3.0)) == device_token(np.arange(1.0, 4.0))
    False
    """
    xp = get_namespace(x)
    u64 = xp.uint64
    flat = xp.ascontiguousarray(x).reshape(-1)
    data = flat.view(xp.uint8)
    pad = (-int(data.shape[0])) % 8
    if pad:
        data = xp.concatenate([data, xp.zeros(pad, dtype=xp.uint8)])
    words = data.view(u64)
    k0, k1, k2, k3 = (u64(k) for k in _K)
    acc = xp.zeros(2, dtype=u64)
    with np.errstate(over="ignore"):
        for start in range(0, int(words.shape[0]), _HASH_STEP):
            w = words[start : start + _HASH_STEP]
            i = xp.arange(start, start + int(w.shape[0]), dtype=u64)
            h = (w ^ (i * k0 + k1)) * k2
            h = h ^ (h >> u64(31))
            g = (h ^ (h >> u64(29))) * k3
            acc = acc + xp.stack([xp.sum(h, dtype=u64), xp.sum(g ^ (g >> u64(32)), dtype=u64)])
    lo, hi = (int(v) for v in to_numpy(acc))
    return (np.dtype(x.dtype).str, tuple(int(s) for s in x.shape), lo, hi)


def _normalize_device_array(x: Any) -> tuple[Any, ...]:
    return ("device-array", type(x).__module__, *device_token(x))


_TOKENIZED: set[type] = set()


def register_device_tokens() -> None:
    """Make ``dask.base.tokenize`` hash device arrays on the device (:func:`device_token`).

    Dask's default tokenizes a CuPy array by pickling it, which copies the whole array to
    the host. Call this before anything tokenizes device data (the chunked engine, the
    worker's input cache, the kernel's input tokens); it registers CuPy (when imported) and
    every type given to :func:`register_namespace`. Idempotent and cheap.
    """
    types_ = list(_NAMESPACES)
    cp = sys.modules.get("cupy")
    if cp is not None and hasattr(cp, "ndarray"):
        types_.append(cp.ndarray)
    new = [t for t in types_ if t not in _TOKENIZED]
    if not new:
        return
    from dask.base import normalize_token  # noqa: PLC0415

    for t in new:
        normalize_token.register(t)(_normalize_device_array)
        _TOKENIZED.add(t)


# ---------------------------------------------------------------- NaN-aware quantiles ---


def _lerp(a: Any, b: Any, t: Any, xp: ModuleType) -> Any:
    """NumPy's quantile interpolation: ``a + (b - a) t``, from ``b`` when ``t >= 0.5``."""
    diff = b - a
    return xp.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def nanquantile(x: Any, q: Any, axis: int = 0) -> Any:
    """``numpy.nanquantile(x, q, axis=axis)`` (method 'linear') in the namespace of ``x``.

    NumPy arrays use NumPy's own function. Device namespaces without ``nanquantile`` (CuPy
    13/14 have ``quantile`` but no NaN-aware variant) sort along ``axis`` (NaN sorts last),
    count the non-NaN values of each slice, and interpolate between the two order
    statistics around ``(count - 1) * q`` exactly as NumPy does; all on the device, with no
    host round trip. ``q`` is a 1-D sequence; the result has shape ``(len(q), ...)`` with
    ``axis`` removed, float64 (as NumPy's with an array of quantiles); an all-NaN slice
    gives NaN.

    Examples
    --------
    >>> import numpy as np
    >>> nanquantile(np.array([1.0, np.nan, 3.0]), [0.5]).tolist()
    [2.0]
    """
    xp = get_namespace(x)
    q_host = np.asarray(q, dtype=np.float64).reshape(-1)
    native = getattr(xp, "nanquantile", None)
    if native is not None:
        return native(x, xp.asarray(q_host), axis=axis)
    moved = xp.moveaxis(x, axis, -1)
    ordered = xp.sort(moved, axis=-1)
    count = xp.sum(~xp.isnan(moved), axis=-1)
    top = xp.maximum(count - 1, 0)
    qs = xp.asarray(q_host).reshape((-1,) + (1,) * count.ndim)
    virtual = qs * top.astype(np.float64)
    prev = xp.floor(virtual)
    gamma = virtual - prev
    prev = xp.minimum(prev.astype(np.int64), top)
    nxt = xp.minimum(prev + 1, top)
    shape = (q_host.size,) + ordered.shape
    full = xp.broadcast_to(ordered[None], shape)
    a = xp.take_along_axis(full, prev[..., None], axis=-1)[..., 0].astype(np.float64)
    b = xp.take_along_axis(full, nxt[..., None], axis=-1)[..., 0].astype(np.float64)
    out = _lerp(a, b, gamma, xp)
    return xp.where(count == 0, xp.nan, out)
