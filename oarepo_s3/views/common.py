"""What every view module shares: JSON errors and the owned draft."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import PathConverter

from .. import drafts
from ..errors import OARepoS3Error, RequestTooLarge
from ..permissions import require_draft_owner


class FileKeyConverter(PathConverter):
    """``<filekey:key>``: like ``<path:key>``, but a line break in the URL still reaches the view.

    werkzeug's ``path`` stops at a newline (``.`` in its pattern), so such a
    URL would match no rule and get the app's HTML 404; with this converter
    the view sees the key and refuses it as every bad key is refused (400
    in JSON, naming the rule).
    """

    regex = "[^/][\\s\\S]*?"


def json_error(error: HTTPException) -> HTTPException | Response:
    """Answer every HTTP error of these blueprints as JSON."""
    if isinstance(error, OARepoS3Error):
        return error
    if isinstance(error, RequestEntityTooLarge):  # werkzeug stopped reading a body at the limit
        return RequestTooLarge(current_app.config["OAREPO_S3_MAX_REQUEST_BYTES"])
    response = jsonify(status=error.code, message=error.description)
    response.status_code = error.code or 500
    for name, value in error.get_headers():  # e.g. a 405's Allow
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def owned_draft(pid_value: Any) -> drafts.DraftRecord:
    """The draft ``pid_value``, if the caller owns it (or is an admin).

    :raises RecordNotFound: no such draft. :raises NotAuthenticated / PermissionDenied: not the owner.
    """
    record = drafts.resolve(pid_value, status=drafts.DRAFT)
    require_draft_owner(record)
    return record
