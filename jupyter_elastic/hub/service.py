"""``jupyter-elastic-hub``: the hub admins' GPU usage page, a JupyterHub service.

Run it as a managed service of the hub (``c.JupyterHub.services``, ``docs/jupyterhub.md``):
the hub starts it with ``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_SERVICE_URL`` and its API
token. Users log in through the hub (HubOAuth); the page answers only hub admins (everyone
else: 403). Per user and per group it shows GPUs in use now, GPU-seconds and their cost today
and this month, idle GPU-seconds (held while the scheduler ran no task), queued cells and the
GPU headroom left by the quota; ``usage.csv`` exports the same rows.

The numbers are the gateway's: ``GET protocol.USAGE_ROUTE`` of the quota module
(``hub/gateway.py``), read with ``JUPYTER_ELASTIC_USAGE_TOKEN``; groups and the admin flag
come from the hub's API (the service's role needs ``read:users``, ``list:groups`` and
``read:groups``).

Imports: the leaf modules of the package, tornado and jupyterhub (this runs beside the hub).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import urlparse

from tornado import httpclient, ioloop, web
from tornado.escape import xhtml_escape

from ..config import short_text
from ..errors import ConfigError
from ..protocol import USAGE_ROUTE

#: Columns of the page and the CSV, in order: (key, heading).
USER_COLUMNS = (
    ("user", "user"), ("groups", "groups"), ("gpus_now", "GPUs now"),
    ("gpu_seconds_today", "GPU-s today"), ("cost_today", "cost today"),
    ("gpu_seconds_month", "GPU-s month"), ("cost_month", "cost month"),
    ("idle_gpu_seconds_today", "idle GPU-s today"), ("idle_gpu_seconds_month", "idle GPU-s month"),
    ("queued", "queued"), ("gpu_limit", "GPU limit"), ("gpu_headroom", "GPU headroom"),
)
GROUP_COLUMNS = (("group", "group"), ("members", "members")) + USER_COLUMNS[2:10] + (
    ("gpu_headroom", "GPU headroom (sum)"),)
SUMMED = ("gpus_now", "gpu_seconds_today", "cost_today", "gpu_seconds_month", "cost_month",
          "idle_gpu_seconds_today", "idle_gpu_seconds_month", "queued", "gpu_headroom")
VIEWS = ("user", "group")
#: Largest answer read from the gateway or the hub.
MAX_BODY = 16 << 20


class Sources:
    """The gateway's usage report and the hub's users and groups."""

    def __init__(self, gateway_url: str, usage_token: str, hub_api: str, hub_token: str) -> None:
        self.gateway_url, self.usage_token = gateway_url.rstrip("/"), usage_token
        self.hub_api, self.hub_token = hub_api.rstrip("/"), hub_token
        self.http = httpclient.AsyncHTTPClient(max_body_size=MAX_BODY)

    async def _get(self, url: str, token: str) -> Any:
        """GET JSON; a failure is one line (HTTP 502) naming what did not answer."""
        try:
            resp = await self.http.fetch(url, headers={"Authorization": f"token {token}"},
                                         request_timeout=20)
            return json.loads(resp.body)
        except (httpclient.HTTPClientError, OSError, ValueError) as exc:
            where = "the Dask Gateway" if url.startswith(self.gateway_url) else "the hub"
            raise web.HTTPError(502, reason=f"{where} did not answer the usage page: "
                                            f"{' '.join(str(exc).split())[:200]}") from None

    async def usage(self) -> dict[str, Any]:
        return dict(await self._get(self.gateway_url + USAGE_ROUTE, self.usage_token))

    async def is_admin(self, name: str) -> bool:
        model = await self._get(f"{self.hub_api}/users/{url_quote(name, safe='')}",
                                self.hub_token)
        return bool(model.get("admin"))

    async def groups(self) -> dict[str, list[str]]:
        answer = await self._get(f"{self.hub_api}/groups?limit=200", self.hub_token)
        items = answer.get("items", answer) if isinstance(answer, dict) else answer
        return {g["name"]: list(g.get("users") or []) for g in items}


def group_rows(users: list[dict[str, Any]], groups: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Per hub group: the sums over its members the gateway knows (limits are per member)."""
    by_name = {u["user"]: u for u in users}
    rows = []
    for group in sorted(groups):
        members = [by_name[m] for m in groups[group] if m in by_name]
        row: dict[str, Any] = {"group": group, "members": len(groups[group])}
        for key in SUMMED:
            values = [m.get(key) for m in members]
            row[key] = None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]
        rows.append(row)
    return rows


def cell(value: Any) -> str:
    if value is None:
        return "no limit"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1e12 else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


