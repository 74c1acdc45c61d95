"""``jupyter-elastic`` CLI: render, bad input, and status/stop against a server double."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from jupyter_elastic.backends.kubernetes.manifests import validate_manifest
from jupyter_elastic.cli import main


def test_render_prints_valid_manifests(capsys):
    rc = main(["render", "--gpus", "2", "--gpu-type", "NVIDIA-A100", "--image", "img:2",
               "--namespace", "team-a", "--max-workers", "3", "--name", "feature-run"])
    assert rc == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["Secret", "DaskCluster", "DaskAutoscaler"]
    for d in docs:
        validate_manifest(d)
    secret, cluster = docs[0], docs[1]
    # the TLS Secret's credentials are made when a cluster starts, never rendered
    assert secret["metadata"]["name"] == "feature-run-tls" and "PRIVATE" not in yaml.safe_dump(secret)
    assert cluster["metadata"]["name"] == "feature-run" and cluster["metadata"]["namespace"] == "team-a"
    worker = cluster["spec"]["worker"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert worker["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100"}
    assert docs[2]["spec"]["maximum"] == 3


def test_render_defaults_to_the_notebooks_image_and_the_readme_shows_both(capsys, monkeypatch):
    monkeypatch.setenv("JUPYTER_IMAGE_SPEC", "registry.example/notebook:7")
    assert main(["render", "--backend", "kubernetes", "--gpus", "2"]) == 0
    cluster = list(yaml.safe_load_all(capsys.readouterr().out))[1]
    assert cluster["spec"]["worker"]["spec"]["containers"][0]["image"] == "registry.example/notebook:7"
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "jupyter-elastic render --backend kubernetes --gpus 2 --image " in readme
    assert "JUPYTER_IMAGE_SPEC" in readme


@pytest.mark.parametrize("argv, expected", [
    (["render", "--gpus", "-1", "--image", "i"], "--gpus must be 0 or more"),
    (["render", "--gpus", "1.5", "--image", "i"], "whole number of GPUs"),
    (["render", "--max-workers", "0", "--image", "i"], "must be a whole number >= 1"),
    (["render", "--name", "Bad_Name", "--image", "i"], "cluster name 'Bad_Name' is not valid"),
    (["render", "--backend", "gateway"], "invalid choice: 'gateway'"),
    (["render", "--backend", "kubernetes", "--gpus", "2"], "pass --image IMAGE"),
    (["render", "--backend", "kubernetes", "--gpus", "2"], "set JUPYTER_IMAGE_SPEC"),
    (["stop"], "give the id or name of the cluster to stop, or --all"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_without_traceback(argv, expected, capsys, monkeypatch):
    monkeypatch.delenv("JUPYTER_IMAGE_SPEC", raising=False)
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc in (1, 2)
    assert expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


class _FakeServer(BaseHTTPRequestHandler):
    clusters: list = []
    deleted: list = []

    def log_message(self, *args):  # quiet
        pass

    def _auth(self) -> bool:
        if self.headers.get("Authorization") != "token secret":
            self.send_response(403)
            self.end_headers()
            return False
        return True

    def do_GET(self):
        if not self._auth():
            return
        body = json.dumps({"clusters": self.clusters}).encode()
        self.send_response(200 if self.path == "/jupyter-elastic/api/clusters" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self):
        if not self._auth():
            return
        self.deleted.append(self.path.rsplit("/", 1)[1])
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def jupyter_server(tmp_path, monkeypatch):
    """A stand-in Jupyter server with the REST contract, listed in the runtime dir."""
    _FakeServer.clusters = [
        {"id": "c1", "name": "elastic-a", "backend": "kubernetes", "status": "running", "workers": 1,
         "gpus": 1, "idle_seconds": 12.0, "usage": {"cost": 0.25}, "currency": "USD"},
        {"id": "c2", "name": "elastic-b", "backend": "local", "status": "running", "workers": 0,
         "gpus": 0, "idle_seconds": 80.0, "usage": {"cost": 0.0}, "currency": "EUR"},
    ]
    _FakeServer.deleted = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("JUPYTER_ELASTIC_SERVER_URL", raising=False)
    info = {"url": f"http://127.0.0.1:{httpd.server_port}/", "token": "secret", "pid": os.getpid()}
    (tmp_path / "jpserver-1.json").write_text(json.dumps(info))
    yield _FakeServer
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_status_lists_clusters(jupyter_server, capsys):
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "elastic-a" in out and "kubernetes" in out and "0.25" in out
    rows = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert rows["elastic-a"].endswith("0.2500 USD") and rows["elastic-b"].endswith("0.0000 EUR")
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clusters"][1]["id"] == "c2"


def test_stop_by_name_and_all(jupyter_server, capsys):
    assert main(["stop", "elastic-b"]) == 0
    assert jupyter_server.deleted == ["c2"]
    assert main(["stop", "--all"]) == 0
    assert jupyter_server.deleted == ["c2", "c1", "c2"]
    assert main(["stop", "nope"]) == 1
    assert "no cluster with id or name 'nope'" in capsys.readouterr().err


def test_wrong_token_and_no_server(jupyter_server, capsys, tmp_path, monkeypatch):
    assert main(["status", "--token", "wrong"]) == 1
    assert "403" in capsys.readouterr().err
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "empty"))
    assert main(["status"]) == 1
    assert "no running Jupyter server found" in capsys.readouterr().err


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "jupyter-elastic: render manifests" in out
    assert "``" not in out


def test_status_reads_the_runtime_dir_without_importing_the_server(jupyter_server, tmp_path):
    """Finding the server is a file read: ``jupyter_server.serverapp`` costs seconds to import."""
    import subprocess
    import sys

    # A file left by a server that is gone is skipped.
    (tmp_path / "jpserver-2.json").write_text(json.dumps({"url": "http://127.0.0.1:9/", "pid": 2**22 + 1}))
    code = ("import sys\nfrom jupyter_elastic.cli import main\nstatus = main(['status'])\n"
            "print('serverapp' if 'jupyter_server.serverapp' in sys.modules else 'no serverapp')\n"
            "sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "elastic-a" in done.stdout and "0.2500 USD" in done.stdout
    assert done.stdout.rstrip().endswith("no serverapp")
