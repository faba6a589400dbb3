#!/usr/bin/env bash
# Measure the performance targets side by side in one run and write docs/performance.md with plots.
#   ./run-benchmarks.sh                       full run (~25 min on 2 cores): docs/performance.md, docs/img/perf-*.png
#   ./run-benchmarks.sh --quick               small sizes (a few minutes): benchmarks/results/quick/performance.md
#   ./run-benchmarks.sh --only presign,scale  a subset (presign, scale, concurrency, client, cleanup, rdm)
# Starts its own PostgreSQL (scripts/postgres.sh), moto and Ceph RGW (scripts/ceph-rgw.sh) on free
# ports in temporary directories; as root on Debian/Ubuntu they install their packages when missing.
# A server that cannot start fails the run. Raw numbers: benchmarks/results/*.json (not in git).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
ensure_venv

exec .venv/bin/python benchmarks/run.py "$@"
