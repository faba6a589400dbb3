"""The Flask extension: config defaults and the per-app S3 client and presigner."""

from __future__ import annotations

import logging
import re
from functools import cached_property
from typing import TYPE_CHECKING

from flask import Flask

from . import bucket_size, config
from .files import install_session_attribute
from .views.common import FileKeyConverter

if TYPE_CHECKING:
    from .presign import SigV4Presigner
    from .ratelimit import RateLimiter
    from .s3 import S3Client

_SECRETS = (
    # flask-oauthlib (invenio-oauth2server) logs "Validate bearer token '<token>'" at DEBUG.
    (re.compile(r"(token )('[^']*'|\"[^\"]*\")"), r"\1'[redacted]'"),
    # botocore logs each control call's Authorization header and "Signature:\n<hex>" at DEBUG.
    (re.compile(r"(Signature[=:]\s*)[0-9a-f]{64}"), r"\1[redacted]"),
    (re.compile(r"(X-Amz-Signature=)[0-9a-f]{64}"), r"\1[redacted]"),
)
REDACTED_LOGGERS = ("flask_oauthlib", "botocore.endpoint", "botocore.auth", "aiobotocore.endpoint")
"""Loggers of dependencies that write credentials at DEBUG; their records are redacted."""


class RedactSecrets(logging.Filter):
    """Replace bearer tokens and SigV4 signatures in log records with ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the message when it holds a secret; never drop the record."""
        message = record.getMessage()
        redacted = message
        for pattern, replacement in _SECRETS:
            redacted = pattern.sub(replacement, redacted)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def install_log_redaction() -> None:
    """Attach :class:`RedactSecrets` to :data:`REDACTED_LOGGERS` (once per process)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


class _OARepoS3State:
    """Per-app state: the S3 control client and the URL presigner, built on first use."""

    def __init__(self, app: Flask):
        """Remember the app; everything else is built on first use."""
        self.app = app

    @cached_property
    def s3(self) -> S3Client:
        """The :class:`~oarepo_s3.s3.S3Client` for control calls (thread-safe, reused)."""
        from .s3 import S3Client

        return S3Client.from_config(self.app.config)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        """The :class:`~oarepo_s3.ratelimit.RateLimiter` of the per-user budgets (``OAREPO_S3_*_RATE_LIMIT``)."""
        from .ratelimit import RateLimiter

        return RateLimiter(self.app)

    @cached_property
    def presigner(self) -> SigV4Presigner:
        """The :class:`~oarepo_s3.presign.SigV4Presigner` for every presigned URL.

        Same endpoint, region and credentials as :attr:`s3` (the credentials
        boto3 resolved: configured keys, else its credential chain).
        """
        from .presign import SigV4Presigner

        endpoint, region, credentials = self.s3.signing_identity()
        return SigV4Presigner(
            endpoint_url=endpoint,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            session_token=credentials.token,
            region=region,
            addressing_style=self.app.config["OAREPO_S3_ADDRESSING_STYLE"],
        )


class OARepoS3:
    """oarepo-s3 extension: ``OARepoS3(app)`` or ``ext.init_app(app)``."""

    def __init__(self, app: Flask | None = None):
        """Initialise at once when given an app."""
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register config defaults and the per-app state."""
        self.init_config(app)
        install_log_redaction()
        install_session_attribute()
        bucket_size.install()
        # URL rules of our views (and of the seed's multipart_actions, in any blueprint) take keys with it.
        app.url_map.converters.setdefault("filekey", FileKeyConverter)
        app.extensions["oarepo-s3"] = _OARepoS3State(app)

    @staticmethod
    def init_config(app: Flask) -> None:
        """Set every default the app does not set itself."""
        for name in dir(config):
            if name.startswith(("OAREPO_S3_", "S3_")):
                app.config.setdefault(name, getattr(config, name))
