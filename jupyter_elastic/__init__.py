"""jupyter-elastic: run notebook cells on elastic Dask GPU workers that scale to zero.

``%load_ext jupyter_elastic`` (or the "Python 3 (elastic)" kernel) adds the ``%%gpu`` and
``%gpu`` magics; the Jupyter server extension hosts the control plane and the sidebar's
REST API. Importing this package imports nothing heavy. The layout follows where code runs
(``docs/architecture.md``): ``kernel/``, ``server/``, ``controlplane/``, ``execution/``
(kernel and workers), ``backends/``, the compute library (``features/``, ``evaluation/``,
``_arrays/``) and the leaf modules ``errors``, ``protocol``, ``config``, ``models``.
"""

from __future__ import annotations

from typing import Any

try:  # written by the build from package.json, the one place the version is kept
    from ._version import __version__
except ImportError:  # a source tree that was never built
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("jupyter-elastic")
    except PackageNotFoundError:
        __version__ = "0+unknown"


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%gpu`` / ``%gpu`` in an IPython shell (``%load_ext jupyter_elastic``)."""
    from .kernel.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Stop this kernel's clusters and session (``%unload_ext jupyter_elastic``)."""
    from .kernel.magics import unload_ipython_extension as _unload

    _unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import ElasticExtension

    return [{"module": "jupyter_elastic", "app": ElasticExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-elastic"}]


__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]
