"""alice logs into the real hub in Debian's Chromium, her JupyterLab opens, a ``%%gpu`` cell
runs on the hub's gateway, and the Elastic compute sidebar shows her quota (one line, not cut
off at JupyterLab's 250 px panel width). The screenshot goes to ``test-artifacts/``."""

from __future__ import annotations

import os

import pytest
from elastic_testing import wait_for

from .conftest import PASSWORD, REPO

pytestmark = [pytest.mark.hub, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
PANEL_WIDTH = 250
NOTEBOOK = {
    "cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
               "source": ["%%gpu\n", "total = sum(range(10))\n", "print('total', total)"]}],
    "metadata": {"kernelspec": {"name": "python3-elastic", "display_name": "Python 3 (elastic)",
                                "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def _clusters(hub, user: str) -> list[str]:
    from .test_hub_gateway import clusters_of

    return clusters_of(hub, user)


def test_alice_logs_in_runs_a_gpu_cell_and_sees_her_quota(hub):
    # alice's server stays up for the other tests of the package (the hub's fixture checks
    # for leaks when it stops); the kernel and the cluster this test starts are stopped here
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    from playwright.sync_api import expect, sync_playwright

    hub.start_server("alice")
    hub.user_api("alice", "api/contents/hub-demo.ipynb", "PUT",
                 {"type": "notebook", "format": "json", "content": NOTEBOOK})
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 860},
                                       device_scale_factor=2).new_page()
            page.set_default_timeout(90_000)
            try:
                page.goto(hub.url + "hub/login")
                page.fill("input#username_input", "alice")
                page.fill("input#password_input", PASSWORD)
                page.click("input#login_submit, button#login_submit")
                page.wait_for_url("**/user/alice/lab**")
                page.goto(hub.url + "user/alice/lab/tree/hub-demo.ipynb?reset")
                page.wait_for_selector("#jupyterlab-splash", state="detached")
                expect(page.get_by_text("Python 3 (elastic) | Idle")).to_be_visible(
                    timeout=180_000)
                page.evaluate(
                    "window.jupyterapp.commands.execute('notebook:run-all-cells')")
                expect(page.locator(".jp-OutputArea-output", has_text="total 45")) \
                    .to_be_visible(timeout=240_000)

                page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jupyter-elastic-sidebar"]') \
                    .click()
                panel = page.locator("#jupyter-elastic-sidebar")
                expect(panel).to_be_visible(timeout=30_000)
                _set_panel_width(page, PANEL_WIDTH)
                quota = panel.locator(".elastic-Panel-quota")
                expect(quota).to_have_text("GPUs 1 of 2 held (group students)",
                                           timeout=60_000)
                assert "for more ask hub-admins@example.org" in quota.get_attribute("title")
                box, panel_box = quota.bounding_box(), panel.bounding_box()
                assert box["x"] + box["width"] <= panel_box["x"] + panel_box["width"] + 0.5
                assert quota.evaluate("el => el.scrollWidth <= el.clientWidth")
                (REPO / "test-artifacts").mkdir(exist_ok=True)
                panel.screenshot(path=str(REPO / "test-artifacts" / "hub-sidebar-quota.png"))
            except BaseException:
                (REPO / "test-artifacts").mkdir(exist_ok=True)
                page.screenshot(path=str(REPO / "test-artifacts" / "failure-hub-browser.png"))
                raise
            finally:
                # stop the cluster and the kernel the page started, through alice's server
                for cluster in hub.user_api("alice", "jupyter-elastic/api/clusters")["clusters"]:
                    hub.user_api("alice", f"jupyter-elastic/api/clusters/{cluster['id']}",
                                 "DELETE")
                for kernel in hub.user_api("alice", "api/kernels"):
                    hub.user_api("alice", f"api/kernels/{kernel['id']}", "DELETE")
        finally:
            browser.close()
    wait_for(lambda: _clusters(hub, "alice") == [], timeout=90,
             what="alice's cluster to stop")


def _set_panel_width(page, width: int) -> None:
    """Drag the handle between the left area and the main area until the panel is ``width``."""
    panel = page.locator("#jupyter-elastic-sidebar")
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    for _ in range(3):
        box = handle.bounding_box()
        delta = width - panel.bounding_box()["width"]
        if abs(delta) < 2:
            return
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + delta, y, steps=5)
        page.mouse.up()
