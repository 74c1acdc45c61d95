"""The layout's import rules (``[tool.importlinter]`` in pyproject.toml) hold, and can fail.

``lint-imports`` runs in the README's test command too; here it also runs against a copy of
the package with one deliberate wrong import per rule, so a contract that could never fail
(a typo in a module name, say) is caught.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINT = pathlib.Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _copy(tmp_path: pathlib.Path) -> pathlib.Path:
    shutil.copytree(ROOT / "jupyter_elastic", tmp_path / "jupyter_elastic",
                    ignore=shutil.ignore_patterns("labextension", "__pycache__"))
    return tmp_path


def test_the_tree_keeps_every_contract():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("execution/analysis.py", "from ..kernel import magics", "execution runs on workers"),
        ("features/_signal.py", "from ..config import load_settings", "compute library"),
        ("backends/base.py", "from ..controlplane import manager", "backends never import"),
        ("controlplane/reaper.py", "import tornado.ioloop", "controlplane never imports"),
        ("errors.py", "from .config import load_settings", "leaf modules"),
        ("execution/payload.py", "from . import worker", "no import cycles"),
        ("hub/gateway.py", "from ..backends import base", "hub runs inside dask-gateway-server"),
    ],
)
def test_a_wrong_import_breaks_its_contract(tmp_path, module, line, contract):
    root = _copy(tmp_path)
    path = root / "jupyter_elastic" / module
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "  # deliberately wrong\n" + rest)
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    broken = [ln for ln in result.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(contract in ln for ln in broken) or contract in result.stdout.split("Broken contracts")[-1], (
        result.stdout
    )


def test_the_version_is_written_once():
    """package.json holds the version; the Python package and the lab extension read it."""
    import json

    import jupyter_elastic

    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

    version = json.loads((ROOT / "package.json").read_text())["version"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert jupyter_elastic.__version__ == version
    written = [p for p in (ROOT / "jupyter_elastic").rglob("*.py")
               if p.name != "_version.py" and f'"{version}"' in p.read_text()]
    assert not written, f"version written by hand in {written}"
