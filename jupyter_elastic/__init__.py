"""jupyter-elastic: run notebook cells on elastic Dask GPU workers that scale to zero.

``%load_ext jupyter_elastic`` (or the "Python 3 (elastic)" kernel) adds the ``%%gpu`` and
``%gpu`` magics; the Jupyter server extension hosts the control plane and the sidebar's
REST API. Importing this package imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%gpu`` / ``%gpu`` in an IPython shell (``%load_ext jupyter_elastic``)."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Stop this kernel's clusters and session (``%unload_ext jupyter_elastic``)."""
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import ElasticExtension

    return [{"module": "jupyter_elastic", "app": ElasticExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-elastic"}]


__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]
