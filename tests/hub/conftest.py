"""A real JupyterHub on 127.0.0.1 with a real dask-gateway-server behind it.

* JupyterHub (``python -m jupyterhub``) with configurable-http-proxy from npm
  (``node_modules/.bin``, installed by ``jlpm install``), the dummy authenticator (users
  alice, bob and the admin carol, one password), ``SimpleLocalProcessSpawner`` (single-user
  servers are local processes of this user, homes in a temporary directory), groups
  ``students`` (alice) and ``staff`` (bob), its database, cookie secret and runtime files in a
  temporary directory.
* dask-gateway-server with its ``JupyterHubAuthenticator``, registered with the hub as the
  service ``dask-gateway`` (an API token), and dask-gateway's ``UnsafeLocalBackend`` wrapped
  by ``jupyter_elastic.hub.gateway.quota_backend``: students may hold 2 GPUs (T4 only), staff
  4. Workers advertise ``GPU=<n>`` resources, so GPUs are counted without GPUs.
* Each single-user server runs jupyter-elastic with ``backend: gateway`` and no gateway
  credentials: it authenticates with the ``JUPYTERHUB_API_TOKEN`` the hub gives it.

A test service ``test-driver`` (admin scopes) starts servers and makes user tokens, the way
an admin script would; everything a user does goes through the hub's proxy with that
user's own token or login.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from gateway.conftest import GatewayServer, free_port, quota_config, start_gateway, stop_gateway

REPO = Path(__file__).resolve().parents[2]
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
PASSWORD = "hub-password"
USERS = ("alice", "bob", "carol")
ADMIN = "carol"
GATEWAY_SERVICE = "dask-gateway"
#: What a user's token may do: reach servers, the gateway service and their own groups.
USER_SCOPES = ["access:servers!user", "access:services!service=dask-gateway",
               "read:users:groups!user", "read:users:name!user", "users:activity!user"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hub: runs a real JupyterHub and dask-gateway-server on 127.0.0.1")


_HUB_CONFIG = '''
import sys
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///" + {db!r}
c.JupyterHub.cookie_secret_file = {cookie!r}
c.JupyterHub.pid_file = {pid!r}
c.JupyterHub.log_level = "INFO"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = {users!r}
c.Authenticator.admin_users = {{{admin!r}}}
c.JupyterHub.load_groups = {{"students": {{"users": ["alice"]}}, "staff": {{"users": ["bob"]}}}}

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = ["--allow-root",  # CI runs as root; the spawner switches no user
                  "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                  "--LabServerApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = {environment!r}
c.Spawner.server_token_scopes = {scopes!r}

c.JupyterHub.load_roles = [
    # every user may open the usage page: the page itself refuses those who are not admins
    {{"name": "user", "scopes": ["self", "access:services!service={gateway_service}",
                                "access:services!service=jupyter-elastic-hub"]}},
    {{"name": "usage-page", "services": ["jupyter-elastic-hub"],
      "scopes": ["read:users", "list:groups", "read:groups"]}},
    {{"name": "test-driver", "services": ["test-driver"],
      "scopes": ["admin:users", "admin:servers", "tokens", "read:users", "read:groups",
                 "access:servers"]}},
]
c.JupyterHub.services = [
    {{"name": "{gateway_service}", "api_token": {gateway_token!r}, "url": {gateway_url!r},
      "display": False}},
    {{"name": "test-driver", "api_token": {driver_token!r}}},
    {{"name": "jupyter-elastic-hub", "url": "http://127.0.0.1:{usage_port}",
      "command": [sys.executable, "-m", "jupyter_elastic.hub.service"],
      "oauth_no_confirm": True,
      "environment": {{"JUPYTER_ELASTIC_GATEWAY_URL": {gateway_url!r},
                       "JUPYTER_ELASTIC_USAGE_TOKEN": {usage_token!r}}}}},
]
'''

_GATEWAY_HUB_AUTH = '''

# --- authentication by the hub (tests/hub) ---
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
c.JupyterHubAuthenticator.jupyterhub_api_token = {token!r}
c.JupyterHubAuthenticator.jupyterhub_api_url = {api_url!r}
c.JupyterHubAuthenticator.jupyterhub_service_name = "{service}"
c.ElasticUsage.api_token = {usage_token!r}
c.ElasticUsage.gpu_hour_price = 3.6
'''


def _request(url: str, token: str | None = None, method: str = "GET", body: Any = None,
             timeout: float = 30, raw: bool = False) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"token {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as resp:
        body = resp.read()
    if raw:
        return body
    return json.loads(body) if body else None


@dataclass
class Hub:
    """A running JupyterHub, its dask-gateway-server and how to reach them."""

    url: str  # the public (proxy) address, ending in /
    api: str  # the hub's REST API, ending in /hub/api
    driver_token: str
    process: subprocess.Popen[bytes]
    log: Path
    homes: Path
    gateway: GatewayServer
    usage_token: str
    gateway_token: str = ""  # the dask-gateway service's token with the hub
    tokens: dict[str, str] = field(default_factory=dict)

    def admin_api(self, path: str, method: str = "GET", body: Any = None) -> Any:
        return _request(self.api + path, self.driver_token, method, body)

    def token(self, user: str) -> str:
        """An API token of ``user`` with the scopes their single-user server gets (and
        access to the usage page)."""
        if user not in self.tokens:
            scopes = [s.replace("!user", f"!user={user}") for s in USER_SCOPES]
            answer = self.admin_api(f"/users/{user}/tokens", "POST", {
                "scopes": scopes + ["access:services!service=jupyter-elastic-hub"],
                "note": "tests/hub"})
            self.tokens[user] = answer["token"]
        return self.tokens[user]

    def start_server(self, user: str) -> str:
        """Start ``user``'s single-user server (if it is not running); its URL."""
        model = self.admin_api(f"/users/{user}")
        if not (model.get("servers", {}).get("", {}) or {}).get("ready"):
            try:
                self.admin_api(f"/users/{user}/server", "POST", {})
            except urllib.error.HTTPError as exc:
                if exc.code != 400:  # 400: already pending
                    raise
            deadline = time.monotonic() + 120
            while True:
                model = self.admin_api(f"/users/{user}")
                server = model.get("servers", {}).get("", {}) or {}
                if server.get("ready"):
                    break
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{user}'s server did not start:\n{self.log_tail()}")
                time.sleep(0.5)
        return self.url.rstrip("/") + f"/user/{user}/"

    def user_api(self, user: str, path: str, method: str = "GET", body: Any = None,
                 token: str | None = None) -> Any:
        """The jupyter server API of ``user``'s server, through the hub's proxy."""
        return _request(self.url.rstrip("/") + f"/user/{user}/{path.lstrip('/')}",
                        token or self.token(user), method, body)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _wait_up(url: str, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 180  # a loaded CI machine starts the hub slowly
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n"
                        f"{log.read_text(errors='replace')[-4000:]}")
        try:
            _request(url, timeout=2, raw=True)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer within 180 s:\n"
                        f"{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.2)


