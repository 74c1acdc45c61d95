"""``benchmarks/soak.py --quick`` runs and finds every cell correct, so the soak cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[2]


def test_soak_quick_finds_every_cell_correct_and_nothing_leaked(no_leaked_processes):
    done = subprocess.run([sys.executable, "benchmarks/soak.py", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "wrong 0" in done.stdout and "correct 15" in done.stdout, done.stdout
