#!/usr/bin/env bash
# Install into .venv (and the web page's npm packages) on first run, then start the demo:
# S3, database, two users with tokens, a draft, the cleanup schedule and the web app.
#   ./run-demo.sh [--port 5000] [--s3-port 9000] [--data-dir .demo] [--info-file FILE]
#                 [--bucket oarepo-demo] [--cleanup-interval 600] [--upload-expiry SECONDS]
# Embedded moto S3 and SQLite by default (data kept in --data-dir); INVENIO_S3_ENDPOINT_URL,
# INVENIO_S3_ACCESS_KEY_ID, INVENIO_S3_SECRET_ACCESS_KEY and INVENIO_SQLALCHEMY_DATABASE_URI in
# the environment select another S3 and database. See docs/demo.md.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
ensure_venv
exec .venv/bin/python -m demo "$@"
