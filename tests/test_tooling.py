"""The project's own commands: the test and run scripts keep separate environments, and the
test summary says why each test was skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_run_and_test_scripts_use_separate_environments():
    """The main job's JupyterLab never sees test-only packages (ipyparallel's sidebar tab)."""
    run = (ROOT / "scripts" / "run.sh").read_text()
    test = (ROOT / "scripts" / "test.sh").read_text()
    assert ".venv/bin/jupyter lab" in run and ".[test]" not in run
    assert '.venv-test/bin/python -m pip install -q -e ".[test]"' in test
    assert ".venv/" not in test.replace(".venv-test/", "")
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".venv/" in ignored and ".venv-test/" in ignored
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_summary_names_each_skip_reason_once_per_group(tmp_path):
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(5))\n"
        "def test_gpu_case(n):\n"
        "    pytest.skip('no usable GPU here')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), str(tmp_path / "test_skips.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and "[5]" in skipped[0] and "no usable GPU here" in skipped[0], done.stdout


def test_cupy_cases_are_deselected_with_one_reason_where_no_gpu_is_usable():
    from jupyter_elastic._arrays.namespace import gpu_available

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only",
         "tests/test_features.py"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cupy_ids = [line for line in done.stdout.splitlines() if "cupy" in line and "::" in line]
    if gpu_available():
        assert cupy_ids, "with a GPU the CuPy cases run"
    else:
        assert cupy_ids == [] and "deselected" in done.stdout
        assert "CuPy test case(s) marked gpu: no usable GPU" in done.stdout
