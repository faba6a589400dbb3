"""Per-user rate limits of every request that costs S3 calls, new rows or signed URLs.

Each budget is its own setting, in Flask-Limiter's notation (``"600/minute"``,
``"10/second;600/hour"``; ``None`` or ``""`` turns it off):

==========  ===============================  =====================================================
budget      setting                          requests counted
==========  ===============================  =====================================================
sign        ``OAREPO_S3_SIGN_RATE_LIMIT``    sign part URLs: start an upload (it signs every
                                             part), re-sign, Uppy's per-part and batch signing
start       ``OAREPO_S3_START_RATE_LIMIT``   start an upload (REST, Uppy) or write an empty file:
                                             an S3 call and new rows each
list        ``OAREPO_S3_LIST_RATE_LIMIT``    the parts S3 holds (resume, Uppy's list): one S3
                                             call per 1,000 parts
finish      ``OAREPO_S3_FINISH_RATE_LIMIT``  complete (REST, Uppy, the seed's resource), abort,
                                             delete: S3 calls each
draft       ``OAREPO_S3_DRAFT_RATE_LIMIT``   create or publish a draft: new rows
==========  ===============================  =====================================================

Over a budget the API answers 429 with ``Retry-After``, naming the budget
and its setting. Budgets are counted per user; anonymous requests are not
counted (they get their 401 from the view).

Counts use Flask-Limiter's own engine (the ``limits`` library: a moving
window in ``OAREPO_S3_RATE_LIMIT_STORAGE_URI``), not a second
``flask_limiter.Limiter``: an app built with invenio-app already has one,
whose ``before_request`` applies the global ``RATELIMIT_*`` limits to every
request. The storage defaults to the one those use (``RATELIMIT_STORAGE_URI``),
else to process memory, which counts per worker process: production with
several workers wants Redis (``redis://host:6379/0``), so the budgets are shared.
"""

from __future__ import annotations

import math
import threading
import time
from functools import lru_cache

from flask import Flask, current_app, request
from flask_login import current_user
from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .errors import RateLimited

BUDGETS: dict[str, str] = {
    "sign": "OAREPO_S3_SIGN_RATE_LIMIT",
    "start": "OAREPO_S3_START_RATE_LIMIT",
    "list": "OAREPO_S3_LIST_RATE_LIMIT",
    "finish": "OAREPO_S3_FINISH_RATE_LIMIT",
    "draft": "OAREPO_S3_DRAFT_RATE_LIMIT",
}
"""Budget name -> the setting that holds its limit."""

ENDPOINT_BUDGETS: dict[str, tuple[str, ...]] = {
    "create": ("draft",),
    "publish": ("draft",),
    "init_upload": ("start", "sign"),
    "sign": ("sign",),
    "multipart": ("list",),
    "delete_file": ("finish",),
    "uppy_create": ("start",),
    "uppy_empty": ("start",),
    "uppy_list_parts": ("list",),
    "uppy_sign_batch": ("sign",),
    "uppy_sign_part": ("sign",),
    "uppy_complete": ("finish",),
    "uppy_abort": ("finish",),
}
"""Endpoints of the drafts blueprint -> the budgets a request counts against.

The seed's completion resources count themselves (:func:`count`): they are
mounted in other apps' blueprints too, where no hook of ours runs.
"""

_KEY_PREFIX = "oarepo-s3"


@lru_cache(maxsize=16)
def _parse(limit: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(limit))


class RateLimiter:
    """Per-app counters by budget and user (the storage is opened on first use)."""

    def __init__(self, app: Flask):
        """Remember the app."""
        self.app = app
        self._lock = threading.Lock()
        self._storage: Storage | None = None
        self._storage_uri: str | None = None

    def storage_uri(self) -> str:
        """Where counts live: our setting, else Flask-Limiter's ``RATELIMIT_STORAGE_URI``, else memory."""
        config = self.app.config
        uri: str = (config.get("OAREPO_S3_RATE_LIMIT_STORAGE_URI")
                    or config.get("OAREPO_S3_SIGN_RATE_LIMIT_STORAGE_URI")  # its former name
                    or config.get("RATELIMIT_STORAGE_URI") or "memory://")
        return uri

    @property
    def storage(self) -> Storage:
        """The ``limits`` storage (re-opened if the configured URI changed)."""
        uri = self.storage_uri()
        with self._lock:
            if self._storage is None or uri != self._storage_uri:
                storage = storage_from_string(uri)
                if not isinstance(storage, Storage):
                    raise ValueError(f"OAREPO_S3_RATE_LIMIT_STORAGE_URI {uri!r} names an asyncio storage")
                self._storage, self._storage_uri = storage, uri
            return self._storage

    def limits(self, budget: str) -> tuple[RateLimitItem, ...]:
        """The configured limits of ``budget`` (empty: not limited)."""
        value = self.app.config.get(BUDGETS[budget])
        return _parse(value) if value else ()

    def hit(self, budget: str, user_id: int) -> None:
        """Count one request of ``user_id`` against ``budget``.

        Each limit is hit in turn, as Flask-Limiter does (a hit is atomic in
        the storage, so concurrent workers never overshoot).

        :raises RateLimited: a limit is used up; names it, its setting and when to retry.
        """
        limits = self.limits(budget)
        if not limits:
            return
        strategy = MovingWindowRateLimiter(self.storage)
        key = str(user_id)
        for item in limits:
            if not strategy.hit(item, _KEY_PREFIX, budget, key):
                reset_at = strategy.get_window_stats(item, _KEY_PREFIX, budget, key).reset_time
                raise RateLimited(budget, BUDGETS[budget], str(item), max(1, math.ceil(reset_at - time.time())))

    def reset(self) -> None:
        """Forget every count (an administrator after changing a limit, or tests)."""
        self.storage.reset()


def count(*budgets: str) -> None:
    """Count the current request of the signed-in user against ``budgets`` (anonymous: not counted).

    :raises RateLimited: a budget is used up (429, ``Retry-After``).
    """
    if not current_user or not current_user.is_authenticated:
        return
    limiter: RateLimiter = current_app.extensions["oarepo-s3"].rate_limiter
    for budget in budgets:
        limiter.hit(budget, current_user.id)


def check_rate_limits() -> None:
    """``before_request`` hook of the drafts blueprint: count the request against its endpoint's budgets."""
    count(*ENDPOINT_BUDGETS.get((request.endpoint or "").rpartition(".")[2], ()))
