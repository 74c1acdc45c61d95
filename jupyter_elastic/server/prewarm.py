"""Pre-warm: start a notebook's scheduler before its first ``%%gpu`` cell asks for it.

Two triggers, both in the server extension: a kernel starts for a notebook whose saved file
has a ``%%gpu`` cell (jupyter_server's ``kernel_actions`` event, the notebook's path from the
``JPY_SESSION_NAME`` the session manager gave the kernel), and the lab extension's
``POST /prewarm {"path"}`` when the first ``%%gpu`` cell is typed into an open notebook.
Either way the control plane starts the cluster under the name the kernel will lease
(``protocol.notebook_cluster_name``): adaptive from ``min-workers``, so no worker starts
without a cell unless an admin asked for one, and the reaper stops it after ``idle-timeout``
if no kernel leases it. ``prewarm: false`` turns both off.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ..protocol import notebook_cluster_name

log = logging.getLogger("jupyter_elastic.server.prewarm")

#: jupyter_server's event for kernel starts, restarts and shutdowns.
KERNEL_ACTIONS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
#: A notebook file larger than this is not read to look for ``%%gpu`` cells.
MAX_NOTEBOOK_BYTES = 16 * 2**20
#: Cells looked at (the first ones: a notebook opening with a GPU cell has it early).
MAX_CELLS = 10_000


def is_gpu_cell(source: Any) -> bool:
    """Whether a cell's source (a string or nbformat's list of lines) opens with ``%%gpu``."""
    if isinstance(source, list):
        source = "".join(str(line) for line in source[:2])
    return isinstance(source, str) and source[:200].lstrip().startswith("%%gpu")


def notebook_has_gpu_cells(os_path: str) -> bool:
    """Whether the saved notebook at ``os_path`` has a code cell opening with ``%%gpu``.

    Bounded: a file over :data:`MAX_NOTEBOOK_BYTES` (or not a notebook) counts as no.
    """
    try:
        if os.path.getsize(os_path) > MAX_NOTEBOOK_BYTES:
            return False
        with open(os_path, encoding="utf-8") as f:
            raw = f.read(MAX_NOTEBOOK_BYTES + 1)
        document = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return False
    cells = document.get("cells") if isinstance(document, dict) else None
    if not isinstance(cells, list):
        return False
    return any(isinstance(cell, dict) and cell.get("cell_type") == "code"
               and is_gpu_cell(cell.get("source")) for cell in cells[:MAX_CELLS])


def kernel_notebook(kernel_manager: Any, kernel_id: str) -> str | None:
    """The ``JPY_SESSION_NAME`` a kernel was started with (its notebook's path), or None
    (a kernel started without a session: no notebook to pre-warm for)."""
    try:
        km = kernel_manager.get_kernel(kernel_id)
    except Exception:
        return None
    launch = getattr(km, "_launch_args", None) or {}
    env = launch.get("env") if isinstance(launch, dict) else None
    path = env.get("JPY_SESSION_NAME") if isinstance(env, dict) else None
    return path if isinstance(path, str) and 0 < len(path) <= 4096 else None


def os_path(path: str, root_dir: str) -> str:
    """``JPY_SESSION_NAME`` as a file path: absolute as given, else under the server root."""
    return path if os.path.isabs(path) else os.path.join(root_dir, path)


async def prewarm_notebook(manager: Any, path: str) -> tuple[str | None, bool]:
    """Pre-warm the cluster of the notebook whose kernel knows it as ``path``: (the cluster
    name, whether a start began). (None, False) when pre-warm is off."""
    settings = manager.settings
    name = notebook_cluster_name(path, settings.backend) if settings.prewarm else None
    if name is None:
        return None, False
    return name, await manager.prewarm(name, session=f"prewarm:{path[-200:]}")
