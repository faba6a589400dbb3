"""The original oarepo-s3's completion resources, usable from any app's blueprints.

::

    def multipart_actions(code, files, rest_endpoint, extra, is_draft):
        return {
            "files/<key>/complete-multipart": MultipartUploadCompleteResource.as_view(
                MultipartUploadCompleteResource.view_name.format(endpoint=code)),
            "files/<key>/abort-multipart": MultipartUploadAbortResource.as_view(
                MultipartUploadAbortResource.view_name.format(endpoint=code)),
        }

The URL must carry ``pid_value`` (a ``recid`` value, or the ``(pid, record)``
pair that invenio-records-rest's ``pid`` converter produces) and ``key``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask.views import MethodView

from .. import drafts, service
from ..api import validate_key
from ..permissions import require_draft_owner
from ..ratelimit import count
from ..service import ReportedPart
from .parsing import CompleteSchema, parse_json
from .serializers import file_json


def resolve_record(pid_value: Any) -> drafts.DraftRecord:
    """A draft from a PID value string or an invenio-records-rest ``(pid, record)`` pair."""
    if hasattr(pid_value, "data"):  # invenio-records-rest's lazy PIDValue
        pid_value = pid_value.data
    if isinstance(pid_value, tuple):
        pid, record = pid_value
        return record if isinstance(record, drafts.DraftRecord) else drafts.resolve(pid.pid_value, status=drafts.DRAFT)
    return drafts.resolve(pid_value, status=drafts.DRAFT)


class MultipartUploadCompleteResource(MethodView):
    """``POST .../files/<key>/complete-multipart`` ``{"parts": [{"ETag", "PartNum"}]}``.

    Without ``parts`` the server completes from S3's own part list. Repeating
    it on a completed upload returns the same file.
    """

    view_name = "{endpoint}_upload_complete"

    def post(self, pid_value: Any, key: str) -> Response:
        """Verify and complete; answer the completed file."""
        record = resolve_record(pid_value)
        require_draft_owner(record)
        count("finish")
        key = validate_key(key)
        body = parse_json(CompleteSchema())
        parts = None
        if body["parts"] is not None:
            parts = [ReportedPart(p.get("PartNumber", p.get("PartNum")), p["ETag"]) for p in body["parts"]]
        return jsonify(file_json(record, service.complete_file_upload(record.bucket_id, key, parts)))


class MultipartUploadAbortResource(MethodView):
    """``POST .../files/<key>/abort-multipart``: abort in S3 and remove the pending file."""

    view_name = "{endpoint}_upload_abort"

    def post(self, pid_value: Any, key: str) -> tuple[str, int]:
        """Abort; 204. Repeating it answers 404."""
        record = resolve_record(pid_value)
        require_draft_owner(record)
        count("finish")
        service.abort_file_upload(record.bucket_id, validate_key(key))
        return "", 204


def multipart_actions(code: str, files: Any, rest_endpoint: Any, extra: Any, is_draft: bool) -> dict[str, Any]:
    """The seed's hook: URL rule -> view for completing and aborting uploads."""
    return {
        "files/<filekey:key>/complete-multipart": MultipartUploadCompleteResource.as_view(
            MultipartUploadCompleteResource.view_name.format(endpoint=code)
        ),
        "files/<filekey:key>/abort-multipart": MultipartUploadAbortResource.as_view(
            MultipartUploadAbortResource.view_name.format(endpoint=code)
        ),
    }
