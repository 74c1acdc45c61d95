"""The features-and-evaluation notebook runs top to bottom on a fresh ``python3`` kernel.

Skipped (with the reason) until ``jupyter_elastic.magics`` imports. The kernel gets its own
IPython and Jupyter directories and a 5 s idle timeout, so its cluster goes away quickly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from elastic_testing import cell_text

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "features_and_evaluation.ipynb"


def test_features_and_evaluation_notebook_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaked_processes: None
) -> None:
    pytest.importorskip("jupyter_elastic.magics", reason="the %%gpu magic is not importable yet")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for var in ("IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        (tmp_path / var.lower()).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT", "5s")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    texts = "\n".join(cell_text(c) for c in nb.cells if c.cell_type == "code")
    assert "features: (2000, 27)" in texts
    assert "chunked == single pass: True" in texts
    auc = float(texts.split("ROC AUC ")[1].split()[0])
    sk_auc = float(texts.split("scikit-learn on one pass: ")[1].split(")")[0])
    assert auc == pytest.approx(sk_auc, abs=1e-4) and auc > 0.75
    assert "Error" not in texts
