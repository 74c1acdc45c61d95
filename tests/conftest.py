"""Shared test set-up: isolate every config and runtime directory, and check for leaks.

Environment variables are set at import time, before anything imports dask-kubernetes or
Jupyter (both write to the home directory on import otherwise). The ``no_leaked_processes``
fixture fails a test that leaves child processes behind (a scheduler, worker or kernel).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

_ROOT = tempfile.mkdtemp(prefix="jupyter-elastic-tests-")
for _var, _sub in {
    "DASK_CONFIG": "dask",
    "JUPYTER_CONFIG_DIR": "jupyter-config",
    "JUPYTER_DATA_DIR": "jupyter-data",
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "IPYTHONDIR": "ipython",
    "MPLCONFIGDIR": "matplotlib",
}.items():
    os.environ[_var] = os.path.join(_ROOT, _sub)
    os.makedirs(os.environ[_var], exist_ok=True)
os.environ.pop("JUPYTER_ELASTIC_SERVER_URL", None)
os.environ.pop("JUPYTER_ELASTIC_TOKEN", None)
os.environ.setdefault("MPLBACKEND", "agg")

import psutil  # noqa: E402
import pytest  # noqa: E402
from elastic_testing import children, wait_for  # noqa: E402,F401

TEST_ROOT = _ROOT


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_ROOT, ignore_errors=True)


_NO_GPU = "no usable GPU (CuPy is not installed or cupy.is_available() is False)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a usable GPU, deselect the CuPy cases (marked ``gpu``) instead of skipping
    them one by one; the summary says how many and why (``pytest_terminal_summary``)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    from jupyter_elastic._arrays.namespace import gpu_available

    if gpu_available():
        return
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
    config.hook.pytest_deselected(items=gpu_items)
    config.stash[_GPU_DESELECTED] = len(gpu_items)


_GPU_DESELECTED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: object, exitstatus: int, config: pytest.Config) -> None:
    deselected = config.stash.get(_GPU_DESELECTED, 0)
    if deselected:
        terminalreporter.write_line(  # type: ignore[attr-defined]
            f"deselected {deselected} CuPy test case(s) marked gpu: {_NO_GPU}")


@pytest.fixture
def no_leaked_processes():
    """Fail the test if it leaves child processes running once it is done."""
    before = children()
    yield
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        leaked = children() - before
        if not leaked:
            return
        time.sleep(0.2)
    names = []
    for pid in leaked:
        try:
            names.append(" ".join(psutil.Process(pid).cmdline())[:120])
        except psutil.Error:
            pass
    pytest.fail(f"test left {len(leaked)} processes running: {names}")


@pytest.fixture(params=["numpy", "dask", "strict", pytest.param("cupy", marks=pytest.mark.gpu)])
def kind(request: pytest.FixtureRequest):
    """The array kind a compute-library test runs on; CuPy only where ``cupy.is_available()``.

    ``strict`` is the CPU stand-in for CuPy (``strict_xp.py``): CuPy's names only, and any
    implicit host transfer fails the test even where a caller swallowed the error.
    """
    import strict_xp

    from jupyter_elastic._arrays.namespace import gpu_available

    if request.param == "cupy" and not gpu_available():
        pytest.skip("no usable GPU: CuPy is not installed or cupy.is_available() is False")
    strict_xp.install()
    strict_xp.VIOLATIONS.clear()
    yield request.param
    assert not strict_xp.VIOLATIONS, f"implicit host transfers: {strict_xp.VIOLATIONS}"


@pytest.fixture(autouse=True)
def _resource_tracker():
    """Start multiprocessing's process-wide helper up front: Dask's worker processes start
    it once and it lives as long as pytest, which is not a leak of any test's."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.fixture
def elastic_config():
    """Small, quick clusters: CPU-only local workers, idle timeout of a few seconds (a test
    module overrides this fixture for other settings)."""
    import dask

    with dask.config.set(
        {
            "jupyter-elastic.backend": "local",
            "jupyter-elastic.idle-timeout": "5s",
            "jupyter-elastic.shutdown-after": "10m",
            "jupyter-elastic.max-workers": 2,
            "jupyter-elastic.worker.cpus": 1,
            "jupyter-elastic.worker.gpus": 0,  # CPU workers, also on a GPU machine
            "jupyter-elastic.worker.memory": "512MiB",
            "jupyter-elastic.dashboard": True,  # the dashboard-link tests (off by default)
        }
    ):
        yield


@pytest.fixture
def jp_server_config(elastic_config):
    """A Jupyter server (pytest-jupyter) with the extension, authentication required."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_elastic": True, "jupyter_server_proxy": True},
            "allow_unauthenticated_access": False,
        },
    }


@pytest.fixture(autouse=True)
def _dask_scheduler_setting_restored():
    """A test that leaves a default ``distributed.Client`` behind (a failure inside it,
    say) must not turn every later Dask computation into 'no Client active'."""
    import dask

    before = {key: dask.config.config.get(key) for key in ("scheduler", "shuffle")}
    yield
    for key, value in before.items():
        if value is None:
            dask.config.config.pop(key, None)
        else:
            dask.config.config[key] = value

