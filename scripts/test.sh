#!/usr/bin/env bash
# Install everything from the project's own files and run every test: Python (pytest: unit,
# real kernels, handlers, Kubernetes and Gateway doubles, headless Chromium), the lab
# extension's unit tests (jest), and the extension checks. Safe to run on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's Chromium drives the sidebar's browser tests (Playwright's own download does not work here).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

if [ -f package.json ] && grep -q '"test"' package.json; then
  .venv/bin/jlpm install >/dev/null
  # lint:check runs jlpm in its own steps: it needs jlpm on PATH.
  PATH="$PWD/.venv/bin:$PATH" .venv/bin/jlpm lint:check
  .venv/bin/jlpm test
fi
if [ -f scripts/check_extension.sh ]; then
  PATH="$PWD/.venv/bin:$PATH" bash scripts/check_extension.sh
fi

# The architecture and the code style, enforced: import rules (docs/architecture.md), ruff, mypy.
.venv/bin/lint-imports --no-cache
.venv/bin/ruff check jupyter_elastic tests benchmarks
.venv/bin/mypy

.venv/bin/python -m pytest -p no:cacheprovider -q "$@"
