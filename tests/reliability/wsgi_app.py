"""WSGI entry for gunicorn in the load test: the demo's app on the test's database and S3.

``OAREPO_S3_LOAD_CONFIG`` holds the app's config as JSON (the test writes it).
"""

from __future__ import annotations

import json
import os

from oarepo_s3.app import create_app

application = create_app(json.loads(os.environ["OAREPO_S3_LOAD_CONFIG"]), sqlite_immediate=True)
