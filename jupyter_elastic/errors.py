"""The errors jupyter-elastic raises for users, each with a hint that says how to fix it.

Every error here renders as one line in a notebook (``_render_traceback_``), so a user
mistake never shows a traceback from deep inside a library. The server extension maps
``status_code`` to the HTTP status of its JSON error body. The tree::

    ElasticError                 one line with a hint; HTTP status_code
    ├── ConfigError (400)        a setting, flag or field value is malformed or out of range
    ├── ClusterNotFound (404)    no cluster with this id or name
    ├── BackendUnavailable (503) the backend cannot be reached, installed or configured
    ├── ClusterStartError (503)  a cluster did not start; nothing was left half-created
    ├── NoGPUError (409)         --require-gpu and no GPU worker
    ├── QuotaExceeded (403)      the shared gateway refused: a hub quota is used up
    ├── EnvironmentMismatch (409) worker packages differ from the kernel's
    ├── InputNotSerializable (400) a name the cell reads cannot be sent
    ├── CellSyntaxError (400)    the cell body is not valid Python
    ├── CellTimeout              the cell ran past --timeout
    ├── CellCancelled            the cell was interrupted
    ├── JobNotFound (404)        no detached cell (%%gpu --detach) with this id or name
    └── JobStoreError (507)      a detached cell's result store cannot be written or read
    RemoteCellError              (not an ElasticError) the cell's own exception, shown as the
                                 remote traceback against the cell's line numbers
"""

from __future__ import annotations


class ElasticError(Exception):
    """Base class: a problem the user can act on, shown as one line with a hint."""

    status_code = 500
    hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        """The one-line message with its hint."""
        text = str(self.args[0]) if self.args else ""
        return f"{text}. {self.hint}" if self.hint and self.hint not in text else text

    def _render_traceback_(self) -> list[str]:
        """How IPython shows this error: one line, no library traceback."""
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self.message}"]


class ConfigError(ElasticError, ValueError):
    """A setting or flag value is malformed or out of range."""

    status_code = 400


class ClusterNotFound(ElasticError, KeyError):
    """No cluster with this id is known."""

    status_code = 404
    hint = "List clusters with %gpu status, GET /jupyter-elastic/api/clusters or the sidebar"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendUnavailable(ElasticError):
    """The backend cannot be reached or is not installed/configured."""

    status_code = 503


class ClusterStartError(ElasticError):
    """A cluster could not be started; nothing was left half-created."""

    status_code = 503
    #: no node could take a GPU worker within the pending timeout: another GPU type may
    unschedulable = False


class NoGPUError(ElasticError):
    """``--require-gpu`` was given and the cluster has no GPU worker."""

    status_code = 409
    hint = "Drop --require-gpu to run on CPU workers (NumPy path), or pick a backend with GPUs"


class QuotaExceeded(ElasticError):
    """The shared Dask Gateway refused a cluster or a scale-up: a hub quota is used up."""

    status_code = 403


class EnvironmentMismatch(ElasticError):
    """The worker's Python packages differ from the kernel's in a way that breaks tasks."""

    status_code = 409


class CellTimeout(ElasticError):
    """A ``%%gpu`` cell ran past its ``--timeout``."""


class CellCancelled(ElasticError):
    """A ``%%gpu`` cell was interrupted; its remote work was cancelled."""


class WorkerLost(ElasticError):
    """The worker running a ``%%gpu`` cell died (killed, out of memory, preempted) or the
    scheduler was lost mid-cell; the cell is not re-run unless ``--retries`` asks for it."""

    def __init__(self, message: str, *, hint: str | None = None, worker: str | None = None,
                 compute_seconds: float = 0.0, pod: dict[str, str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.worker = worker
        self.compute_seconds = compute_seconds
        #: On Kubernetes, the worker's pod as the API server told of its loss
        #: (``pod``, ``node``, ``reason``); None when no pod loss was seen.
        self.pod = pod


class InputNotSerializable(ElasticError):
    """A name the cell reads cannot be sent to a worker."""

    status_code = 400


class CellSyntaxError(ElasticError):
    """The cell body is not valid Python."""

    status_code = 400


class JobNotFound(ElasticError, KeyError):
    """No detached cell (``%%gpu --detach``) with this id or name."""

    status_code = 404
    hint = "List jobs with %gpu jobs or GET /jupyter-elastic/api/jobs"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class JobStoreError(ElasticError):
    """A detached cell's results cannot be written to, or read from, the result store."""

    status_code = 507
    hint = "Check jupyter-elastic.jobs.store (a writable directory or fsspec URL with space left)"


class RemoteCellError(Exception):
    """The cell raised on the worker; shown as the remote traceback, cell line numbers."""

    def __init__(self, ename: str, evalue: str, traceback_lines: list[str], worker: str | None):
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue = ename, evalue
        self.traceback_lines, self.worker = traceback_lines, worker

    def _render_traceback_(self) -> list[str]:
        where = f" on worker {self.worker}" if self.worker else ""
        header = f"\x1b[0;31m{self.ename}\x1b[0m raised in a %%gpu cell{where}:"
        body = self.traceback_lines or [f"{self.ename}: {self.evalue}"]
        return [header, *body]
