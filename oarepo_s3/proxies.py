"""Proxy to the current app's oarepo-s3 state."""

from __future__ import annotations

from flask import current_app
from werkzeug.local import LocalProxy

current_oarepo_s3 = LocalProxy(lambda: current_app.extensions["oarepo-s3"])
"""The :class:`~oarepo_s3.ext._OARepoS3State` of the current app."""