def user_settings(gateway: GatewayServer) -> dict[str, Any]:
    """jupyter-elastic's settings in every user's home: the hub's gateway, no credentials."""
    return {"jupyter-elastic": {
        "backend": "gateway", "idle-timeout": "10m", "shutdown-after": "20m", "lease-ttl": "5m",
        "max-workers": 1, "worker": {"gpus": 1, "cpus": 1, "memory": "512MiB"},
        "gateway": {"address": gateway.address, "start-timeout": "90s",
                    "connect-timeout": "10s"},
    }}


def start_hub_gateway(tmp: Path, api: str, gateway_token: str, usage_token: str, *,
                      lease: float = 600) -> GatewayServer:
    """A dask-gateway-server with the quota module, authenticating users with the hub at
    ``api`` as its service ``dask-gateway``."""
    return start_gateway(tmp, quota_config(idle=600, lease=lease)
                         + _GATEWAY_HUB_AUTH.format(token=gateway_token, api_url=api,
                                                    service=GATEWAY_SERVICE,
                                                    usage_token=usage_token))


def start_hub(tmp: Path) -> Hub:
    if not CHP.exists():
        pytest.skip(f"{CHP} is missing: run `jlpm install` (package.json's devDependencies)")
    pytest.importorskip("jupyterhub", reason="pip install -e '.[test]' (jupyterhub)")
    gateway_token, driver_token = secrets.token_hex(16), secrets.token_hex(16)
    usage_token = secrets.token_hex(16)
    port, hub_port, proxy_api, usage_port = free_port(), free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{hub_port}/hub/api"
    gateway = start_hub_gateway(tmp / "gateway", api, gateway_token, usage_token)
    homes = tmp / "homes"
    for user in USERS:
        home = homes / user
        (home / ".config" / "dask").mkdir(parents=True)
        (home / ".config" / "dask" / "jupyter-elastic.yaml").write_text(
            yaml.safe_dump(user_settings(gateway)))
        labconfig = home / ".jupyter" / "labconfig"
        labconfig.mkdir(parents=True)  # no news toast: clean screenshots, no network
        (labconfig / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    hub_dir = tmp / "hub"
    hub_dir.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    environment = {"PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
                   "MPLBACKEND": "agg"}
    built = REPO / "jupyter_elastic" / "labextension"
    if (built / "package.json").exists():
        # this checkout's sidebar, ahead of one installed in the environment
        shadow = tmp / "jupyter-path" / "labextensions"
        shadow.mkdir(parents=True)
        (shadow / "jupyter-elastic").symlink_to(built)
        environment["JUPYTER_PATH"] = str(tmp / "jupyter-path")
    config = hub_dir / "jupyterhub_config.py"
    config.write_text(_HUB_CONFIG.format(
        port=port, hub_port=hub_port, db=str(hub_dir / "jupyterhub.sqlite"),
        cookie=str(hub_dir / "cookie_secret"), pid=str(hub_dir / "jupyterhub.pid"),
        chp=str(CHP), proxy_api=proxy_api, proxy_token=secrets.token_hex(16),
        proxy_pid=str(hub_dir / "proxy.pid"), password=PASSWORD, users=set(USERS),
        admin=ADMIN, homes=str(homes), singleuser=os.path.join(bin_dir, "jupyterhub-singleuser"),
        environment=environment, scopes=USER_SCOPES, gateway_service=GATEWAY_SERVICE,
        gateway_token=gateway_token, gateway_url=gateway.address, driver_token=driver_token,
        usage_port=usage_port, usage_token=usage_token,
    ))
    log = hub_dir / "jupyterhub.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTERHUB_", "JUPYTER_ELASTIC_"))}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)],
                                   cwd=str(hub_dir), stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
    hub = Hub(f"http://127.0.0.1:{port}/", api, driver_token, process, log, homes, gateway,
              usage_token, gateway_token)
    try:
        _wait_up(api + "/", process, "JupyterHub", log)
        _wait_up(hub.url + "hub/login", process, "JupyterHub's proxy", log)
        _wait_up(f"http://127.0.0.1:{usage_port}/services/jupyter-elastic-hub/", process,
                 "the jupyter-elastic-hub service", log)
    except BaseException:
        stop_hub(hub)
        raise
    return hub


def stop_hub(hub: Hub) -> None:
    """Stop the hub (it stops the single-user servers and the proxy), then the gateway;
    fail if any process either started is still running."""
    try:
        started = psutil.Process(hub.process.pid).children(recursive=True)
    except psutil.Error:
        started = []
    hub.process.terminate()
    try:
        hub.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait(timeout=10)
    _gone, alive = psutil.wait_procs(started, timeout=20)
    for proc in alive:
        try:
            proc.kill()  # only what this hub started and left behind
        except psutil.Error:
            pass
    stop_gateway(hub.gateway)
    if alive:
        names = []
        for proc in alive:
            try:
                names.append(" ".join(proc.cmdline())[:120])
            except psutil.Error:
                names.append(str(proc.pid))
        pytest.fail(f"the hub left {len(alive)} processes running: {names}")


@pytest.fixture(scope="package")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One JupyterHub (and its gateway) for the tests of tests/hub."""
    running = start_hub(tmp_path_factory.mktemp("hub"))
    try:
        yield running
    finally:
        stop_hub(running)
