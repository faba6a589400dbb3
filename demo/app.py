"""The demo's app: :func:`oarepo_s3.app.create_app` plus what only the demo needs.

Everything a real deployment would put in ``invenio.cfg`` is passed in as
config. The demo adds browser sessions kept on disk (so a restart keeps
users signed in) and, in ``__main__``, its web page.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from oarepo_s3.app import create_app as create_oarepo_s3_app


def create_app(config: dict[str, Any], *, session_store: Any = None, sqlite_immediate: bool = False) -> Flask:
    """The demo's app from ``config`` (SQLALCHEMY_DATABASE_URI, S3_*, SECRET_KEY...).

    :param session_store: a simplekv store for login sessions (default: invenio-accounts', in memory).
    :param sqlite_immediate: on SQLite, start every transaction with ``BEGIN IMMEDIATE``.
    """
    config = dict(config)
    if session_store is not None:  # invenio-accounts takes its store from this factory (a sessionstore= is ignored)
        config["ACCOUNTS_SESSION_STORE_FACTORY"] = lambda _app: session_store
    return create_oarepo_s3_app(config, name="oarepo_s3_demo", sqlite_immediate=sqlite_immediate)
