"""The result store of detached cells and the job registry, in this process."""

from __future__ import annotations

import errno
import json
import os
import time
import uuid

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from jupyter_elastic.controlplane.jobs import JobRegistry, list_jobs, prune, reconcile
from jupyter_elastic.errors import JobNotFound, JobStoreError
from jupyter_elastic.execution.job import run_job
from jupyter_elastic.execution.payload import versions
from jupyter_elastic.execution.store import ResultStore

ARRAYS = {
    "f32": np.linspace(-1, 1, 17, dtype=np.float32),
    "f64_nan": np.array([np.nan, np.inf, -0.0, 1e-300]),
    "i64": np.arange(-5, 5, dtype=np.int64).reshape(2, 5),
    "u8": np.arange(256, dtype=np.uint8),
    "b": np.array([True, False, True]),
    "c128": np.array([1 + 2j, -3.5j]),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided": np.arange(20)[::3],
    "zero_d": np.array(7.5),
    "empty": np.zeros((0, 3), dtype=np.int16),
    "record": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    "text": np.array(["ab", "cde"]),
}


@pytest.fixture(params=["dir", "memory"])
def store(request, tmp_path):
    if request.param == "dir":
        yield ResultStore(str(tmp_path / "store"))
        return
    url = f"memory://jobs-{uuid.uuid4().hex}"
    yield ResultStore(url)
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_arrays_round_trip_exactly_without_pickle(store):
    manifest = store.write_results("j1", state="done", outputs=dict(ARRAYS), deleted=["old"],
                                   value=np.float64(2.5), events=[{"kind": "stream", "name": "stdout",
                                                                   "text": "hi\n"}], row={"id": "c1"})
    assert {e["format"] for e in manifest["names"].values()} == {"npy"}, "every array is .npy"
    values, deleted, value, loaded = store.load("j1", allow_pickle=True)
    assert deleted == ["old"] and loaded["complete"] is True
    assert loaded["value"]["format"] == "pickle", "a NumPy scalar is not an array: pickled"
    for name, expected in ARRAYS.items():
        got = values[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert np.array_equal(got, expected, equal_nan=expected.dtype.kind == "f"), name
    assert np.signbit(values["f64_nan"]).tolist() == np.signbit(ARRAYS["f64_nan"]).tolist()
    assert value == 2.5 and type(value) is np.float64


def test_pickles_only_from_the_configured_store(store):
    store.write_results("j2", state="done", outputs={"d": {"a": [1, 2]}, "np": __import__("numpy")},
                        deleted=[], value=None, events=[], row={})
    with pytest.raises(JobStoreError, match="only loaded from the configured store"):
        store.load("j2", allow_pickle=False)
    values, _, _, manifest = store.load("j2", allow_pickle=True)
    assert values["d"] == {"a": [1, 2]} and values["np"] is np
    assert manifest["names"]["np"]["format"] == "module", "modules travel by name"


def test_a_result_without_its_manifest_is_never_presented(store):
    store.write_results("j3", state="done", outputs={"x": np.arange(3)}, deleted=[], value=None,
                        events=[], row={})
    store.begin("j3")  # a re-run starts: the old manifest goes first
    assert store.manifest("j3") is None
    with pytest.raises(JobStoreError, match="no complete result"):
        store.load("j3", allow_pickle=True)


def test_job_ids_cannot_leave_the_store(store):
    with pytest.raises(JobStoreError, match="not a job id"):
        store.path("../etc")


def _payload(store_url: str, source: str, inputs: dict | None = None) -> dict:
    return {"cell_id": "c-test", "source": source, "line_offset": 1, "filename": "<%%gpu test>",
            "inputs": inputs or {}, "outputs": ["y"], "topic": "", "keep_on_device": False,
            "versions": versions(), "job": {"id": "jtest", "store": store_url, "row": {"id": "c"}}}


def test_run_job_writes_results_from_the_worker_side(tmp_path):
    url = str(tmp_path / "store")
    summary = run_job(_payload(url, "print('out')\ny = x + 1\ny.sum()", {"x": np.arange(4)}))
    assert summary["status"] == "done" and summary["names"] == ["y"]
    store = ResultStore(url)
    values, _, value, manifest = store.load("jtest", allow_pickle=True)
    assert values["y"].tolist() == [1, 2, 3, 4] and value == 10
    assert store.events("jtest") == [] or all(e["kind"] == "stream" for e in store.events("jtest"))
    assert manifest["history"]["status"] == "done"


def test_unwritable_store_fails_the_job_with_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = str(blocker / "store")
    summary = run_job(_payload(url, "y = 1"))
    assert summary["status"] == "failed" and summary["store_error"]
    assert summary["error"].startswith(f"the result store {url} could not be written:")
    assert not os.path.exists(url)


class FullFileSystem(MemoryFileSystem):
    """A memory store that is full after ``limit`` bytes (ENOSPC, as a full disk says)."""

    protocol = ("fullmem",)
    limit = 2000
    used = 0

    def open(self, path, mode="rb", **kwargs):
        f = super().open(path, mode, **kwargs)
        if "w" not in mode:
            return f
        fs = self
        write = f.write

        def limited(data):
            if type(fs).used + len(data) > fs.limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            type(fs).used += len(data)
            return write(data)

        f.write = limited
        return f


def test_full_store_fails_the_job_and_leaves_no_complete_result():
    fsspec.register_implementation("fullmem", FullFileSystem, clobber=True)
    FullFileSystem.used = 0
    url = f"fullmem://jobs-{uuid.uuid4().hex}"
    summary = run_job(_payload(url, "import numpy as np\ny = np.zeros(10_000)"))
    assert summary["status"] == "failed"
    assert "No space left on device" in summary["error"]
    store = ResultStore(url)
    manifest = store.manifest("jtest")
    assert manifest is None or manifest["state"] == "failed"
    with pytest.raises(JobStoreError):
        store.load("jtest", allow_pickle=True)


def test_registry_reconciles_a_dead_supervisor_and_prunes_after_ttl(tmp_path):
    registry = JobRegistry(str(tmp_path / "jobs.sqlite"))
    store = ResultStore(str(tmp_path / "store"))
    now = time.time()
    base = {"state": "running", "created": now - 100, "started": now - 90, "store": store.url,
            "pid": 2**22 + 12345, "ttl": 60.0}  # a pid no live process has
    registry.insert(dict(base, id="jdone", name="finished"))
    registry.insert(dict(base, id="jlost", name="lost"))
    store.write_results("jdone", state="done", outputs={"x": np.arange(2)}, deleted=[], value=None,
                        events=[], row={})
    assert reconcile(registry, registry.get("jdone"))["state"] == "done", "the worker's result is adopted"
    lost = reconcile(registry, registry.get("lost"))
    assert lost["state"] == "lost" and "supervisor" in lost["error"]
    assert json.loads(registry.get("jdone")["names"]) == ["x"]
    with pytest.raises(JobNotFound):
        registry.get("nope")
    assert prune(registry, now=time.time() + 30) == []
    assert sorted(prune(registry, now=time.time() + 3600)) == ["jdone", "jlost"]
    assert store.manifest("jdone") is None and list_jobs(registry) == []


def test_remote_backends_need_a_store_their_workers_reach(monkeypatch, tmp_path):
    from jupyter_elastic.errors import ConfigError
    from jupyter_elastic.execution.analysis import analyze_cell
    from jupyter_elastic.kernel.dispatch import CellOptions
    from jupyter_elastic.kernel.jobs import submit

    monkeypatch.setenv("DASK_JUPYTER_ELASTIC__JOBS__STORE", str(tmp_path / "store"))
    import dask

    dask.config.refresh()
    before = len(JobRegistry().rows())
    try:
        plan = analyze_cell("y = 1", {}, hidden={}, inputs=None, outputs=None)
        with pytest.raises(ConfigError, match="kubernetes workers cannot write to"):
            submit(None, plan, {}, CellOptions(backend="kubernetes"), name=None, ttl=None,  # type: ignore[arg-type]
                   execution_count=None)
        assert len(JobRegistry().rows()) == before, "nothing was recorded or started"
    finally:
        monkeypatch.delenv("DASK_JUPYTER_ELASTIC__JOBS__STORE")
        dask.config.refresh()


class _DeviceArray:
    """Stands in for a CuPy array (``--keep-on-device``): ``.get()`` copies it to the host.
    No GPU ran this; it checks the store's branch, not CuPy."""

    __module__ = "cupy._core.core"

    def __init__(self, host):
        self.host = host

    def get(self):
        return self.host


def test_device_arrays_are_stored_from_the_host_as_npy(store):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    manifest = store.write_results("jdev", state="done", outputs={"d": _DeviceArray(host)}, deleted=[],
                                   value=None, events=[], row={})
    assert manifest["names"]["d"]["format"] == "npy" and manifest["names"]["d"]["device"] == "cupy"
    values, _, _, _ = store.load("jdev", allow_pickle=False)
    got = values["d"]
    got = got.get() if hasattr(got, "get") else got  # CuPy where installed, else NumPy
    assert got.dtype == host.dtype and np.array_equal(got, host)
