"""The result store of detached cells (``%%gpu --detach``): written by the worker, read by
any kernel of the user.

A store is a directory or any fsspec URL (``s3://bucket/jobs``, ``memory://`` in tests);
the default is ``{jupyter_data_dir}/jupyter-elastic/jobs``. One job is one folder::

    {store}/{job_id}/values/{name}.npy       NumPy arrays (no pickle; CuPy arrays arrive
                                             here already moved to the host)
    {store}/{job_id}/values/{name}.pkl       anything else (cloudpickle); modules the cell
                                             imported are only named in the manifest
    {store}/{job_id}/output.json             the cell's stdout/stderr and rich outputs, in order
    {store}/{job_id}/manifest.json           written last: state, names and their formats,
                                             the history row, and ``complete``

The manifest is the commit: it is removed before anything else is written and written only
after every value is, so a store that fills up half-way leaves a job without a complete
manifest, which readers refuse (never a partial result presented as complete). Object
stores have no atomic rename; this ordering is what they offer. Workers import this module:
it imports only fsspec, NumPy, cloudpickle and the leaf modules.
"""

from __future__ import annotations

import json
import os
import re
import time
import types
from typing import Any

from ..errors import JobStoreError

MANIFEST = "manifest.json"
OUTPUT = "output.json"
VALUE = "__value__"  # the cell's last expression, stored beside its names
_JOB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def default_store() -> str:
    """``{jupyter_data_dir}/jupyter-elastic/jobs``."""
    from jupyter_core.paths import jupyter_data_dir

    return os.path.join(jupyter_data_dir(), "jupyter-elastic", "jobs")


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise JobStoreError(f"{job_id!r} is not a job id (lower-case letters, digits and -)", hint="")
    return job_id


