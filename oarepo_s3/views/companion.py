"""Routes that speak Uppy Companion's S3 protocol, so stock ``@uppy/aws-s3`` uploads into a draft.

Mounted per draft under ``/draft/records/<pid>/uppy``; point Uppy at it with
``companionEndpoint`` (Uppy 6; ``endpoint`` in Uppy 4-5) and
``shouldUseMultipart: true``. Companion's create call carries no file size,
so the page must put it into the file's metadata::

    uppy.on("file-added", (file) => uppy.setFileMeta(file.id, { size: file.size }))

Uppy then picks parts of ``max(5 MiB, ceil(size / 10000))`` bytes, which is
the part size these routes plan. ``uploadId`` and ``key`` from the client are
never trusted: they must name an upload in progress in this very draft.
"""

from __future__ import annotations

import re

from flask import Blueprint, jsonify, request, url_for

from .. import drafts, service
from ..errors import RequestValidationError, UploadNotFound
from ..models import MultipartUploadSession
from ..permissions import require_authenticated
from ..service import ReportedPart
from .drafts import owned_draft, validate_rest_key
from .parsing import CONTENT_TYPE, CONTENT_TYPE_RULE, MAX_PART_NUMBER, CompleteSchema, parse_json
from .serializers import DRAFTS, parts_json

MiB = 1024 * 1024


def uppy_part_size(size: int) -> int:
    """The part size stock Uppy uses for a file of ``size`` bytes."""
    return max(5 * MiB, -(-size // MAX_PART_NUMBER))


def _session(pid_value: str, upload_id: str) -> tuple[drafts.DraftRecord, MultipartUploadSession]:
    """The draft's in-progress upload named by ``uploadId`` and ``?key=``, or 404."""
    record = owned_draft(pid_value)
    key = request.args.get("key")
    if not key:
        raise RequestValidationError([("key", "the 'key' query parameter is required")])
    session = drafts.pending_session(record, key)
    if session.upload_id != upload_id:
        raise UploadNotFound(f"Upload {upload_id!r} is not the upload of {key!r} in this draft.")
    return record, session


def create_upload(pid_value):
    """``POST <base>/s3/multipart {filename, type, metadata: {size}}`` -> ``{key, uploadId}``."""
    record = owned_draft(pid_value)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise RequestValidationError([("body", "must be a JSON object")])
    filename, content_type = body.get("filename"), body.get("type")
    metadata = body.get("metadata") or {}
    size = metadata.get("size") if isinstance(metadata, dict) else None
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int):
        raise RequestValidationError(
            [("metadata.size", "the file size is required: set it with uppy.setFileMeta(file.id, {size: file.size})")]
        )
    if not isinstance(filename, str) or not filename:
        raise RequestValidationError([("filename", "must be a non-empty string (the file's name)")])
    key = validate_rest_key(filename)
    if content_type is not None and not isinstance(content_type, str):
        raise RequestValidationError([("type", "must be a string")])
    if content_type and not re.match(CONTENT_TYPE.regex, content_type):
        raise RequestValidationError([("type", CONTENT_TYPE_RULE)])
    values = {"pid_value": record.pid_value, "key": key}
    session, _ = drafts.start_file_upload(
        record,
        key,
        size,
        owner_id=require_authenticated(),
        content_type=content_type or None,
        part_size=uppy_part_size(size),
        complete_url=url_for(f"{DRAFTS}.{DRAFTS}_upload_complete", _external=True, **values),
        abort_url=url_for(f"{DRAFTS}.{DRAFTS}_upload_abort", _external=True, **values),
    )
    return jsonify({"key": key, "uploadId": session.upload_id})


def list_parts(pid_value, upload_id):
    """``GET <base>/s3/multipart/<uploadId>?key=`` -> ``[{PartNumber, ETag, Size}]`` (all pages)."""
    _, session = _session(pid_value, upload_id)
    return jsonify(parts_json(service.list_uploaded_parts(session)))


def sign_batch(pid_value, upload_id):
    """``GET <base>/s3/multipart/<uploadId>/batch?key=&partNumbers=1,2`` -> ``{presignedUrls}``."""
    _, session = _session(pid_value, upload_id)
    raw = request.args.get("partNumbers", "")
    try:
        numbers = [int(n) for n in raw.split(",") if n.strip()]
    except ValueError:
        raise RequestValidationError([("partNumbers", "must be comma-separated integers")]) from None
    if not numbers:
        raise RequestValidationError([("partNumbers", "at least one part number is required")])
    urls = service.sign_parts(session, numbers)
    return jsonify({"presignedUrls": {str(n): u for n, u in urls.items()}})


def sign_part(pid_value, upload_id, part_number):
    """``GET <base>/s3/multipart/<uploadId>/<partNumber>?key=`` -> ``{url, expires}``."""
    _, session = _session(pid_value, upload_id)
    url = service.sign_parts(session, [part_number])[part_number]
    return jsonify({"url": url, "expires": service.url_lifetime(session)})


def complete(pid_value, upload_id):
    """``POST <base>/s3/multipart/<uploadId>/complete?key= {parts}`` -> ``{location}``."""
    record, session = _session(pid_value, upload_id)
    body = parse_json(CompleteSchema())
    parts = None
    if body["parts"] is not None:
        parts = [ReportedPart(p.get("PartNumber", p.get("PartNum")), p["ETag"]) for p in body["parts"]]
    entry = drafts.complete_file_upload(record, session.key, parts)
    location = url_for(f"{DRAFTS}.content", pid_value=record.pid_value, key=entry.obj.key, _external=True)
    return jsonify({"location": location, "key": entry.obj.key})


def abort(pid_value, upload_id):
    """``DELETE <base>/s3/multipart/<uploadId>?key=`` -> ``{}``."""
    record, session = _session(pid_value, upload_id)
    drafts.abort_file_upload(record, session.key)
    return jsonify({})


def simple_upload_params(pid_value):
    """``GET <base>/s3/params``: refused; every upload here is a tracked multipart upload.

    The caller must still own the draft (401/403 first, as on every draft endpoint).
    """
    owned_draft(pid_value)
    raise RequestValidationError(
        [("shouldUseMultipart", "single-request uploads are not supported: configure Uppy with shouldUseMultipart: true")]
    )


def register_companion_routes(bp: Blueprint) -> None:
    """Add the Companion-compatible routes to the drafts blueprint."""
    base = "/<pid_value>/uppy/s3"
    bp.add_url_rule(f"{base}/multipart", "uppy_create", create_upload, methods=["POST"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>", "uppy_list_parts", list_parts, methods=["GET"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>", "uppy_abort", abort, methods=["DELETE"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>/batch", "uppy_sign_batch", sign_batch, methods=["GET"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>/<int:part_number>", "uppy_sign_part", sign_part, methods=["GET"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>/complete", "uppy_complete", complete, methods=["POST"])
    bp.add_url_rule(f"{base}/params", "uppy_params", simple_upload_params, methods=["GET"])
