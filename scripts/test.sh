#!/usr/bin/env bash
# README command 2: set up when needed, then run the test suite (arguments go to pytest).
# Without arguments (CI): ruff (lint and format check), the default suite, then the scale-out
# tests (marker `scale_out`: real Celery workers, a Dask cluster; a few minutes), which plain
# `pytest` leaves out.
# --fast: the fast tier alone (no servers, no process of its own, nothing slow: under 90 s).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ "$#" -eq 0 ]; then
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/python -m pytest
  exec .venv/bin/python -m pytest -m scale_out
fi
if [ "$1" = "--fast" ]; then
  shift
  exec .venv/bin/python -m pytest -m "not services and not slow and not scale_out" "$@"
fi
exec .venv/bin/python -m pytest "$@"
