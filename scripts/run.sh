#!/usr/bin/env bash
# Install jupyter-elastic with its lab extension and open JupyterLab on the examples, with the
# embedded local backend (no Kubernetes or Gateway needed). Stop with Ctrl-C: the server
# stops every cluster it started.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
ROOT_FLAG=""; [ "$(id -u)" -eq 0 ] && ROOT_FLAG="--allow-root"
exec .venv/bin/jupyter lab --ip=127.0.0.1 --no-browser $ROOT_FLAG --notebook-dir=examples "$@"
