"""Pre-warm through a real Jupyter server: opening a notebook with ``%%gpu`` cells (a session
and its kernel, as JupyterLab opens one) starts that notebook's cluster under the name its
kernel will lease; a notebook without one starts nothing until the lab extension says a
``%%gpu`` cell was typed (``POST /prewarm``). Clusters come from the in-memory backend."""

from __future__ import annotations

import json
import os

from elastic_testing import memory_backend  # noqa: F401  (a fixture)
from test_handlers import call, wait_until

from jupyter_elastic.protocol import notebook_cluster_name
from jupyter_elastic.server.prewarm import is_gpu_cell, notebook_has_gpu_cells

pytest_plugins = ["pytest_jupyter.jupyter_server"]


def notebook(path: str, *sources: str) -> None:
    cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
              "source": source.splitlines(keepends=True)} for source in sources]
    with open(path, "w") as f:
        json.dump({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, f)


def test_gpu_cells_are_found_only_where_a_cell_opens_with_the_magic(tmp_path):
    assert is_gpu_cell(["\n", "%%gpu --timeout 5m\n", "x = 1"]) and is_gpu_cell("  %%gpu")
    assert not is_gpu_cell("x = '%%gpu'") and not is_gpu_cell(None) and not is_gpu_cell(3)
    path = str(tmp_path / "a.ipynb")
    notebook(path, "import numpy", "%%gpu\ny = 2")
    assert notebook_has_gpu_cells(path)
    notebook(path, "print('%%gpu')")
    assert not notebook_has_gpu_cells(path)
    for junk in ("not json", "[1, 2]", '{"cells": 5}', "[" * 100_000):
        with open(path, "w") as f:
            f.write(junk)
        assert not notebook_has_gpu_cells(path)
    assert not notebook_has_gpu_cells(str(tmp_path / "missing.ipynb"))


async def test_opening_a_gpu_notebook_prewarms_its_cluster_and_typing_one_prewarms_another(
    jp_fetch, jp_root_dir, memory_backend, no_leaked_processes,  # noqa: F811
):
    notebook(os.path.join(jp_root_dir, "gpu.ipynb"), "import numpy as np", "%%gpu\nx = np.ones(3)")
    notebook(os.path.join(jp_root_dir, "plain.ipynb"), "x = 1")
    sessions = []
    try:
        for path in ("plain.ipynb", "gpu.ipynb"):
            response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(
                {"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}}))
            sessions.append(json.loads(response.body))

        # The kernel's notebook identity is what the kernel itself names its cluster after.
        gpu_name = notebook_cluster_name(os.path.join(str(jp_root_dir), "gpu.ipynb"))

        async def names():
            listed = (await call(jp_fetch, "clusters"))[1]["clusters"]
            return {c["name"] for c in listed if c["status"] == "running"}

        assert await wait_until(names, "the gpu notebook's pre-warmed cluster") == {gpu_name}
        assert [c for c in memory_backend.calls if c[0] == "scale"] == []  # no worker asked for

        # The first %%gpu cell typed into the plain notebook: the lab extension asks.
        code, body = await call(jp_fetch, "prewarm", method="POST", body={"path": "plain.ipynb"})
        plain_name = notebook_cluster_name(os.path.join(str(jp_root_dir), "plain.ipynb"))
        assert (code, body) == (200, {"cluster": plain_name, "started": True})
        await wait_until(lambda: _has(names, plain_name), "the typed notebook's cluster")
        code, body = await call(jp_fetch, "prewarm", method="POST", body={"path": "plain.ipynb"})
        assert (code, body) == (200, {"cluster": plain_name, "started": False})
        assert [c[0] for c in memory_backend.calls].count("start") == 2

        code, body = await call(jp_fetch, "prewarm", method="POST", body={"path": "closed.ipynb"})
        assert code == 404 and "no kernel is open for the notebook 'closed.ipynb'" in body["message"]
        code, body = await call(jp_fetch, "prewarm", method="POST", body={"path": "x" * 2000})
        assert code == 400 and "path" in body["message"]
        code, body = await call(jp_fetch, "prewarm", method="POST", body={"notebook": "a"})
        assert code == 400 and "unknown field 'notebook'" in body["message"]
    finally:
        for session in sessions:
            await jp_fetch("api", "sessions", session["id"], method="DELETE")


async def _has(names, name: str) -> bool:
    return name in await names()
