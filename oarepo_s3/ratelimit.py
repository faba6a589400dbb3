"""Per-user rate limit of the requests that sign part URLs.

Signing is cheap for us (~2 µs a URL) but every URL lets a client write up
to 5 GiB to S3, so ``OAREPO_S3_SIGN_RATE_LIMIT`` caps how many *requests*
that sign URLs one user may make: starting an upload (which signs every
part), re-signing parts, and Uppy's per-part and batch signing. The limit is
Flask-Limiter's notation (``"600/minute"``, ``"10/second;600/hour"``);
``None`` or ``""`` turns it off.

It is checked with Flask-Limiter's own engine (the ``limits`` library: a
moving window in ``OAREPO_S3_SIGN_RATE_LIMIT_STORAGE_URI``), not with a
second ``flask_limiter.Limiter``: an app built with invenio-app already has
one whose ``before_request`` hook applies the global ``RATELIMIT_*`` limits
to every request. Registering another instance would run those global
limits twice; this module adds only its own per-user budget for signing.
The storage defaults to the one those global limits use
(``RATELIMIT_STORAGE_URI``), else to process memory, which counts per
worker process: production with several workers wants Redis
(``redis://host:6379/0``), so the budget is shared.

Anonymous requests are not counted here: they get their 401 from the view.
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

from .errors import SignRateLimited

SIGNING_ENDPOINTS = frozenset(("init_upload", "sign", "uppy_sign_batch", "uppy_sign_part"))
"""Endpoints (of the drafts blueprint) whose requests sign part URLs."""

_KEY_PREFIX = "oarepo-s3-sign"


@lru_cache(maxsize=16)
def _parse(limit: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(limit))


class SignRateLimiter:
    """Per-app counters of signing requests by user (built on first use)."""

    def __init__(self, app: Flask):
        """Remember the app; the storage is opened on first use."""
        self.app = app
        self._lock = threading.Lock()
        self._storage: Storage | None = None
        self._storage_uri: str | None = None

    def storage_uri(self) -> str:
        """Where counts live: our setting, else Flask-Limiter's ``RATELIMIT_STORAGE_URI``, else memory."""
        config = self.app.config
        return config.get("OAREPO_S3_SIGN_RATE_LIMIT_STORAGE_URI") or config.get("RATELIMIT_STORAGE_URI") or "memory://"

    @property
    def storage(self) -> Storage:
        """The ``limits`` storage (re-opened if the configured URI changed)."""
        uri = self.storage_uri()
        with self._lock:
            if self._storage is None or uri != self._storage_uri:
                storage = storage_from_string(uri)
                if not isinstance(storage, Storage):
                    raise ValueError(f"OAREPO_S3_SIGN_RATE_LIMIT_STORAGE_URI {uri!r} names an asyncio storage")
                self._storage, self._storage_uri = storage, uri
            return self._storage

    def limits(self) -> tuple[RateLimitItem, ...]:
        """The configured limits (empty: signing is not limited)."""
        value = self.app.config.get("OAREPO_S3_SIGN_RATE_LIMIT")
        return _parse(value) if value else ()

    def hit(self, user_id: int) -> None:
        """Count one signing request of ``user_id``.

        Each limit is hit in turn, as Flask-Limiter does (a hit is atomic in
        the storage, so concurrent workers never overshoot).

        :raises SignRateLimited: a limit is used up; names it and when to retry.
        """
        limits = self.limits()
        if not limits:
            return
        strategy = MovingWindowRateLimiter(self.storage)
        key = str(user_id)
        for item in limits:
            if not strategy.hit(item, _KEY_PREFIX, key):
                reset_at = strategy.get_window_stats(item, _KEY_PREFIX, key).reset_time
                raise SignRateLimited(str(item), max(1, math.ceil(reset_at - time.time())))

    def reset(self) -> None:
        """Forget every count (tests, or an administrator after changing the limit)."""
        self.storage.reset()


def check_sign_rate_limit() -> None:
    """``before_request`` hook of the drafts blueprint: count signing requests per user.

    :raises SignRateLimited: the user's budget is used up (429, ``Retry-After``).
    """
    endpoint = (request.endpoint or "").rpartition(".")[2]
    if endpoint not in SIGNING_ENDPOINTS:
        return
    if not current_user or not current_user.is_authenticated:
        return
    current_app.extensions["oarepo-s3"].sign_limiter.hit(current_user.id)
