"""The long-cells example: one notebook detaches a cell, a second notebook (another kernel,
started after the first one was shut down) attaches to it and gets its values."""

from __future__ import annotations

import os

import nbformat
import psutil
import pytest
from elastic_testing import cell_text, wait_for
from kernel_harness import IPCAsyncKernelManager
from nbclient import NotebookClient

from jupyter_elastic.controlplane.jobs import JobRegistry

pytestmark = pytest.mark.kernel

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run_notebook(name: str, tmp_path) -> list[str]:
    nb = nbformat.read(os.path.join(EXAMPLES, name), as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            kernel_manager_class=IPCAsyncKernelManager,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # the kernel is shut down when it returns
    return [cell_text(c) for c in nb.cells if c.cell_type == "code"]


def test_detach_in_one_notebook_attach_in_another(tmp_path, monkeypatch, no_leaked_processes):
    monkeypatch.setenv("DASK_JUPYTER_ELASTIC__MAX_WORKERS", "1")
    detach = run_notebook("long_cells_detach.ipynb", tmp_path)
    assert "detached" in detach[2] and "long-fit" in detach[2]
    assert "long-fit" in detach[3]
    attach = run_notebook("long_cells_attach.ipynb", tmp_path)
    assert "epoch 0" in attach[1] and "epoch 2" in attach[1]
    assert "((15,), " in attach[2]
    assert "float64" in attach[3] and "bound 3 names" in attach[3]
    assert "done" in attach[4]
    job = JobRegistry().get("long-fit")

    def supervisor_gone() -> bool:
        try:
            return psutil.Process(job["pid"]).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(supervisor_gone, timeout=60, what="the job's supervisor to exit")
