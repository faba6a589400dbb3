"""What every view module shares: JSON errors, the REST key rule, the owned draft."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from werkzeug.exceptions import HTTPException

from .. import drafts
from ..errors import InvalidUploadRequest, OARepoS3Error
from ..permissions import require_draft_owner

RESERVED_LAST_SEGMENTS = frozenset(("content", "multipart", "complete-multipart", "abort-multipart", "sign"))
"""A key ``a/content`` would be routed to ``a``'s content: such keys are refused."""


def json_error(error: HTTPException) -> HTTPException | Response:
    """Answer every HTTP error of these blueprints as JSON."""
    if isinstance(error, OARepoS3Error):
        return error
    response = jsonify(status=error.code, message=error.description)
    response.status_code = error.code or 500
    return response


def validate_rest_key(key: Any) -> Any:
    """Refuse keys whose last segment would be routed to one of the API's actions."""
    if isinstance(key, str) and "/" in key and key.rsplit("/", 1)[1] in RESERVED_LAST_SEGMENTS:
        raise InvalidUploadRequest(
            "key", f"must not end with '/{key.rsplit('/', 1)[1]}' (reserved by the API's URLs)"
        )
    return key


def owned_draft(pid_value: Any) -> drafts.DraftRecord:
    """The draft ``pid_value``, if the caller owns it (or is an admin).

    :raises RecordNotFound: no such draft. :raises NotAuthenticated / PermissionDenied: not the owner.
    """
    record = drafts.resolve(pid_value, status=drafts.DRAFT)
    require_draft_owner(record)
    return record
