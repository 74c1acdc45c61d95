"""REST API of detached cells (``%%gpu --detach``), under ``{base_url}jupyter-elastic/api``::

    GET    /jobs                    -> 200 {"jobs": [job, ...]}   (oldest first)
    GET    /jobs/{id or name}       -> 200 job | 404
    DELETE /jobs/{id or name}       -> 200 job (cancelled, or cancelling) | 404
    GET    /jobs/{id or name}/results -> 200 {"id", "state", "complete", "names": {name:
                                       {"format", "dtype"?, "shape"?, "bytes"}}, ...} | 404

The jobs are the user's job registry (``controlplane/jobs.py``), the same one every kernel
reads, so jobs detached from kernels of this server and from plain kernels both appear.
Values themselves are never sent over this API: ``%gpu attach`` / ``%gpu results`` read them
from the result store. Reference: ``docs/rest-api.md``.
"""

from __future__ import annotations

from tornado import web

from ..config import short_text
from ..controlplane.jobs import JobRegistry, cancel_job, get_job, list_jobs, results_metadata
from ..errors import ConfigError
from .handlers import API_PREFIX, ElasticHandler, _bad, http_errors


class JobsHandler(ElasticHandler):
    @property
    def registry(self) -> JobRegistry:
        if "jupyter_elastic_jobs" not in self.settings:
            self.settings["jupyter_elastic_jobs"] = JobRegistry()
        registry: JobRegistry = self.settings["jupyter_elastic_jobs"]
        return registry

    def job_key(self, job: str) -> str:
        try:
            return short_text(job, "job id or name", limit=64)
        except ConfigError as exc:
            raise _bad(exc.message) from None


class JobListHandler(JobsHandler):
    """``GET /jobs``: every job of this user."""

    @web.authenticated
    async def get(self) -> None:
        with http_errors():
            self.write_json({"jobs": list_jobs(self.registry)})


class JobHandler(JobsHandler):
    """``GET /jobs/{id}``: one job; ``DELETE /jobs/{id}``: cancel it."""

    @web.authenticated
    async def get(self, job: str) -> None:
        with http_errors():
            self.write_json(get_job(self.job_key(job), self.registry))

    @web.authenticated
    async def delete(self, job: str) -> None:
        with http_errors():
            self.write_json(cancel_job(self.job_key(job), self.registry))


class JobResultsHandler(JobsHandler):
    """``GET /jobs/{id}/results``: what the result store holds for the job (no values)."""

    @web.authenticated
    async def get(self, job: str) -> None:
        with http_errors():
            self.write_json(results_metadata(self.job_key(job), self.registry))


_JOB = API_PREFIX + "/jobs/(?P<job>[^/]+)"

#: Routes registered by ``ElasticExtension.initialize_handlers`` beside ``handlers``'.
job_handlers: list[tuple[str, type[ElasticHandler]]] = [
    (API_PREFIX + "/jobs", JobListHandler),
    (_JOB, JobHandler),
    (_JOB + "/results", JobResultsHandler),
]