class UsageHandler(web.RequestHandler):
    """Admins only; ``?view=user|group``; ``usage.csv`` is the same rows as CSV."""

    def initialize(self, sources: Sources, csv_out: bool = False) -> None:
        self.sources, self.csv_out = sources, csv_out

    async def rows(self) -> tuple[str, tuple[tuple[str, str], ...], list[dict[str, Any]],
                                  dict[str, Any]]:
        view = self.get_query_argument("view", "user")[:16]
        if view not in VIEWS:
            raise web.HTTPError(400, reason=f"view must be one of {', '.join(VIEWS)}")
        report = await self.sources.usage()
        users = list(report.get("users") or [])
        if view == "group":
            return view, GROUP_COLUMNS, group_rows(users, await self.sources.groups()), report
        return view, USER_COLUMNS, users, report

    async def prepare(self) -> None:  # type: ignore[override]
        user = self.current_user
        if user is None:
            return  # @web.authenticated redirects to the hub's login
        if user.get("kind", "user") != "user" or not await self.sources.is_admin(user["name"]):
            raise web.HTTPError(403, reason="the GPU usage page is for hub admins only")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {self._reason}\n")

    async def get(self) -> None:
        view, columns, rows, report = await self.rows()
        if self.csv_out:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow([key for key, _ in columns])
            for row in rows:
                writer.writerow(["" if row.get(k) is None else
                                 (" ".join(row[k]) if isinstance(row[k], list) else row[k])
                                 for k, _ in columns])
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition",
                            f'attachment; filename="gpu-usage-{view}-{report.get("day")}.csv"')
            self.finish(out.getvalue())
            return
        head = "".join(f"<th>{xhtml_escape(h)}</th>" for _, h in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{xhtml_escape(cell(r.get(k)))}</td>" for k, _ in columns)
            + "</tr>" for r in rows) or f'<tr><td colspan="{len(columns)}">no usage yet</td></tr>'
        other = "group" if view == "user" else "user"
        self.finish(
            "<!doctype html><html><head><meta charset='utf-8'><title>GPU usage</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
            f"<h1>GPU usage by {view}</h1><p>{xhtml_escape(str(report.get('day')))} (UTC); "
            f"{xhtml_escape(cell(report.get('gpu_hour_price')))} "
            f"{xhtml_escape(str(report.get('currency')))} per GPU-hour. "
            f"<a href='?view={other}'>by {other}</a> · "
            f"<a href='usage.csv?view={view}'>CSV</a></p>"
            f"<table id='usage'><tr>{head}</tr>{body}</table></body></html>")


def make_app(sources: Sources, prefix: str) -> web.Application:
    from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated

    class Page(HubOAuthenticated, UsageHandler):
        get = web.authenticated(UsageHandler.get)  # type: ignore[assignment]

    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    return web.Application([
        (prefix, Page, {"sources": sources}),
        (prefix + "usage.csv", Page, {"sources": sources, "csv_out": True}),
        (prefix + "oauth_callback", HubOAuthCallbackHandler),
    ], cookie_secret=os.urandom(32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jupyter-elastic-hub",
        description="The hub admins' GPU usage page (a JupyterHub service)")
    parser.add_argument("--gateway-url", default=os.environ.get("JUPYTER_ELASTIC_GATEWAY_URL"),
                        help="the Dask Gateway's API address (default "
                             "$JUPYTER_ELASTIC_GATEWAY_URL)")
    args = parser.parse_args(argv)
    try:
        gateway = short_text(args.gateway_url or "", "--gateway-url", limit=2000)
        if not gateway:
            raise ConfigError("no gateway address: pass --gateway-url or set "
                              "JUPYTER_ELASTIC_GATEWAY_URL")
        token = os.environ.get("JUPYTER_ELASTIC_USAGE_TOKEN", "")
        if not token:
            raise ConfigError("JUPYTER_ELASTIC_USAGE_TOKEN is not set: give the service the "
                              "token the gateway's c.ElasticUsage.api_token expects")
        missing = [v for v in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN",
                               "JUPYTERHUB_SERVICE_URL") if not os.environ.get(v)]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set: run jupyter-elastic-hub as a "
                              "JupyterHub service (c.JupyterHub.services)")
    except ConfigError as exc:
        print(f"jupyter-elastic-hub: {exc}", file=sys.stderr)
        return 2
    sources = Sources(gateway, token, os.environ["JUPYTERHUB_API_URL"],
                      os.environ["JUPYTERHUB_API_TOKEN"])
    app = make_app(sources, os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app.listen(url.port or 80, url.hostname or "127.0.0.1")
    try:
        ioloop.IOLoop.current().start()
    except KeyboardInterrupt:  # the hub stops its services with SIGINT
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
