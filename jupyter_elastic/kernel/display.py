"""What a ``%%gpu`` cell and ``%gpu`` show: start-up phases, streamed output, reports.

Everything here runs on the cell's own thread in the kernel (ipykernel drops output written
from other threads). Reports take the wire format's JSON (``models.py``) and turn it into
text a person reads at a glance.
"""

from __future__ import annotations

import html
import sys
import time
import urllib.parse
from typing import Any

from ..config import Settings
from ..protocol import PHASES


class PhaseDisplay:
    """One updating line in the cell while a cluster or worker starts (never for warm cells)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self._handle: Any = None
        self.phase = ""
        self.shown = False
        self.got = ""  # "got GPU type B" once a --gpu-type list found its type: kept on the line

    def show(self, phase: str, detail: str = "") -> None:
        from IPython.display import display

        if detail.startswith("got GPU type "):
            self.got = detail
        elif self.got and phase == "ready":
            detail = f"{detail}; {self.got}" if detail else self.got
        self.phase = phase
        elapsed = time.monotonic() - self.start
        steps = PHASES
        marks = []
        for step in steps:
            if step == phase:
                marks.append(f"[{step}]")
            else:
                marks.append(step)
        text = f"jupyter-elastic: {' → '.join(marks)}  {elapsed:.1f} s" + (f"  ({detail})" if detail else "")
        bundle = {"text/plain": text}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        self.shown = True


def render_event(event: dict[str, Any]) -> None:
    """Show one output event in the running cell (called on the cell's thread)."""
    kind = event["kind"]
    if kind == "stream":
        stream = sys.stderr if event.get("name") == "stderr" else sys.stdout
        stream.write(event["text"])
        stream.flush()
    elif kind == "display":
        from IPython.display import publish_display_data

        sys.stdout.flush()
        publish_display_data(event["data"], event.get("metadata") or {})
    elif kind == "clear":
        from IPython.display import clear_output

        clear_output(wait=bool(event.get("wait")))


def money(value: float, currency: str) -> str:
    return f"{value:.4f} {currency}"


def status_text(report: dict[str, Any], lease: dict[str, Any] | None,
                server_url: str | None = None) -> str:
    clusters = report["clusters"]
    if not clusters:
        return "no clusters running; a %%gpu cell starts one on demand"
    lines = []
    for c in clusters:
        mine = " (this notebook)" if lease and lease["cluster_id"] == c["id"] else ""
        gpu_note = f"{c['gpus']} GPU(s)" if c["has_gpu"] else "no GPU found: CPU workers run the NumPy path"
        idle = c["idle_seconds"]
        if c["workers"] and not c["running_cells"]:
            left = max(0.0, c["idle_timeout"] - idle)
            countdown = f"idle {idle:.0f}s, scale to zero in {left:.0f}s"
        elif c["running_cells"]:
            countdown = f"{c['running_cells']} cell(s) running"
        else:
            countdown = "no workers (scaled to zero)"
        usage = c["usage"]
        lines.append(
            f"{c['name']} [{c['id']}]{mine}: {c['backend']}, {c['status']}, {c['workers']} worker(s), "
            f"{gpu_note}; {countdown}; cost so far {money(usage['cost'], c.get('currency', 'USD'))} "
            f"(idle {usage['idle_seconds']:.0f} worker-s)"
        )
        for w in c.get("worker_details", []):
            gpu = f"{w['gpus']:g} GPU" if w["gpus"] else "no GPU"
            util = f", GPU {w['gpu_utilization']}%" if w.get("gpu_utilization") is not None else ""
            lines.append(f"    {w['name']}: {gpu}, memory {w['memory'] / 2**30:.1f} GiB{util}")
        if c.get("dashboard_link"):
            lines.append(f"    dashboard: {dashboard_url(c['dashboard_link'], server_url)}")
    return "\n".join(lines)


def dashboard_url(link: str, server_url: str | None) -> str:
    """The dashboard's full URL: a server-relative link (``/proxy/35603/status``, through
    the Jupyter server's proxy) joined to the server's origin; other links as they are."""
    if link.startswith("/") and server_url:
        parts = urllib.parse.urlsplit(server_url)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}{link}"
    return link


def status_bundle(report: dict[str, Any], lease: dict[str, Any] | None,
                  server_url: str | None = None) -> dict[str, str]:
    """``%gpu status`` as a display bundle: plain text with the dashboards' full URLs, and
    HTML in which each dashboard is a link (to the server-relative path where there is one,
    so it opens through whatever address the browser uses for this server)."""
    text = status_text(report, lease, server_url)
    rows = []
    links = {dashboard_url(c["dashboard_link"], server_url): c["dashboard_link"]
             for c in report["clusters"] if c.get("dashboard_link")}
    for line in text.splitlines():
        head, _, url = line.partition("    dashboard: ")
        if not head and url in links:
            href = html.escape(links[url], quote=True)
            rows.append(f'    dashboard: <a href="{href}" target="_blank" rel="noopener">{html.escape(url)}</a>')
        else:
            rows.append(html.escape(line))
    return {"text/plain": text, "text/html": "<pre>" + "\n".join(rows) + "</pre>"}


