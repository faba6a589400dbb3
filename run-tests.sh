#!/usr/bin/env bash
# Install everything the tests need and run the whole suite.
#   ./run-tests.sh                 all tests
#   ./run-tests.sh -k presign -x   extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
ensure_venv

# pytest exits 5 when it collected no test: that is a failure here too.
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
