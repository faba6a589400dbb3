#!/usr/bin/env bash
# Install into .venv on first run, then start the demo on embedded defaults.
#   ./run-demo.sh [--port 5000] [--s3-port 9000] [--data-dir .demo]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
ensure_venv
exec .venv/bin/python -m demo "$@"