def history_text(rows: list[dict[str, Any]], currency: str,
                 clusters: list[dict[str, Any]] | None = None, now: float | None = None) -> str:
    """The history table, then per notebook what it was billed against an always-on worker
    (``clusters``: the live clusters' JSON, whose metered usage includes idle seconds)."""
    if not rows:
        return "no %%gpu cells have run yet"
    return _history_table(rows, currency) + "\n" + "\n".join(savings_lines(rows, clusters or [], now))


def savings_lines(rows: list[dict[str, Any]], clusters: list[dict[str, Any]],
                  now: float | None = None) -> list[str]:
    """Per notebook: seconds billed so far vs what one always-on worker would have held
    since the notebook's first cell (``saved so far``).

    Billed is the metered usage of the notebook's live clusters (idle worker time included);
    a cluster that is gone counts only what its cells held, and the line says so.
    """
    import datetime as _dt

    now = time.time() if now is None else now
    live = {c["id"]: c for c in clusters}
    by_notebook: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("device") == "local":
            continue  # --local cells ran in the kernel: no worker to compare with
        by_notebook.setdefault(r.get("notebook") or "this kernel", []).append(r)
    lines = []
    for notebook, mine in by_notebook.items():
        gpu = any(r.get("device") == "gpu" for r in mine)
        unit, key = ("GPU-s", "gpu_seconds") if gpu else ("CPU-s", "cpu_seconds")
        per_worker = max((float(r.get("gpus" if gpu else "cpus") or 0.0) for r in mine), default=0.0) or 1.0
        first = min(_dt.datetime.fromisoformat(r["started"]).timestamp() for r in mine)
        always_on = max(0.0, now - first) * per_worker
        held = sum(float(r.get(key) or 0.0) for r in mine)
        billed, gone = 0.0, False
        for cluster_id in {r.get("cluster_id") for r in mine}:
            if cluster_id in live:
                billed += float(live[cluster_id]["usage"].get(key, 0.0))
            else:
                gone = True
                billed += sum(float(r.get(key) or 0.0) for r in mine if r.get("cluster_id") == cluster_id)
        saved = 100.0 * (1.0 - billed / always_on) if always_on > 0 else 0.0
        lines.append(
            f"{notebook}: {billed:.1f} {unit} billed (cells held {held:.1f}) vs {always_on:.1f} "
            f"on an always-on worker since its first cell; saved so far: {saved:.0f}%"
            + (" (stopped clusters: their cells' seconds only)" if gone else "")
        )
    return lines


def _history_table(rows: list[dict[str, Any]], currency: str) -> str:
    header = f"{'cell':>5} {'started':25} {'where':10} {'seconds':>8} {'GPU-s':>8} {'cost':>12}  status"
    lines = [header]
    for r in rows:
        cell = "" if r.get("cell") is None else str(r["cell"])
        lines.append(
            f"{cell:>5} {r['started']:25} {r.get('device', ''):10} {r['seconds']:8.3f} "
            f"{r['gpu_seconds']:8.3f} {money(r['cost'], currency):>12}  {r['status']}"
            + (f" ({r['error']})" if r.get("error") else "")
        )
    total = sum(r["cost"] for r in rows)
    lines.append(f"total cost of {len(rows)} cell(s): {money(total, currency)}")
    return "\n".join(lines)


def config_text(settings: Settings) -> str:
    s = settings
    rows = [
        ("backend", s.backend),
        ("idle-timeout", f"{s.idle_timeout:g}s"),
        ("shutdown-after", f"{s.shutdown_after:g}s"),
        ("lease-ttl", f"{s.lease_ttl:g}s"),
        ("min-workers", s.min_workers),
        ("max-workers", s.max_workers),
        ("interrupt-grace", f"{s.interrupt_grace:g}s"),
        ("worker.gpus", s.worker.gpus),
        ("worker.cpus", s.worker.cpus),
        ("worker.memory", f"{s.worker.memory / 2**30:g}GiB"),
        ("pricing.gpu-hour", s.pricing.gpu_hour),
        ("pricing.cpu-hour", s.pricing.cpu_hour),
        ("pricing.currency", s.pricing.currency),
    ]
    return "\n".join(f"{k:18} {v}" for k, v in rows)
