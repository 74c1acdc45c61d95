"""The getting-started notebook runs top to bottom on a fresh kernel (local backend), clean
every time: three runs, and no stderr the notebook did not print itself."""

from __future__ import annotations

import os

import nbformat
import pytest
from elastic_testing import cell_text, unexpected_stderr
from kernel_harness import IPCAsyncKernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
#: What the notebook writes to stderr on purpose: the library's one-line CPU notice.
EXPECTED_STDERR = ("jupyter-elastic: no GPU found; this cell runs on CPU workers",)


@pytest.mark.parametrize("run", [1, 2, 3])
def test_getting_started_runs_top_to_bottom_cleanly(run, tmp_path, monkeypatch, no_leaked_processes):
    monkeypatch.setenv("DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT", "5s")
    path = os.path.join(EXAMPLES, "getting_started.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            kernel_manager_class=IPCAsyncKernelManager,
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
    assert unexpected_stderr(nb, EXPECTED_STDERR) == [], f"run {run} printed stray stderr"
