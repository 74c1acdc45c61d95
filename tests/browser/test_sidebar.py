"""The Elastic compute sidebar in a real JupyterLab, driven by headless Chromium (Playwright).

The test starts ``jupyter lab`` on 127.0.0.1 with its own token and temporary Jupyter
directories, runs a ``%%gpu`` cell inserted with the palette command, and checks that the
cluster (named after its notebook) and its history row appear in the panel, that scaling
to 2 workers from the panel shows two workers, that the timeline draws the workers, each
cell and the idle stretch, that no text of a cluster card, the timeline or the history is
cut off at JupyterLab's default 250 px panel width, and that stopping (after the
confirmation dialog) removes the cluster. Screenshots go to ``test-artifacts/`` (light and
dark theme, panel 250 px wide).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
#: This checkout's built extension (``jlpm build:prod``): the lab under test loads it in
#: place of an installed copy, so the test checks the sidebar of the code it runs with.
BUILT = REPO / "jupyter_elastic" / "labextension"
PANEL_WIDTH = 250  # JupyterLab's default sidebar width
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(url: str, token: str, method: str = "GET") -> object:
    request = urllib.request.Request(url, method=method)
    request.add_header("Authorization", f"token {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


class Lab:
    """A running ``jupyter lab`` and how to reach it."""

    def __init__(self, process: subprocess.Popen, port: int, token: str, root: Path, log: Path):
        self.process, self.port, self.token, self.root, self.log = process, port, token, root, log
        self.url = f"http://127.0.0.1:{port}/"

    def api(self, path: str, method: str = "GET") -> object:
        return _api(self.url + path, self.token, method)


@pytest.fixture
def lab(tmp_path: Path, no_leaked_processes) -> Lab:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    root = tmp_path / "notebooks"
    root.mkdir()
    (root / "demo.ipynb").write_text(
        json.dumps(
            {
                "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Demo"]}],
                "metadata": {
                    "kernelspec": {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    dirs = {name: tmp_path / name for name in ("config", "data", "settings",
                                               "workspaces", "dask", "ipython")}
    for path in dirs.values():
        path.mkdir()
    # The kernels listen on Unix sockets named after their connection files, so no other
    # process can take their ports between jupyter_client picking and the kernel binding
    # them. A socket's path is limited to 107 bytes: the runtime directory is a short one
    # in the suite's own temporary root (conftest.py), not under tmp_path.
    dirs["runtime"] = Path(tempfile.mkdtemp(
        prefix="lab-", dir=os.path.dirname(os.environ["JUPYTER_RUNTIME_DIR"])))
    # No news toast, no update check: clean screenshots and no network.
    (dirs["config"] / "labconfig").mkdir()
    (dirs["config"] / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    extensions = []  # extra_labextensions_path comes before the installed copies
    if (BUILT / "package.json").is_file():
        (dirs["data"] / "labextensions").mkdir()
        (dirs["data"] / "labextensions" / "jupyter-elastic").symlink_to(BUILT)
        extensions = [f"--LabApp.extra_labextensions_path={dirs['data'] / 'labextensions'}"]
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "DASK_CONFIG": str(dirs["dask"]),
        "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "10m",
        "DASK_JUPYTER_ELASTIC__MAX_WORKERS": "2",
        "DASK_JUPYTER_ELASTIC__WORKER__CPUS": "1",
        "DASK_JUPYTER_ELASTIC__WORKER__GPUS": "0",  # two CPU workers, also on a 1-GPU machine
        "DASK_JUPYTER_ELASTIC__WORKER__MEMORY": "1GiB",
        "DASK_JUPYTER_ELASTIC__DASHBOARD": "true",  # the panel links to it (off by default)
    }
    for key in ("JUPYTER_ELASTIC_SERVER_URL", "JUPYTER_ELASTIC_TOKEN"):
        env.pop(key, None)
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
                "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
                f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True",
                "--LabServerApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.news_url=None", "--KernelManager.transport=ipc", *extensions,
            ],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root,
        )
    lab = Lab(process, port, token, root, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                lab.api("api/status")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("jupyter lab did not start:\n" + log.read_text()[-3000:])
                time.sleep(0.2)
        yield lab
    finally:
        try:
            lab.api("api/shutdown", method="POST")
        except OSError:
            pass
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def page(lab: Lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 860}, device_scale_factor=2
            )
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{lab.url}lab/tree/demo.ipynb?reset&token={lab.token}")
            page.wait_for_selector("#jupyterlab-splash", state="detached")
            yield page
        finally:
            browser.close()


def _panel_width(page) -> float:
    return page.locator("#jupyter-elastic-sidebar").bounding_box()["width"]


def _set_panel_width(page, width: int) -> None:
    """Drag the handle between the left area and the main area until the panel is ``width``."""
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    for _ in range(3):
        box = handle.bounding_box()
        delta = width - _panel_width(page)
        if abs(delta) < 2:
            return
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + delta, y, steps=5)
        page.mouse.up()


#: Text the panel must show whole at PANEL_WIDTH (each is a block or flex item, so its
#: clientWidth is the room it has).
UNCUT = ", ".join(
    "#jupyter-elastic-sidebar " + selector
    for selector in (
        ".elastic-ClusterCard-head > *", ".elastic-ClusterCard-meta",
        ".elastic-ClusterCard-stats dt", ".elastic-ClusterCard-stats dd",
        ".elastic-ClusterCard-idleRow > span:not(.elastic-ClusterCard-idleBar)",
        ".elastic-Timeline-caption > *", ".elastic-Timeline-key",
        ".elastic-Timeline-axisLabels > *",
        ".elastic-History-row span", ".elastic-Panel-title", ".elastic-Panel",
        ".elastic-Jobs-main > *", ".elastic-Jobs-detail > *", ".elastic-Jobs-actions > *",
    )
)


def _cut_off_text(page) -> tuple[int, list[str]]:
    """How many elements were checked, and those whose text overflows their box, or that
    reach past the panel's right edge (every element of the panel is checked for that)."""
    return page.evaluate(
        """(selector) => {
            const panel = document.querySelector('#jupyter-elastic-sidebar')
                .getBoundingClientRect();
            const text = new Set(document.querySelectorAll(selector));
            const checked = [...text, ...document.querySelectorAll('.elastic-Panel *')];
            // the nearest box between the element and the panel that clips what overflows it
            const clipper = el => {
                for (let p = el.parentElement; p && p.id !== 'jupyter-elastic-sidebar';
                     p = p.parentElement) {
                    if (getComputedStyle(p).overflowX !== 'visible') return p;
                }
                return null;
            };
            const cut = checked.filter(el => {
                const box = el.getBoundingClientRect();
                const empty = el.textContent.trim() === '';  // e.g. no peak to label yet
                const clip = text.has(el) && !empty ? clipper(el) : null;
                return (text.has(el) && (el.scrollWidth > el.clientWidth
                                         || (el.clientWidth === 0 && !empty)))
                    || (clip !== null && box.right > clip.getBoundingClientRect().right + 0.5)
                    || box.right > panel.right + 0.5;
            }).map(el => `${el.getAttribute('class') || el.tagName}: "${el.textContent}" `
                       + `(${el.scrollWidth} > ${el.clientWidth})`);
            return [checked.length, cut];
        }""",
        UNCUT,
    )


