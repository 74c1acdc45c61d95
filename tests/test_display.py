"""What ``%gpu`` reports look like, from the wire format's JSON (no kernel needed)."""

from __future__ import annotations

from jupyter_elastic.kernel.display import status_bundle


def cluster(link: str) -> dict:
    return {"id": "c1", "name": "nb-demo-1234", "backend": "local", "status": "running",
            "workers": 1, "running_cells": 0, "has_gpu": False, "gpus": 0, "idle_seconds": 3.0,
            "idle_timeout": 90.0, "currency": "USD", "usage": {"cost": 0.0012, "idle_seconds": 3.0},
            "dashboard_link": link}


def test_status_links_the_dashboard_with_the_full_url():
    report = {"clusters": [cluster("/user/ann/proxy/35603/status")]}
    bundle = status_bundle(report, None, "http://127.0.0.1:8888/user/ann/")
    assert "dashboard: http://127.0.0.1:8888/user/ann/proxy/35603/status" in bundle["text/plain"]
    # The link goes to the server-relative path: it opens through the browser's own address.
    assert ('<a href="/user/ann/proxy/35603/status" target="_blank" rel="noopener">'
            "http://127.0.0.1:8888/user/ann/proxy/35603/status</a>") in bundle["text/html"]
    assert bundle["text/html"].startswith("<pre>nb-demo-1234 [c1]")


def test_an_absolute_dashboard_link_is_kept_and_text_is_escaped():
    report = {"clusters": [{**cluster("http://127.0.0.1:8787/status"), "name": "<b>x</b>"}]}
    bundle = status_bundle(report, None, None)
    assert "dashboard: http://127.0.0.1:8787/status" in bundle["text/plain"]
    assert '<a href="http://127.0.0.1:8787/status"' in bundle["text/html"]
    assert "&lt;b&gt;x&lt;/b&gt;" in bundle["text/html"] and "<b>" not in bundle["text/html"]
