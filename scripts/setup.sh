#!/usr/bin/env bash
# Create .venv and install pinrec-ops with its pinned stack; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# Debian's Chromium for the browser test of the Dagster UI (no browser download: Playwright
# drives this one).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian chromium"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: /usr/bin/chromium is missing; install Debian's chromium (sudo apt-get install chromium) for the browser test" >&2
  fi
fi
# Debian's redis-server for the Redis online store test and the online latency benchmark (the
# tests start their own on 127.0.0.1 and a free port; the system service is not used).
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian redis-server"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "setup: redis-server is missing; install Debian's redis-server (sudo apt-get install redis-server) for the Redis online store test" >&2
  fi
fi

stamp=.venv/.pinrec-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing the pinned stack into .venv (about 2 minutes the first time)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # torch first, from the CPU wheel pinned in pyproject.toml (plain `torch` would pull CUDA).
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
fi
