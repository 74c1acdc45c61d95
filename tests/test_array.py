"""Namespace dispatch (``_array.py``) and the GPU check script's logic, on a machine without a GPU.

CuPy must never be required: ``gpu_available`` is false unless ``cupy.is_available()`` says
so, Dask arrays report their chunks' namespace, and ``benchmarks/gpu_check.py`` both exits
cleanly without a GPU and, in ``--dry-run`` mode, catches a function that returns a wrong
result.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import dask.array as da
import numpy as np
import pytest

from jupyter_elastic._arrays import namespace as _array

ROOT = Path(__file__).resolve().parents[1]


def test_namespace_of_numpy_dask_and_python_values() -> None:
    assert _array.get_namespace(np.ones(2), None, 3.0, [1]) is np
    assert _array.get_namespace(da.ones(4, chunks=2)) is np
    assert _array.meta_namespace(da.ones(4, chunks=2)) is np
    assert _array.is_dask(da.ones(2)) and not _array.is_dask(np.ones(2))
    assert not _array.is_cupy(np.ones(2))


def test_unsupported_array_library_is_named() -> None:
    class Foreign:
        __module__ = "torchish"

    with pytest.raises(ValueError, match="unsupported array type torchish.Foreign"):
        _array.get_namespace(Foreign())


def test_to_numpy_and_cast_do_not_copy_needlessly() -> None:
    a = np.arange(3.0)
    assert _array.to_numpy(a) is a
    assert _array.cast(a, np.float64) is a
    assert _array.cast(a, np.float32).dtype == np.float32
    d = da.from_array(a, chunks=2)
    assert _array.to_numpy(d) is d
    np.testing.assert_array_equal(_array.to_device(d, np).compute(), a)


def test_gpu_available_is_false_when_cupy_reports_no_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = ModuleType("cupy")
    fake.is_available = lambda: False  # type: ignore[attr-defined]
    fake.ndarray = type("ndarray", (), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert _array.gpu_available() is False  # importable is not enough
    fake.is_available = lambda: True  # type: ignore[attr-defined]
    assert _array.gpu_available() is True


def test_compute_modules_never_import_cupy() -> None:
    code = (
        "import sys; import jupyter_elastic.features, jupyter_elastic.evaluation; "
        "import numpy as np; jupyter_elastic.evaluation.roc_auc_score([0, 1], [0.2, 0.8]); "
        "print('cupy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    mentions = [
        p.name
        for p in (ROOT / "jupyter_elastic").glob("*.py")
        if "cupy" in p.read_text() and p.name != "_array.py"
    ]
    compute = {
        "features.py",
        "evaluation.py",
        "_checks.py",
        "_chunked.py",
        "_ranking.py",
        "_stats.py",
        "_finalize.py",
        "_evaluate.py",
        "_signal.py",
        "_quantiles.py",
        "_hashing.py",
    }
    assert not compute & set(mentions), mentions


def load_gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_gpu_check_without_gpu_exits_cleanly_with_a_message() -> None:
    if _array.gpu_available():
        pytest.skip("a GPU is present: the no-GPU message is not printed")
    out = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "no GPU" in out.stdout


def test_gpu_check_dry_run_passes_and_catches_a_wrong_result(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_leaked_processes: None
) -> None:
    gpu_check = load_gpu_check()
    assert gpu_check.main(["--dry-run", "--scale", "0.001", "--repeat", "1"]) == 0
    table = capsys.readouterr().out
    assert "| roc_auc_score | 0.0e+00 |" in table and "0 failing function(s)" in table
    # the %%gpu end-to-end part ran through a real kernel, on CPU workers here
    assert "| cell result matches | ok |" in table and "| CuPy comes back as NumPy | ok |" in table
    assert "0 failing end-to-end check(s)" in table
    original = gpu_check.cases

    def broken(scale: float) -> list:
        rows = original(scale)
        name, func, inputs, kwargs = rows[0]
        calls = iter(range(10))

        def off_by_a_bit(*args: object, **kw: object) -> object:
            result = func(*args, **kw)
            # the reference is timed first (a warm-up and one run): only device calls go wrong
            return result if next(calls) < 2 else result + 1e-6

        return [(name, off_by_a_bit, inputs, kwargs)]

    monkeypatch.setattr(gpu_check, "cases", broken)
    assert gpu_check.main(["--dry-run", "--scale", "0.001", "--repeat", "1", "--no-e2e"]) == 1
    assert "FAIL" in capsys.readouterr().out
