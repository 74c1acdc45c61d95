"""What the notebook installed reaches the workers: the check that names a module a cell
imports and the workers lack (before the cell runs), and ``%%gpu --sync`` on the local
backend (the Kubernetes path is tests/k8s/test_sync_real_operator.py)."""

from __future__ import annotations

import pytest
from kernel_harness import Kernel
from sync_support import build_wheel, pip_install_target

from jupyter_elastic.execution import payload as cell_payload
from jupyter_elastic.execution import worker as worker_side


def test_cell_imports_names_packages_local_modules_and_leaves_out_the_rest(tmp_path, monkeypatch):
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    (notebook / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (notebook / "shapes").mkdir()
    (notebook / "shapes" / "__init__.py").write_text("")
    site = tmp_path / "site"
    pip_install_target(build_wheel(tmp_path / "wheels"), site)
    monkeypatch.syspath_prepend(str(notebook))
    monkeypatch.syspath_prepend(str(site))
    source = "\n".join([
        "import os, json", "import numpy as np", "import helpers, shapes.circle",
        "from tinyextra import VALUE", "from . import relative",
        "try:", "    import guarded_by_the_cell", "except ImportError:", "    pass",
        "def f():", "    import inside_a_function", "import no_such_module_anywhere",
        "x = 1",
    ])
    found = cell_payload.cell_imports(source, str(notebook))
    assert found == {
        "helpers": {"path": str((notebook / "helpers.py").resolve())},
        "shapes": {"path": str((notebook / "shapes").resolve())},
        "tinyextra": {},
    }
    # the distribution is looked up only for what a worker said it lacks
    described = cell_payload.describe_imports(found, ["tinyextra", "helpers"])
    assert described["tinyextra"] == {"dist": "tiny-extra", "version": "0.3"}
    assert described["helpers"] == found["helpers"]
    assert cell_payload.cell_imports("x = 1", str(notebook)) == {}


def test_a_worker_refuses_a_cell_whose_import_it_lacks_before_running_it(tmp_path):
    marker = tmp_path / "ran"
    payload = {
        "cell_id": "c-missing", "source": f"open({str(marker)!r}, 'w').close()\nimport no_such_mod_x",
        "line_offset": 1, "filename": "<%%gpu test>", "inputs": {}, "outputs": [], "topic": "t",
        "keep_on_device": False, "versions": cell_payload.versions(),
        "modules": ["json", "no_such_mod_x"],
    }
    result = worker_side.run_cell(payload)
    assert result["status"] == "mismatch" and result["missing"] == ["no_such_mod_x"]
    assert not marker.exists()  # refused before any of the cell ran


@pytest.mark.kernel
def test_local_backend_names_the_package_the_workers_lack(tmp_path, no_leaked_processes):
    """After the workers started, the notebook put a package on its own path (as
    ``%pip install --target`` and a ``sys.path`` line leave it); the local workers, other
    processes, lack it (workers started later inherit the kernel's path): the cell is
    refused with one line naming the module and the notebook's version, nothing bound.
    (``--sync`` is exercised on Kubernetes, where workers have their own environment.)"""
    site = tmp_path / "nb-site"
    pip_install_target(build_wheel(tmp_path / "wheels"), site)
    (tmp_path / "notebook").mkdir()
    k = Kernel(cwd=str(tmp_path / "notebook"), env={"DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1",
                                       "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "60s"})
    try:
        assert k.run("%%gpu\n1").status == "ok"  # the workers start
        assert k.run(f"import sys\nsys.path.insert(0, {str(site)!r})\nimport tinyextra").status == "ok"
        run = k.run("%%gpu\nimport tinyextra\nanswer = tinyextra.VALUE")
        assert run.status == "error"
        text = run.error_text()
        assert ("the cell imports `tinyextra` (tiny-extra 0.3 in the notebook), which the "
                "workers do not have") in text, text
        assert "%%gpu --sync" in text and "Traceback" not in text
        assert k.value("'answer' in globals()") is False
        # a cell that does not import it runs as before
        assert k.run("%%gpu\nanswer = 6 * 7\nanswer").result["text/plain"] == "42"
    finally:
        k.shutdown()