class ResultStore:
    """One store (a directory or fsspec URL) and the jobs' folders in it."""

    def __init__(self, url: str | None = None) -> None:
        import fsspec.core

        self.url = url or default_store()
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ValueError, ImportError, OSError) as exc:
            raise JobStoreError(f"cannot open the result store {self.url!r}: {type(exc).__name__}: {exc}") from None
        self.root = self.root.rstrip("/")

    def path(self, job_id: str, *parts: str) -> str:
        return "/".join([self.root, check_job_id(job_id), *parts])

    # ----------------------------------------------------------------- writing
    def begin(self, job_id: str) -> None:
        """Make the job's folder and remove any earlier manifest (a re-run overwrites)."""
        folder = self.path(job_id)
        self.fs.makedirs(folder + "/values", exist_ok=True)
        if self.fs.exists(self.path(job_id, MANIFEST)):
            self.fs.rm(self.path(job_id, MANIFEST))

    def _write(self, path: str, data: bytes) -> None:
        with self.fs.open(path, "wb") as f:
            f.write(data)

    def write_value(self, job_id: str, name: str, value: Any) -> dict[str, Any]:
        """Store one value: ``.npy`` for a NumPy array without objects, else a pickle."""
        import numpy as np

        entry: dict[str, Any]
        if isinstance(value, types.ModuleType):  # ``import x`` in the cell: re-imported by name
            return {"format": "module", "module": value.__name__, "bytes": 0}
        device = None
        if type(value).__module__.split(".")[0] == "cupy" and hasattr(value, "get"):
            device, value = "cupy", value.get()  # --keep-on-device: stored on the host, as .npy
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            entry = {"format": "npy", "dtype": str(value.dtype), "shape": list(value.shape)}
            with self.fs.open(self.path(job_id, "values", name + ".npy"), "wb") as f:
                np.save(f, value, allow_pickle=False)  # streamed: no second copy in memory
                entry["bytes"] = f.tell()
        else:
            import cloudpickle

            data = cloudpickle.dumps(value, protocol=5)
            entry = {"format": "pickle", "type": type(value).__name__, "bytes": len(data)}
            self._write(self.path(job_id, "values", name + ".pkl"), data)
        if device is not None:
            entry["device"] = device
        return entry

    def write_manifest(self, job_id: str, manifest: dict[str, Any]) -> None:
        self._write(self.path(job_id, MANIFEST), json.dumps(manifest, default=str).encode())

    def write_results(self, job_id: str, *, state: str, outputs: dict[str, Any], deleted: list[str],
                      value: Any, events: list[dict[str, Any]], row: dict[str, Any],
                      error: str | None = None) -> dict[str, Any]:
        """Write everything, the manifest last (``complete: true``)."""
        self.begin(job_id)
        names = {}
        for name, item in outputs.items():
            names[name] = self.write_value(job_id, name, item)
        stored_value = None
        if value is not None:
            stored_value = self.write_value(job_id, VALUE, value)
        self._write(self.path(job_id, OUTPUT), json.dumps(events, default=str).encode())
        manifest = {"job": job_id, "state": state, "complete": True, "names": names,
                    "deleted": list(deleted), "value": stored_value, "error": error,
                    "history": row, "written": time.time()}
        self.write_manifest(job_id, manifest)
        return manifest

    def write_failure(self, job_id: str, *, state: str, error: str, events: list[dict[str, Any]],
                      row: dict[str, Any]) -> dict[str, Any]:
        """A job that ended without results: its output and error, no names."""
        self.begin(job_id)
        self._write(self.path(job_id, OUTPUT), json.dumps(events, default=str).encode())
        manifest = {"job": job_id, "state": state, "complete": True, "names": {}, "deleted": [],
                    "value": None, "error": error, "history": row, "written": time.time()}
        self.write_manifest(job_id, manifest)
        return manifest

    # ----------------------------------------------------------------- reading
    def manifest(self, job_id: str) -> dict[str, Any] | None:
        """The job's manifest, or None while it has none (running, or never completed)."""
        path = self.path(job_id, MANIFEST)
        try:
            with self.fs.open(path, "rb") as f:
                data: dict[str, Any] = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise JobStoreError(f"cannot read {path} in the result store: {type(exc).__name__}: {exc}") from None
        return data

    def events(self, job_id: str) -> list[dict[str, Any]]:
        try:
            with self.fs.open(self.path(job_id, OUTPUT), "rb") as f:
                data: list[dict[str, Any]] = json.loads(f.read())
                return data
        except FileNotFoundError:
            return []

    def read_value(self, job_id: str, name: str, entry: dict[str, Any], *, allow_pickle: bool) -> Any:
        import numpy as np

        if entry["format"] == "module":
            import importlib

            return importlib.import_module(entry["module"])
        if entry["format"] == "npy":
            with self.fs.open(self.path(job_id, "values", name + ".npy"), "rb") as f:
                array = np.load(f, allow_pickle=False)
            if entry.get("device") == "cupy":  # back on the device where CuPy is usable
                try:
                    import cupy

                    return cupy.asarray(array)
                except Exception:
                    return array
            return array
        if not allow_pickle:
            raise JobStoreError(
                f"`{name}` is stored as a pickle in {self.url}, which is not this session's "
                "configured result store; pickles are only loaded from the configured store",
                hint="set jupyter-elastic.jobs.store to this store if you trust it",
            )
        import cloudpickle

        with self.fs.open(self.path(job_id, "values", name + ".pkl"), "rb") as f:
            return cloudpickle.loads(f.read())

    def load(self, job_id: str, *, allow_pickle: bool) -> tuple[dict[str, Any], list[str], Any, dict[str, Any]]:
        """``(values, deleted, last value, manifest)`` of a completed job; all or nothing."""
        manifest = self.manifest(job_id)
        if manifest is None or not manifest.get("complete"):
            raise JobStoreError(f"job {job_id} has no complete result in {self.url}", hint="")
        if manifest.get("state") != "done":
            raise JobStoreError(f"job {job_id} ended {manifest.get('state')}: {manifest.get('error')}", hint="")
        try:
            values = {name: self.read_value(job_id, name, entry, allow_pickle=allow_pickle)
                      for name, entry in manifest["names"].items()}
            value = None
            if manifest.get("value") is not None:
                value = self.read_value(job_id, VALUE, manifest["value"], allow_pickle=allow_pickle)
        except JobStoreError:
            raise
        except Exception as exc:
            raise JobStoreError(
                f"cannot read job {job_id}'s results from {self.url}: {type(exc).__name__}: {exc}"
            ) from None
        return values, list(manifest.get("deleted") or []), value, manifest

    def delete(self, job_id: str) -> None:
        folder = self.path(job_id)
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)
