"""The Jupyter server extension: hosts the control plane in the server process.

``ElasticExtension`` builds one :class:`~jupyter_elastic.controlplane.manager.ElasticClusterManager` per
server in ``initialize_settings``, serves the REST API of ``handlers.py`` under
``/jupyter-elastic/api`` and, before any kernel launches, puts
``JUPYTER_ELASTIC_SERVER_URL`` and ``JUPYTER_ELASTIC_TOKEN`` into the server's environment
(kernel managers copy ``os.environ``), so ``%%gpu`` in every kernel of this server leases
its clusters here: they survive kernel restarts and the sidebar sees all of them. Without
this extension a kernel hosts the same control plane itself (``controlplane/embedded.py``).
Admin policy (idle-timeout bounds, GPUs per user, prices) is traitlets configuration:

.. code-block:: python

    # jupyter_server_config.py
    c.ElasticExtension.max_gpus_per_user = 4
    c.ElasticExtension.max_clusters_per_user = 8
    c.ElasticExtension.idle_timeout_max = 3600
    c.ElasticExtension.gpu_hour_price = 1.10
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Integer, Unicode, default

from ..config import Pricing, load_settings
from ..controlplane.manager import ElasticClusterManager
from ..protocol import SERVER_TOKEN_ENV, SERVER_URL_ENV
from .handlers import default_handlers
from .jobs import job_handlers
from .prewarm import (
    KERNEL_ACTIONS,
    kernel_notebook,
    notebook_has_gpu_cells,
    os_path,
    prewarm_notebook,
)

_LOCAL_IPS = {"", "localhost", "0.0.0.0", "::", "127.0.0.1", "*"}


class ElasticExtension(ExtensionApp):
    """Server extension: the control plane, its REST API and the kernels' way to reach it."""

    name = "jupyter_elastic"
    load_other_extensions = True

    idle_timeout_min = Float(
        0.0,
        min=0.0,
        help="Shortest idle timeout (seconds) a user may set on a cluster; a cluster whose "
        "configured idle-timeout is below it is refused with a 400.",
    ).tag(config=True)
    idle_timeout_max = Float(
        24 * 3600.0,
        min=0.0,
        help="Longest idle timeout (seconds) a user may set: bounds how long idle GPUs can be "
        "kept (and paid for) before they scale to zero.",
    ).tag(config=True)
    max_gpus_per_user = Float(
        None,
        allow_none=True,
        min=0.0,
        help="Upper bound on GPUs this server's user may hold at once across all clusters "
        "(None: no limit). Scaling past it is refused with a 400.",
    ).tag(config=True)
    max_clusters_per_user = Integer(
        8,
        allow_none=True,
        min=1,
        help="Upper bound on clusters this server's user may run at once (each local cluster "
        "is a scheduler inside this server process). Starting one more, through a kernel's "
        "lease or POST /clusters, is refused with a 400 naming the clusters that hold the "
        "limit. None: no limit.",
    ).tag(config=True)
    gpu_hour_price = Float(
        None,
        allow_none=True,
        min=0.0,
        help="Price of one GPU-hour, overriding the jupyter-elastic.pricing.gpu-hour Dask "
        "config value for every cluster this server runs (None: keep the config value).",
    ).tag(config=True)
    cpu_hour_price = Float(
        None,
        allow_none=True,
        min=0.0,
        help="Price of one CPU-core-hour, overriding jupyter-elastic.pricing.cpu-hour "
        "(None: keep the config value).",
    ).tag(config=True)
    currency = Unicode(
        None,
        allow_none=True,
        help="Currency code shown with costs, overriding jupyter-elastic.pricing.currency.",
    ).tag(config=True)
    kernel_token = Unicode(
        help="Secret that kernels started by this server present to reach the control plane "
        "(passed to them as JUPYTER_ELASTIC_TOKEN). Random per server start unless set; "
        "accepted in addition to the server's own authentication.",
    ).tag(config=True)

    @default("kernel_token")
    def _default_kernel_token(self) -> str:
        return secrets.token_urlsafe(32)

    manager: ElasticClusterManager | None = None
    _saved_env: dict[str, str | None] | None = None

    # ------------------------------------------------------------------ set-up
    def initialize_settings(self) -> None:
        """Build the manager and tell kernels where it is (before any kernel launches)."""
        settings = load_settings()
        if self.idle_timeout_min > self.idle_timeout_max:
            self.log.warning(
                "jupyter-elastic: idle_timeout_min (%gs) is above idle_timeout_max (%gs); "
                "every cluster start will be refused",
                self.idle_timeout_min,
                self.idle_timeout_max,
            )
        if (
            self.gpu_hour_price is not None
            or self.cpu_hour_price is not None
            or self.currency is not None
        ):
            base = settings.pricing
            settings = settings.with_overrides(
                pricing=Pricing(
                    gpu_hour=base.gpu_hour if self.gpu_hour_price is None else self.gpu_hour_price,
                    cpu_hour=base.cpu_hour if self.cpu_hour_price is None else self.cpu_hour_price,
                    currency=base.currency if self.currency is None else self.currency,
                    gpu_hour_types=base.gpu_hour_types,
                )
            )
        self.manager = ElasticClusterManager(
            settings,
            max_gpus=self.max_gpus_per_user,
            max_clusters=self.max_clusters_per_user,
            idle_timeout_bounds=(self.idle_timeout_min, self.idle_timeout_max),
        )
        self.settings.update(
            {
                "jupyter_elastic_manager": self.manager,
                "jupyter_elastic_kernel_token": self.kernel_token,
                "jupyter_elastic_proxy": self._proxy_enabled(),
            }
        )
        self._export_env()
        logger = getattr(self.serverapp, "event_logger", None)
        if logger is not None and settings.prewarm:
            logger.add_listener(schema_id=KERNEL_ACTIONS, listener=self._on_kernel_action)

    def _proxy_enabled(self) -> bool:
        """Whether jupyter-server-proxy serves ``{base_url}proxy/{port}/`` on this server."""
        manager = getattr(self.serverapp, "extension_manager", None)
        package = manager.extensions.get("jupyter_server_proxy") if manager else None
        return bool(package is not None and package.enabled)

    def initialize_handlers(self) -> None:
        """Register the REST API under ``{base_url}jupyter-elastic/api``."""
        self.handlers.extend(default_handlers)
        self.handlers.extend(job_handlers)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """On the running loop: start the reaper; re-export the URL (the port is bound now)."""
        self._export_env()
        if self.manager is not None:
            await self.manager.start()
            # Once the server stops (SIGTERM), it answers no heartbeat: no lease may lapse for
            # that before stop_extension closes every cluster, saying why.
            with contextlib.suppress(Exception):
                serverapp.observe(self._on_server_stopping, names="_stopping")
        self._reconcile_jobs()

    def _on_server_stopping(self, change: Any) -> None:
        if change.get("new") and self.manager is not None:
            self.manager.leases_expire = False
    async def _on_kernel_action(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        """A kernel started for a notebook whose saved file has ``%%gpu`` cells: pre-warm
        its cluster (``server/prewarm.py``). Never raises: a listener's error is only logged."""
        if data.get("action") != "start" or data.get("status") != "success":
            return
        kernel_id = data.get("kernel_id")
        app, manager = self.serverapp, self.manager
        if not isinstance(kernel_id, str) or app is None or manager is None:
            return
        try:
            path = kernel_notebook(app.kernel_manager, kernel_id)
            if path is None:
                return
            has_gpu = await asyncio.to_thread(notebook_has_gpu_cells, os_path(path, app.root_dir))
            if has_gpu:
                await prewarm_notebook(manager, path)
        except Exception:
            self.log.exception("jupyter-elastic: pre-warm on kernel start failed")

    def _reconcile_jobs(self) -> None:
        """Re-adopt the jobs of the registry (``{runtime}/jupyter-elastic/jobs.sqlite``): a
        job whose supervisor still runs (the same process) goes on and is listed as it runs
        and ends, also when an earlier server started it and stopped or was killed since;
        one whose supervisor is gone gets the result its worker stored, or is marked lost
        with why. See ``controlplane/jobs.py`` for what survives what."""
        try:
            from ..controlplane.jobs import FINAL, JobRegistry, reconcile

            registry = JobRegistry()
            running = [job for job in registry.rows() if job["state"] not in FINAL]
            states = [reconcile(registry, job)["state"] for job in running]
            if running:
                self.log.info("jupyter-elastic: %d detached job(s) still running, %d ended while "
                              "no server ran", sum(s not in FINAL for s in states),
                              sum(s in FINAL for s in states))
        except Exception:
            self.log.exception("jupyter-elastic: could not read the job registry")

    def _server_url(self) -> str | None:
        app = self.serverapp
        if app is None or app.sock:
            return None  # a Unix socket: kernels fall back to their own control plane
        ip = app.ip or "127.0.0.1"
        host = "127.0.0.1" if ip in _LOCAL_IPS else ip
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme = "https" if getattr(app, "certfile", None) else "http"
        base_url = app.base_url if app.base_url.endswith("/") else app.base_url + "/"
        return f"{scheme}://{host}:{app.port}{base_url}"

    def _export_env(self) -> None:
        url = self._server_url()
        if url is None:
            self.log.info("jupyter-elastic: no TCP address; kernels will host their own clusters")
            return
        if self._saved_env is None:
            self._saved_env = {k: os.environ.get(k) for k in (SERVER_URL_ENV, SERVER_TOKEN_ENV)}
        os.environ[SERVER_URL_ENV] = url
        os.environ[SERVER_TOKEN_ENV] = self.kernel_token

    def _restore_env(self) -> None:
        for key, value in (self._saved_env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = None

    # ------------------------------------------------------------------ shutdown
    async def stop_extension(self) -> None:
        """Stop every cluster this server runs; never raises (the server would hang)."""
        try:
            if self.manager is not None:
                await self.manager.close_all(reason="Jupyter server shutdown")
        except Exception:
            self.log.exception("jupyter-elastic: failed to close clusters on shutdown")
        finally:
            try:
                self._restore_env()
            except Exception:
                self.log.exception("jupyter-elastic: failed to restore the environment")
