"""Exceptions of oarepo-s3, each carrying its HTTP meaning.

All of them are :class:`invenio_rest.errors.RESTException` subclasses, so a
view that lets one escape answers with a JSON body
``{"status": ..., "message": ..., "errors": [{"field": ..., "message": ...}]}``.
Python callers catch them by type (``InvalidUploadRequest`` is also a
``ValueError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from invenio_rest.errors import FieldError, RESTException


class OARepoS3Error(RESTException):  # type: ignore[misc]  # invenio-rest is untyped
    """Base of every error raised by oarepo-s3."""

    code = 500
    description = "Multipart upload error."

    def __init__(self, description: str | None = None, *, errors: list[FieldError] | None = None, **kwargs: Any):
        """Keep the message in ``str(exc)`` as well as in the JSON body."""
        super().__init__(errors=errors, description=description or self.description, **kwargs)

    def __str__(self) -> str:
        """Return the human message (werkzeug would prefix the status code)."""
        return str(self.description)


class InvalidUploadRequest(OARepoS3Error, ValueError):
    """A value given by the caller breaks a rule: names the field and the rule."""

    code = 400

    def __init__(self, field: str, rule: str):
        """:param field: the offending field. :param rule: what the value must satisfy."""
        self.field = field
        self.rule = rule
        super().__init__(f"Invalid '{field}': {rule}", errors=[FieldError(field, rule)])


class RequestValidationError(OARepoS3Error):
    """The request body or query string is malformed; one field error per problem."""

    code = 400

    def __init__(self, problems: Iterable[tuple[str, str]]):
        """:param problems: ``(field, rule)`` pairs."""
        problems = list(problems)
        super().__init__(
            "Invalid request: " + "; ".join(f"'{field}': {rule}" for field, rule in problems[:5]),
            errors=[FieldError(field, rule) for field, rule in problems],
        )


class RequestTooLarge(OARepoS3Error):
    """The request's body is larger than ``OAREPO_S3_MAX_REQUEST_BYTES`` (file bytes never go through the API)."""

    code = 413

    def __init__(self, limit: int):
        """:param limit: the largest body accepted, in bytes."""
        super().__init__(
            f"The request's body is too large: at most {limit} bytes (file contents go straight to S3).",
            errors=[FieldError("body", f"must be at most {limit} bytes")],
        )


class UploadNotFound(OARepoS3Error):
    """No in-progress multipart upload matches the request."""

    code = 404
    description = "Multipart upload not found."


class UploadStateConflict(OARepoS3Error):
    """The upload is in a state that forbids the operation (e.g. abort after complete)."""

    code = 409


class UploadExpired(OARepoS3Error):
    """The upload's time ran out; it can no longer be completed or signed."""

    code = 410
    description = "Multipart upload has expired."


class UploadPending(OARepoS3Error):
    """The file is still being uploaded, so it cannot be read or downloaded."""

    code = 409
    description = "The file is still being uploaded; complete the multipart upload first."


class NotAuthenticated(OARepoS3Error):
    """The request carries no valid session or token."""

    code = 401
    description = "Authentication required: log in or send 'Authorization: Bearer <token>'."


class PermissionDenied(OARepoS3Error):
    """The caller is authenticated but not the owner of the draft (nor an admin)."""

    code = 403
    description = "Only the owner of this draft or an administrator may do this."


class RequestRejected(OARepoS3Error):
    """A cookie-authenticated request that looks cross-site (CSRF protection)."""

    code = 403


class RecordNotFound(OARepoS3Error):
    """No draft or published record with that identifier."""

    code = 404
    description = "Record not found."


class FileNotFound(OARepoS3Error):
    """The record has no file with that key."""

    code = 404
    description = "File not found."


class FileKeyExists(OARepoS3Error):
    """A file with that key already exists in the draft."""

    code = 409

    def __init__(self, key: str):
        """Name the key."""
        super().__init__(
            f"A file named {key!r} already exists in this draft; delete it first.",
            errors=[FieldError("key", "a file with this key already exists")],
        )


class RecordStateConflict(OARepoS3Error):
    """The record's state forbids the operation (e.g. upload into a published record)."""

    code = 409


class PartsMismatch(OARepoS3Error):
    """The parts in S3 do not match what the client reported or what was declared.

    The upload stays in progress, so the client can upload the missing or
    corrected parts and complete again.
    """

    code = 400

    def __init__(self, problems: Iterable[tuple[str, str]]):
        """:param problems: ``(field, message)`` pairs, e.g. ``("parts[3]", "...")``."""
        problems = list(problems)
        super().__init__(
            "Uploaded parts do not match: " + "; ".join(msg for _, msg in problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
            errors=[FieldError(field, msg) for field, msg in problems],
        )


class S3Error(OARepoS3Error):
    """S3 refused or failed a control call; retryable from the client's point of view.

    ``s3_code`` is S3's own error code (``SlowDown``, ``InternalError``,
    ``AccessDenied``...) or ``EndpointConnectionError`` when S3 is unreachable.
    """

    code = 503

    def __init__(self, operation: str, s3_code: str, message: str, *, endpoint: str | None = None):
        """Name the operation, S3's error code and the endpoint in the message."""
        self.operation = operation
        self.s3_code = s3_code
        self.endpoint = endpoint
        where = f" at {endpoint}" if endpoint else ""
        super().__init__(f"S3 {operation} failed{where}: {s3_code}: {message}")

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        """Tell clients when to retry."""
        return [*super().get_headers(environ, scope), ("Retry-After", "5")]


class S3Unavailable(S3Error):
    """S3 could not be reached at all (connection refused, DNS, timeout), or no credentials are usable."""


class RateLimited(OARepoS3Error):
    """The user used up a budget of :mod:`oarepo_s3.ratelimit` (S3 calls, new rows, signed URLs)."""

    code = 429

    def __init__(self, budget: str, setting: str, limit: str, retry_after: int):
        """:param budget: e.g. ``sign``. :param setting: its config key. :param limit: e.g. ``600 per 1 minute``.

        :param retry_after: seconds until a request fits the budget again.
        """
        self.budget = budget
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"Too many requests of one user ({budget}): the limit is {limit} ({setting}); retry in {retry_after} s.",
            errors=[FieldError("rate_limit", f"{limit} ({setting})")],
        )

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        """Tell clients when to retry."""
        return [*super().get_headers(environ, scope), ("Retry-After", str(self.retry_after))]


class S3Inconsistent(OARepoS3Error):
    """S3 returned something that contradicts the books (e.g. a completed object of the wrong size)."""

    code = 502
