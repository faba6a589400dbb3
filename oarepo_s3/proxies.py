"""Proxy to the current app's oarepo-s3 state."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from flask import current_app
from werkzeug.local import LocalProxy

if TYPE_CHECKING:
    from .ext import _OARepoS3State

current_oarepo_s3 = cast("_OARepoS3State", LocalProxy(lambda: current_app.extensions["oarepo-s3"]))
"""The :class:`~oarepo_s3.ext._OARepoS3State` of the current app."""
