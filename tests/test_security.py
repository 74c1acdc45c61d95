"""Safe on a shared machine: what another local user (or another kernel) cannot do.

The first tests run a real local cluster: a Dask client without the cluster's TLS
credentials is refused by its scheduler and workers, so it can run nothing there
(``run_on_scheduler`` included), and the credentials appear in no report. The rest use
the in-memory backend of ``test_manager.py``: lease secrets, the per-user cluster cap,
and lease expiry under a running cell.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from jupyter_elastic.config import load_settings
from jupyter_elastic.kernel.session import client_security


def _write_marker(path: str) -> str:
    with open(path, "w") as f:
        f.write("ran")
    return "ran"


def _refused(address: str, marker: str, **client_kwargs) -> BaseException:
    """Try to run code on the scheduler at ``address``; the error that refused it."""
    from distributed import Client

    try:
        with Client(address, set_as_default=False, timeout="3s", **client_kwargs) as client:
            client.run_on_scheduler(_write_marker, marker)
    except Exception as exc:  # what refused it differs: no TLS context, bad certificate, ...
        return exc
    pytest.fail(f"a client without the cluster's credentials ran code on {address}")


def test_local_cluster_refuses_clients_without_its_credentials(tmp_path, no_leaked_processes):
    from distributed import Client
    from distributed.security import Security

    from jupyter_elastic.controlplane.embedded import EmbeddedControlPlane

    settings = load_settings({"idle-timeout": "5s", "max-workers": 1,
                              "worker": {"gpus": 0, "cpus": 1, "memory": "512MiB"}})
    cp = EmbeddedControlPlane(settings)
    try:
        lease = cp.acquire("kernel-a")
        address = lease["scheduler_address"]
        creds = lease["client"]
        assert address.startswith("tls://127.0.0.1:")
        assert creds["kind"] == "tls" and "PRIVATE KEY" in creds["tls_key"]
        marker = tmp_path / "marker"

        # The owner's kernel (the lease's credentials) gets a worker and runs code.
        with Client(address, set_as_default=False, timeout="30s",
                    security=client_security(creds)) as client:
            cp.cell_started(lease["cluster_id"])
            assert client.submit(lambda: 6 * 7, resources={"CELL": 1}).result(timeout=60) == 42
            worker = next(iter(client.scheduler_info()["workers"]))
            assert worker.startswith("tls://127.0.0.1:")

            # Anyone else: no credentials, plain TCP, or credentials of their own making.
            _refused(address, str(marker))
            _refused(address.replace("tls://", "tcp://"), str(marker))
            _refused(address, str(marker), security=Security.temporary())
            _refused(worker, str(marker), security=Security.temporary())
            assert not marker.exists(), "run_on_scheduler ran without the credentials"
            assert client.run_on_scheduler(_write_marker, str(marker)) == "ran"  # the owner can

        # The credentials are handed out in the lease only: no report, repr or row has them.
        scheduler = cp.manager.records()[0].handle.cluster.scheduler
        reports = json.dumps([cp.clusters(details=True), cp.history(), cp.usage(),
                              repr(cp.manager.records()[0]), repr(scheduler)])
        for secret in (creds["tls_key"], creds["tls_cert"]):
            assert secret.splitlines()[1] not in reports
        assert lease["dashboard_link"] is None  # off by default on the local backend

        # The scheduler's HTTP port answers /health only: no JSON, info or proxy routes.
        port = scheduler.http_server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.read() == b"ok"
        for path in ("json/index.html", "info/main/workers.html", "status", "metrics"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10)
            assert info.value.code == 404, path
    finally:
        cp.close()
