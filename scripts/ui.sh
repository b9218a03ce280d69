#!/usr/bin/env bash
# Start the embedded S3 server and the Dagster UI on http://127.0.0.1:3000 (Ctrl-C stops both).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/pinrec-ops ui "$@"
