#!/usr/bin/env bash
# README command 1: set up, then run the main job end to end on the embedded default.
# Options go to `pinrec-ops lifecycle` (see --help), e.g. --days 60 or --source simulated.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/pinrec-ops lifecycle "$@"