def _shoot(page, name: str, selector: str = "#jupyter-elastic-sidebar") -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.locator(selector).screenshot(path=str(path))
    return path


@pytest.fixture
def shot_on_failure(page, request):
    """Keep a full-page screenshot of a failing test in test-artifacts/."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"failure-{request.node.name}.png"))


def test_sidebar_follows_a_gpu_cell_scales_and_stops(lab: Lab, page, shot_on_failure) -> None:
    from playwright.sync_api import expect

    # Open the panel (left area tab) and give it the width the README promises.
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jupyter-elastic-sidebar"]').click()
    panel = page.locator("#jupyter-elastic-sidebar")
    expect(panel).to_be_visible()
    expect(panel.locator(".elastic-Panel-title")).to_have_text("Elastic compute")
    expect(panel.locator(".elastic-Panel-empty").first).to_contain_text("No clusters")
    _set_panel_width(page, PANEL_WIDTH)
    assert abs(_panel_width(page) - PANEL_WIDTH) < 4

    # The settings schema is served, so the Settings Editor can show it.
    schema = lab.api("lab/api/settings/jupyter-elastic:plugin")["schema"]
    assert set(schema["properties"]) == {"refreshInterval", "defaultBackend"}

    # Insert a %%gpu cell from the command palette; it also adds %load_ext once.
    # Wait for the notebook's kernel, then focus the notebook (it becomes the current one).
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible()
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.keyboard.press("Escape")
    page.evaluate("window.jupyterapp.commands.execute('apputils:activate-command-palette')")
    palette = page.locator("#modal-command-palette input")
    palette.fill("Insert %%gpu")
    item = page.locator(
        "#modal-command-palette .lm-CommandPalette-item:not(.lm-mod-disabled)",
        has_text="Insert %%gpu Cell",
    )
    item.click()
    cells = page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor")
    expect(cells).to_have_count(3)
    expect(cells.nth(0)).to_contain_text("%load_ext jupyter_elastic")
    expect(cells.nth(2)).to_contain_text("%%gpu")
    cells.nth(2).click()
    page.keyboard.press("Control+End")
    page.keyboard.type("import numpy\ntotal = int(numpy.arange(10).sum())\nprint('total', total)")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    expect(page.locator(".jp-OutputArea-output", has_text="total 45")).to_be_visible(
        timeout=180_000
    )

    # The kernel's cluster and the cell's history row show up without a reload; the
    # cluster is called after its notebook, with its own name on hover.
    card = panel.locator(".elastic-ClusterCard")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-status", "running")
    expect(card.locator(".elastic-ClusterCard-meta")).to_contain_text("local")
    history = panel.locator(".elastic-History-row")
    expect(history).to_have_count(1)
    expect(history).to_contain_text("[")
    expect(history.locator(".elastic-History-notebook")).to_have_text("demo.ipynb")
    expect(history.locator(".elastic-History-usage")).to_contain_text("CPU·s")
    cluster_id = card.get_attribute("data-cluster-id")
    clusters = lab.api("jupyter-elastic/api/clusters")["clusters"]
    assert [c["id"] for c in clusters] == [cluster_id]
    name = card.locator(".elastic-ClusterCard-name")
    expect(name).to_have_text("demo.ipynb")
    assert clusters[0]["name"] in name.get_attribute("title")

    # The timeline draws the workers and a tick for the cell.
    timeline = panel.locator(".elastic-Timeline")
    expect(timeline.locator(".elastic-Timeline-chart")).to_be_visible()
    expect(timeline.locator(".elastic-Timeline-cell")).to_have_count(1)
    expect(timeline.locator(".elastic-Timeline-workers")).to_have_count(1)
    assert timeline.locator(".elastic-Timeline-workers").get_attribute("d").startswith("M")
    samples = lab.api("jupyter-elastic/api/timeline")["samples"]
    assert max(s["workers"] for s in samples) >= 1

    # Scale to two workers from the panel.
    card.get_by_label("Number of workers").fill("2")
    card.get_by_role("button", name="Scale").click()
    expect(card.locator(".elastic-WorkerList-item")).to_have_count(2, timeout=120_000)
    expect(card.locator(".elastic-ClusterCard-workerCount")).to_have_text("2")
    assert clusters[0]["has_gpu"] is False
    expect(card.locator(".elastic-WorkerList-gpu").first).to_have_text("no GPU")
    link = clusters[0]["dashboard_link"]
    assert link.startswith("/proxy/") and link.endswith("/status")
    expect(card.locator(".elastic-ClusterCard-dashboard")).to_have_attribute("href", link)

    # The dashboard link answers through the server.
    dashboard = page.request.get(lab.url.rstrip("/") + link)
    assert dashboard.status == 200

    # Two more cells on the two workers: three rows, three ticks, one money format.
    for count in (2, 3):
        cells.nth(2).click()
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell')")
        expect(history).to_have_count(count, timeout=120_000)
    expect(timeline.locator(".elastic-Timeline-cell")).to_have_count(3)
    for cost in history.locator(".elastic-History-cost").all_text_contents():
        assert re.fullmatch(r"<?\$\d+\.\d+", cost), cost
    # Workers held with no cell running: the timeline shades the stretch as idle.
    expect(timeline.locator(".elastic-Timeline-idle").first).to_be_attached(timeout=60_000)
    expect(timeline.locator(".elastic-Timeline-cost")).to_contain_text("$")

    # At 250 px nothing in the card, the timeline or the history is cut off.
    assert abs(_panel_width(page) - PANEL_WIDTH) < 4
    checked, cut = _cut_off_text(page)
    assert checked >= 20 and not cut, cut

    _shoot(page, "sidebar-light.png")
    # The README pictures: the panel's content only (docs/sidebar.png and
    # docs/sidebar-dark.png are copied from sidebar-readme.png and sidebar-readme-dark.png).
    _shoot(page, "sidebar-readme.png", "#jupyter-elastic-sidebar .elastic-Panel")
    page.evaluate(
        "window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})"
    )
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false")
    page.wait_for_selector("#jupyterlab-splash", state="detached")  # shown while it switches
    _shoot(page, "sidebar-dark.png")
    _shoot(page, "sidebar-readme-dark.png", "#jupyter-elastic-sidebar .elastic-Panel")
    checked, cut = _cut_off_text(page)
    assert checked >= 20 and not cut, cut
    page.evaluate(
        "window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})"
    )
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "true")
    page.wait_for_selector("#jupyterlab-splash", state="detached")

    # Stop asks first; cancelling keeps the cluster, confirming removes it.
    card.get_by_role("button", name="Stop cluster").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Stop cluster?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    assert [c["id"] for c in lab.api("jupyter-elastic/api/clusters")["clusters"]] == [cluster_id]
    card.get_by_role("button", name="Stop cluster").click()
    page.locator(".jp-Dialog").get_by_role("button", name="Stop").click()
    expect(card).to_have_count(0)
    expect(panel.locator(".elastic-Panel-empty").first).to_contain_text("No clusters")
    assert lab.api("jupyter-elastic/api/clusters") == {"clusters": []}
    # The history survives the cluster.
    expect(history).to_have_count(3)


def _notebook(path: Path, *sources: str) -> None:
    path.write_text(json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "source": source, "outputs": [],
                   "execution_count": None} for source in sources],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }))


def _job(lab: Lab, name: str) -> dict:
    return next(j for j in lab.api("jupyter-elastic/api/jobs")["jobs"] if j["name"] == name)


def test_jobs_section_shows_cancels_and_attaches_detached_jobs(lab: Lab, page,
                                                               shot_on_failure) -> None:
    """The sidebar's Detached jobs section with two detached cells of a real kernel: state,
    elapsed and cost at 250 px in both themes, Cancel stops one, and "Insert attach cell"
    adds a ``%gpu attach`` cell that binds the other's results."""
    from playwright.sync_api import expect

    gate = lab.root / "gate"
    wait = f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\n"
    _notebook(lab.root / "jobs.ipynb", "%load_ext jupyter_elastic",
              "%%gpu --detach --name nightly-fit\n" + wait + "score = 0.5 + 0.25",
              "%%gpu --detach --name sweep\n" + wait + "best = 1")
    page.goto(f"{lab.url}lab/tree/jobs.ipynb?reset&token={lab.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached")
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jupyter-elastic-sidebar"]').click()
    panel = page.locator("#jupyter-elastic-sidebar")
    expect(panel).to_be_visible()
    _set_panel_width(page, PANEL_WIDTH)
    section = panel.locator(".elastic-JobsSection")
    expect(section.locator(".elastic-Panel-empty")).to_contain_text("No detached jobs")

    expect(page.get_by_text("Python 3 (ipykernel) | Idle").first).to_be_visible(timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    rows = section.locator(".elastic-Jobs-row")
    expect(rows).to_have_count(2, timeout=60_000)
    fit, sweep = rows.filter(has_text="nightly-fit"), rows.filter(has_text="sweep")
    for row in (fit, sweep):
        expect(row).to_have_attribute("data-state", "running", timeout=180_000)
        expect(row.locator(".elastic-Jobs-notebook")).to_have_text("jobs.ipynb")
        expect(row.locator(".elastic-Jobs-state")).to_have_text("running")
        expect(row.locator(".elastic-Jobs-elapsed")).to_have_text(re.compile(r"^\d"))
        expect(row.locator(".elastic-Jobs-cost")).to_have_text("–")  # priced when it ends
        expect(row.get_by_role("button", name="Cancel")).to_be_visible()
        expect(row.get_by_role("button", name="Insert attach cell")).to_be_visible()

    # At 250 px nothing of the section is cut off or reaches past the panel, in both themes.
    assert abs(_panel_width(page) - PANEL_WIDTH) < 4
    checked, cut = _cut_off_text(page)
    assert checked >= 20 and not cut, cut
    _shoot(page, "jobs-light.png", "#jupyter-elastic-sidebar .elastic-JobsSection")
    page.evaluate(
        "window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})"
    )
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false")
    page.wait_for_selector("#jupyterlab-splash", state="detached")
    _shoot(page, "jobs-dark.png", "#jupyter-elastic-sidebar .elastic-JobsSection")
    checked, cut = _cut_off_text(page)
    assert checked >= 20 and not cut, cut
    page.evaluate(
        "window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})"
    )
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "true")
    page.wait_for_selector("#jupyterlab-splash", state="detached")

    # Cancel stops the sweep (its supervisor interrupts the cell); its button goes away.
    sweep.get_by_role("button", name="Cancel").click()
    expect(sweep).to_have_attribute("data-state", "cancelled", timeout=120_000)
    expect(sweep.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(sweep.get_by_role("button", name="Insert attach cell")).to_have_count(0)
    assert _job(lab, "sweep")["state"] == "cancelled"

    # The fit finishes; "Insert attach cell" adds the cell that binds its results.
    gate.write_text("go")
    expect(fit).to_have_attribute("data-state", "done", timeout=120_000)
    expect(fit.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(fit.locator(".elastic-Jobs-cost")).to_have_text(re.compile(r"^<?\$\d"))
    expect(fit.locator(".elastic-Jobs-state")).to_have_text("done")
    fit_id = _job(lab, "nightly-fit")["id"]
    cells = page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor")
    cells.nth(2).click()
    page.keyboard.press("Escape")
    fit.get_by_role("button", name="Insert attach cell").click()
    expect(cells).to_have_count(4)
    expect(cells.nth(3)).to_have_text(f"%gpu attach {fit_id}")
    cells.nth(3).click()
    page.keyboard.press("Control+End")
    page.keyboard.type("\nprint('score is', score)")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell')")
    expect(page.locator(".jp-OutputArea-output", has_text="score is 0.75")).to_be_visible(
        timeout=120_000
    )
    _shoot(page, "jobs-done-light.png", "#jupyter-elastic-sidebar .elastic-JobsSection")
