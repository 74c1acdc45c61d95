"""The features-and-evaluation notebook runs top to bottom on a fresh ``python3`` kernel,
cleanly: no stderr the notebook did not print itself.

Run at a smaller test-set size (its ``N_TEST`` line, rewritten here) to keep the suite's time
modest; Dask's large-graph warning threshold is lowered to match, so a test set embedded in
the task graph would still be caught. The kernel gets its own IPython and Jupyter
directories and a 5 s idle timeout, so its cluster goes away quickly.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbclient
import nbformat
import pytest
from elastic_testing import cell_text, unexpected_stderr
from kernel_harness import IPCAsyncKernelManager

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "features_and_evaluation.ipynb"
SIZE_LINE = "N_TEST, CHUNK = 12_000, 3_000"
EXPECTED_STDERR = ("jupyter-elastic: no GPU found; this cell runs on CPU workers",)


def test_features_and_evaluation_notebook_runs_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaked_processes: None
) -> None:
    for var in ("IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        (tmp_path / var.lower()).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT", "5s")
    # A third of the size; the warning threshold a third of Dask's 10 MB as well.
    monkeypatch.setenv("DASK_DISTRIBUTED__ADMIN__LARGE_GRAPH_WARNING_THRESHOLD", "3MB")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    sized = [c for c in nb.cells if SIZE_LINE in c.source]
    assert len(sized) == 1, f"the notebook sets its test-set size with {SIZE_LINE!r}"
    sized[0].source = sized[0].source.replace(SIZE_LINE, "N_TEST, CHUNK = 4_000, 1_000")
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", kernel_manager_class=IPCAsyncKernelManager,
        resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    texts = "\n".join(cell_text(c) for c in nb.cells if c.cell_type == "code")
    assert "features: (2000, 27)" in texts
    assert "chunked == single pass: True" in texts
    auc = float(texts.split("ROC AUC ")[1].split()[0])
    sk_auc = float(texts.split("scikit-learn on one pass: ")[1].split(")")[0])
    assert auc == pytest.approx(sk_auc, abs=1e-4) and auc > 0.75
    assert "Error" not in texts
    assert unexpected_stderr(nb, EXPECTED_STDERR) == []
