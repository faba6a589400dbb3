#!/usr/bin/env bash
# Install everything the tests need and run the whole suite.
#   ./run-tests.sh                 all tests
#   ./run-tests.sh -k presign -x   extra arguments go to pytest
#
# Every test that touches S3 or the database runs once per lane (ids like [ceph-postgresql]):
#   OAREPO_S3_TEST_BACKENDS=moto,ceph          S3: embedded moto, and a real Ceph RADOS Gateway
#   OAREPO_S3_TEST_DATABASES=sqlite,postgresql
# e.g. OAREPO_S3_TEST_BACKENDS=moto OAREPO_S3_TEST_DATABASES=sqlite ./run-tests.sh for a quick run.
# The session starts PostgreSQL (scripts/postgres.sh) and Ceph RGW (scripts/ceph-rgw.sh) itself;
# run as root on Debian/Ubuntu, they install their packages with apt when missing. A lane whose
# server cannot start fails the run: nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
ensure_venv

# Static checks first (seconds): lint, and strict types on oarepo_s3/ and client/ (pyproject.toml).
# The import contracts (layers, one S3 boundary) run as tests/test_architecture.py.
echo "==> ruff check" >&2
.venv/bin/ruff check --quiet .
echo "==> mypy (strict: oarepo_s3/, client/)" >&2
.venv/bin/mypy

# pytest exits 5 when it collected no test: that is a failure here too.
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
