"""The getting-started notebook runs top to bottom on a fresh kernel (local backend)."""

from __future__ import annotations

import os

import nbformat
import pytest
from elastic_testing import cell_text
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def test_getting_started_runs_top_to_bottom(tmp_path, monkeypatch, no_leaked_processes):
    monkeypatch.setenv("DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT", "5s")
    path = os.path.join(EXAMPLES, "getting_started.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    texts = [cell_text(c) for c in nb.cells if c.cell_type == "code"]
    joined = "\n".join(texts)
    assert "step 2" in joined and "(2000,)" in joined
    assert "image/png" in joined and "text/html" in joined
    assert "ValueError: something went wrong on the worker" in joined
    assert "False" in texts[texts.index(next(t for t in texts if "ValueError" in t)) + 1]
    assert "no GPU found" in joined
    assert "total cost of" in joined and "stopped 1 cluster" in joined
