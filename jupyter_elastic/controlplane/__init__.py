"""The control plane: leases, clusters, the idle/lease/shutdown passes, metering.

It runs in the Jupyter server (``server/``) when the extension is loaded, or embedded in the
kernel otherwise; kernels reach either through one interface (``base.ControlPlane``:
``embedded`` in-process, ``remote`` over the REST API — the same HTTP client the CLI uses).
It may import ``backends`` and the leaf modules, never tornado, IPython, ``kernel`` or
``server``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..protocol import SERVER_TOKEN_ENV, SERVER_URL_ENV
from .base import ControlPlane

if TYPE_CHECKING:
    from ..config import Settings


def connect_control_plane(settings: Settings | None = None) -> ControlPlane:
    """The server's control plane when this kernel was started by one, else an embedded one."""
    url = os.environ.get(SERVER_URL_ENV)
    if url:
        from .remote import RemoteControlPlane

        return RemoteControlPlane(url, os.environ.get(SERVER_TOKEN_ENV, ""))
    from .embedded import EmbeddedControlPlane

    return EmbeddedControlPlane(settings)

__all__ = ["ControlPlane", "connect_control_plane"]
