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

[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
.venv-test/bin/python -m pip install -q --upgrade pip
.venv-test/bin/python -m pip install -q -e ".[test]"

if [ -f package.json ] && grep -q '"test"' package.json; then
  .venv-test/bin/jlpm install >/dev/null
  # lint:check runs jlpm in its own steps: it needs jlpm on PATH.
  PATH="$PWD/.venv-test/bin:$PATH" .venv-test/bin/jlpm lint:check
  .venv-test/bin/jlpm test
fi
if [ -f scripts/check_extension.sh ]; then
  PATH="$PWD/.venv-test/bin:$PATH" bash scripts/check_extension.sh
fi

# The architecture and the code style, enforced: import rules (docs/architecture.md), ruff, mypy.
.venv-test/bin/lint-imports --no-cache
.venv-test/bin/ruff check jupyter_elastic tests benchmarks
.venv-test/bin/mypy

.venv-test/bin/python -m pytest -p no:cacheprovider -q "$@"
