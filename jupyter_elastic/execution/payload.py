"""What travels between the kernel and a worker for one cell, and what both sides check.

A cell's payload carries its source, its inputs (large ones by content token: the worker
keeps them in a cache and the next cell sends only the token), the names to bring back,
and the kernel's package versions; :func:`parity_problems` is the check a worker makes
before it runs anything. Imported by the kernel and by workers alike.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

#: Inputs at least this large (bytes, by ``dask.sizeof``) are cached on workers.
CACHE_MIN_BYTES = 1 << 20
#: Results up to this size (pickled) come back with the cell's last event.
INLINE_MAX_BYTES = 64 * 1024
#: Packages whose versions must agree between kernel and worker (and how strictly).
PARITY = {"python": 2, "dask": 3, "distributed": 3, "cloudpickle": 1, "numpy": 1, "cupy": 1}


class Cached:
    """Stands in for an input the worker already holds under ``token``."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __reduce__(self) -> tuple[Any, ...]:
        return (Cached, (self.token,))


class CacheIt:
    """Wraps an input the worker should keep under ``token`` for later cells."""

    __slots__ = ("token", "value")

    def __init__(self, token: str, value: Any) -> None:
        self.token, self.value = token, value

    def __reduce__(self) -> tuple[Any, ...]:
        return (CacheIt, (self.token, self.value))


def on_device(value: Any) -> bool:
    """Whether ``value`` lives on a GPU (pickling it to check it would copy it to the host)."""
    from .._arrays.namespace import is_device

    return bool(is_device(value))


def input_token(value: Any) -> str:
    """The content token under which a large input is cached (device arrays are hashed on
    their device, never copied to the host for it)."""
    from dask.base import tokenize

    from .._arrays.namespace import register_device_tokens

    register_device_tokens()
    return str(tokenize(value))


def changed(value: Any, token: str) -> bool:
    try:
        return input_token(value) != token
    except Exception:
        return True


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str | None], ...]:
    return tuple(_read_versions().items())


def versions() -> dict[str, str | None]:
    """Versions of the packages whose mismatch breaks cells (None when absent); cached."""
    return dict(_versions())


def _read_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in PARITY:
        if package == "python":
            continue
        names = [package] if package != "cupy" else ["cupy", "cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x"]
        found[package] = None
        for name in names:
            try:
                found[package] = version(name)
                break
            except PackageNotFoundError:
                continue
    return found


def parity_problems(kernel: dict[str, str | None], worker: dict[str, str | None]) -> list[str]:
    """The critical differences between two ``versions()`` dicts, as readable lines."""
    problems = []
    for package, depth in PARITY.items():
        a, b = kernel.get(package), worker.get(package)
        if a is None or b is None:
            continue  # cupy on one side only is fine: the worker picks its own array library
        if a.split(".")[:depth] != b.split(".")[:depth]:
            problems.append(f"{package} {a} in the kernel but {b} on the worker")
    return problems


# --------------------------------------------------------------------------- imports
#: Most top-level imports of one cell that are looked into (a cell rarely has ten).
MAX_CELL_IMPORTS = 64


@functools.lru_cache(maxsize=256)
def _top_level_imports(source: str) -> tuple[str, ...]:
    """Top-level module names a cell imports in its own body (not inside ``try``, a
    function or a class: a guarded import is the cell's own fallback), absolute only.
    Cached by source: a cell run again is not parsed again."""
    import ast

    if "import" not in source:
        return ()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()
    names: list[str] = []
    for node in tree.body:
        found: list[str] = []
        if isinstance(node, ast.Import):
            found = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found = [node.module.split(".")[0]]
        for name in found:
            if name not in names:
                names.append(name)
    return tuple(names[:MAX_CELL_IMPORTS])


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return dict(packages_distributions())


_REREAD: set[str] = set()


def distribution_of(name: str) -> tuple[str, str] | None:
    """``(distribution, version)`` that provides top-level module ``name`` here, if any.
    The first call reads every installed distribution's file list (a few tenths of a
    second), so the kernel asks only about modules a worker said it lacks."""
    from importlib.metadata import PackageNotFoundError, version

    dists = _distributions().get(name)
    if dists is None and name not in _REREAD:  # installed after the map was read (%pip install)
        _REREAD.add(name)
        _distributions.cache_clear()
        dists = _distributions().get(name)
    for dist in dists or []:
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            continue
    return None


def cell_imports(source: str, folder: str) -> dict[str, dict[str, Any]]:
    """What a cell imports that a worker must also have, as the kernel sees it.

    ``{module: {"path": p}}`` for a local module (a ``.py`` file or package folder) inside
    ``folder`` (the notebook's folder), ``{module: {}}`` for anything else
    (:func:`describe_imports` adds the distributions of the ones a worker lacks).
    The standard library, the packages :data:`PARITY` checks (CuPy may be on one side
    only) and modules this kernel cannot find (a worker-only package) are left out.
    """
    import importlib.util
    import os

    found: dict[str, dict[str, Any]] = {}
    root = ""  # the notebook's folder, resolved at the first import that needs it
    for name in _top_level_imports(source):
        if name in sys.stdlib_module_names or name in sys.builtin_module_names or name in PARITY:
            continue
        module = sys.modules.get(name)
        try:
            spec = module.__spec__ if module is not None else importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        origin = spec.origin if spec.origin not in (None, "built-in", "frozen") else None
        locations = list(spec.submodule_search_locations or [])
        where = locations[0] if locations else origin
        root = root or os.path.realpath(folder) + os.sep
        if where and os.path.realpath(where).startswith(root):
            found[name] = {"path": os.path.realpath(where)}
            continue
        found[name] = {}
    return found


def describe_imports(imports: dict[str, dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """``imports`` with ``{"dist": name, "version": v}`` added for those of ``names`` that
    an installed distribution provides."""
    described = dict(imports)
    for name in names:
        if name in described and "path" not in described[name]:
            dist = distribution_of(name)
            described[name] = {"dist": dist[0], "version": dist[1]} if dist else {}
    return described


def missing_modules(names: list[str]) -> list[str]:
    """The modules in ``names`` that cannot be imported here (run on a worker)."""
    import importlib
    import importlib.util

    def lacks(name: str) -> bool:
        try:
            return name not in sys.modules and importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    missing = [name for name in names if lacks(name)]
    if missing:  # a plugin may have installed or uploaded one since the finders' caches were read
        importlib.invalidate_caches()
        missing = [name for name in missing if lacks(name)]
    return missing
