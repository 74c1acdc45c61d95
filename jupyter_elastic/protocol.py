"""What both sides of a wire agree on: names, prefixes, resources, intervals, env vars.

The kernel, the control plane, the Jupyter server, scheduler preloads and workers run in
different processes (often on different machines) and share only these constants. Change
one here and every side follows; a value written out anywhere else is a bug.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable

#: Key prefix of every ``%%gpu`` cell task (scaling policies count these).
CELL_PREFIX = "gpu-cell"
#: Worker resource a GPU worker offers per GPU.
GPU_RESOURCE = "GPU"
#: Worker resource a CPU worker offers as one cell slot (no GPU in reach).
CPU_RESOURCE = "CELL"
#: Task states in which a cell still needs (or holds) a worker slot.
CELL_WAITING_STATES = ("processing", "waiting", "no-worker", "queued")

#: Key, in a lease's ``client`` credentials, of the scheduler's in-process address (a
#: scheduler in the kernel's own process: an embedded control plane's local cluster).
IN_PROCESS_ADDRESS = "in_process_address"

#: Batched-send interval for interactive use, in seconds (Dask's defaults are 2-10 ms).
INTERACTIVE_INTERVAL = 0.0005

#: Path of the REST API under the Jupyter server's base URL.
API_PATH = "jupyter-elastic/api"

#: Set by the server extension before kernels launch: where its control plane answers.
SERVER_URL_ENV = "JUPYTER_ELASTIC_SERVER_URL"
#: Set by the server extension before kernels launch: the kernels' bearer token.
SERVER_TOKEN_ENV = "JUPYTER_ELASTIC_TOKEN"
#: Request header carrying a lease's secret (heartbeat, release, cell reports on it).
LEASE_SECRET_HEADER = "X-Elastic-Lease-Secret"
#: Set on every worker the project starts.
WORKER_ENV = "JUPYTER_ELASTIC_WORKER"
#: Set ("1") for local workers started inside a kernel: their stdout/stderr are the kernel's,
#: which the kernel forwards into the running cell, so the worker points them at /dev/null.
QUIET_STDIO_ENV = "JUPYTER_ELASTIC_QUIET_STDIO"
#: Bytes a worker's input cache may hold.
CACHE_BYTES_ENV = "JUPYTER_ELASTIC_CACHE_BYTES"
#: Scheduler preload settings on Kubernetes (idle timeout, resource name, slots per worker).
IDLE_TIMEOUT_ENV = "JUPYTER_ELASTIC_IDLE_TIMEOUT"
RESOURCE_ENV = "JUPYTER_ELASTIC_RESOURCE"
SLOTS_ENV = "JUPYTER_ELASTIC_SLOTS"

#: Dask preload that every worker runs (output routing, input cache, interrupts).
WORKER_PRELOAD = "jupyter_elastic.execution.worker"
#: The scheduler event topic where a worker leaves its last log lines as it retires, so
#: ``%gpu logs`` can show them after scale to zero; and how many lines each worker leaves.
RETIRED_LOGS_TOPIC = "jupyter-elastic-retired-logs"
RETIRED_LOG_LINES = 200
#: The scheduler event topic where the Kubernetes backend says what happened to a cluster's
#: worker pods, read by the kernel of a waiting or failed cell: ``{"kind": "pod-lost", "pod",
#: "node", "ip", "reason"}`` (a worker pod deleted, evicted, preempted or OOM-killed, the
#: reason as the API server gave it), ``{"kind": "scale-blocked", "reason"}`` (a worker pod
#: that cannot be created, scheduled or pulled) and ``{"kind": "scale-ok"}`` when that clears.
POD_EVENTS_TOPIC = "jupyter-elastic-pods"
#: The scheduler event topic where the control plane says why it is stopping a cluster
#: (``{"reason": ...}``), just before its workers go: a kernel whose cell was running there
#: says that, rather than that the worker died.
CLOSING_TOPIC = "jupyter-elastic-cluster-closing"
#: Dask preload of Kubernetes schedulers (the operator's autoscaler asks it).
SCHEDULER_PRELOAD = "jupyter_elastic.backends.kubernetes.scheduler"

#: Every quota refusal of the gateway module (``hub/gateway.py``) starts with this; the
#: gateway backend turns such an answer into ``QuotaExceeded``.
QUOTA_MARK = "jupyter-elastic quota:"
#: The gateway API route (user-authenticated, GET) that reports a user's quota and usage.
QUOTA_ROUTE = "/api/v1/jupyter-elastic/quota"
#: The gateway API route (admins only, GET) with every user's GPU usage (``hub/service.py``).
USAGE_ROUTE = "/api/v1/jupyter-elastic/usage"

#: Start-up phases a cell shows, in order (backends may report finer ones in between).
PHASES = ("queued", "scheduler", "workers", "ready")

#: ``progress(phase, detail)``: a start-up phase and a short human sentence (may be "").
Progress = Callable[[str, str], None]


def notebook_cluster_name(path: str | None, backend: str = "local") -> str | None:
    """The stable cluster name of the notebook at ``path`` on ``backend`` (None without a
    path): a kernel leases its cluster by this name (``JPY_SESSION_NAME``), and the server
    pre-warms the cluster under the same name when the notebook opens."""
    if not path:
        return None
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:24].strip("-") or "notebook"
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    suffix = "" if backend == "local" else f"-{backend[:4]}"
    return f"nb-{slug}-{digest}{suffix}"
