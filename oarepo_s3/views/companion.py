"""Routes that speak Uppy Companion's S3 protocol, so stock ``@uppy/aws-s3`` uploads into a draft.

Mounted per draft under ``/draft/records/<pid>/uppy``; point Uppy at it with
``companionEndpoint`` (Uppy 6; ``endpoint`` in Uppy 4-5) and
``shouldUseMultipart: true``. Companion's create call carries no file size,
so the page must put it into the file's metadata::

    uppy.on("file-added", (file) => uppy.setFileMeta(file.id, { size: file.size }))

Uppy then picks parts of ``max(5 MiB, ceil(size / 10000))`` bytes, which is
the part size these routes plan. ``uploadId`` and ``key`` from the client are
never trusted: they must name an upload in progress in this very draft.

Beyond stock Uppy, for a client that sends parts in parallel (the demo's
page): ``metadata.partSize`` asks for a part size (checked like the REST
API's ``part_size``), and the create answer says which one was planned
(``partSize``); ``POST .../batch`` signs many parts in one request with each
part's ``Content-MD5`` signed into its URL, so S3 refuses bytes that do not
match it (the REST API's ``sign`` body, with the upload id checked).

An empty file has no part to send, so Uppy 6 sends it as one form POST
instead: ``s3/params`` answers, for ``metadata[size]=0`` only, this draft's
``s3/empty`` route, which creates the empty file the way ``size: 0`` does in
the REST API (no S3 URL is handed out, no payload reaches the app).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import drafts, service
from ..api import CONTENT_TYPE_PATTERN, CONTENT_TYPE_RULE, EMPTY_FILE_CHECKSUM, EmptyFile, MultipartUpload, validate_key
from ..errors import RequestValidationError, UploadNotFound
from ..permissions import require_authenticated
from ..results import UploadSession
from ..service import ReportedPart
from .bounds import body_bytes, load_json
from .common import owned_draft
from .parsing import MAX_PART_NUMBER, CompleteSchema, parse_json, parse_sign_request
from .serializers import DRAFTS, api_url, parts_json

MiB = 1024 * 1024
EMPTY_FORM_LIMIT = 64 * 1024
"""Largest body ``s3/empty`` reads: a form of field names and values around an empty file."""


def uppy_part_size(size: int) -> int:
    """The part size stock Uppy uses for a file of ``size`` bytes."""
    return max(5 * MiB, -(-size // MAX_PART_NUMBER))


def _session(pid_value: str, upload_id: str) -> tuple[drafts.DraftRecord, UploadSession]:
    """The draft's in-progress upload named by ``uploadId`` and ``?key=``, or 404."""
    record = owned_draft(pid_value)
    key = request.args.get("key")
    if not key:
        raise RequestValidationError([("key", "the 'key' query parameter is required")])
    session = service.upload_of(record.bucket_id, validate_key(key))
    if session.upload_id != upload_id:
        raise UploadNotFound(f"Upload {upload_id!r} is not the upload of {key!r} in this draft.")
    return record, session


def create_upload(pid_value: str) -> Response:
    """``POST <base>/s3/multipart {filename, type, metadata: {size}}`` -> ``{key, uploadId}``."""
    record = owned_draft(pid_value)
    body = load_json(body_bytes()) if request.mimetype == "application/json" else None
    if not isinstance(body, dict):
        raise RequestValidationError([("body", "must be a JSON object")])
    filename, content_type = body.get("filename"), body.get("type")
    metadata = body.get("metadata") or {}
    size = metadata.get("size") if isinstance(metadata, dict) else None
    if isinstance(size, str) and re.fullmatch(r"[0-9]{1,19}", size):  # Uppy's metadata may hold it as text
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int):
        raise RequestValidationError(
            [("metadata.size", "the file size is required: set it with uppy.setFileMeta(file.id, {size: file.size})")]
        )
    requested = _requested_part_size(metadata)
    key, content_type = _key_and_type(filename, content_type)
    values = {"pid_value": record.pid_value, "key": key}
    upload = MultipartUpload(
        key=key,
        base_uri=None,
        expires=None,
        size=size,
        part_size=uppy_part_size(size) if requested is None else requested,
        complete_url=api_url(f"{DRAFTS}.{DRAFTS}_upload_complete", **values),
        abort_url=api_url(f"{DRAFTS}.{DRAFTS}_upload_abort", **values),
        content_type=content_type,
        owner_id=require_authenticated(),
    )
    entry = service.start_upload(record.bucket_id, upload)
    assert entry.session is not None
    return jsonify({"key": key, "uploadId": entry.session.upload_id, "partSize": entry.session.part_size})


def _requested_part_size(metadata: dict[str, Any]) -> int | None:
    """``metadata.partSize`` (a number or its digits, as Uppy's metadata may hold it), or None when absent.

    :raises RequestValidationError: not a whole number of bytes.
    """
    value = metadata.get("partSize")
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestValidationError([("metadata.partSize", "must be a whole number of bytes")])
    return value


def _key_and_type(filename: Any, content_type: Any, *, name_field: str = "filename",
                  type_field: str = "type") -> tuple[str, str | None]:
    """The file's key and content type (``None`` when not given) from Uppy's ``filename`` and ``type``.

    :raises RequestValidationError: naming the field and its rule.
    """
    if not isinstance(filename, str) or not filename:
        raise RequestValidationError([(name_field, "must be a non-empty string (the file's name)")])
    key = validate_key(filename)
    if content_type is not None and not isinstance(content_type, str):
        raise RequestValidationError([(type_field, "must be a string")])
    if content_type and not re.match(CONTENT_TYPE_PATTERN, content_type):
        raise RequestValidationError([(type_field, CONTENT_TYPE_RULE)])
    return key, content_type or None


def list_parts(pid_value: str, upload_id: str) -> Response:
    """``GET <base>/s3/multipart/<uploadId>?key=`` -> ``[{PartNumber, ETag, Size}]`` (all pages)."""
    _, session = _session(pid_value, upload_id)
    return jsonify(parts_json(service.list_uploaded_parts(session)))


def sign_batch(pid_value: str, upload_id: str) -> Response:
    """``GET <base>/s3/multipart/<uploadId>/batch?key=&partNumbers=1,2`` -> ``{presignedUrls, expires}``.

    ``POST`` with the REST API's sign body (``{"parts": [1, 2], "content_md5": {"1": "<base64>"}}``)
    signs each given digest into its part's URL; the answer adds ``headers`` by part number (what
    each PUT must send).
    """
    _, session = _session(pid_value, upload_id)
    if request.method == "POST":
        return _sign_batch_with_digests(session)
    raw = request.args.get("partNumbers", "")
    try:
        numbers = [int(n) for n in raw.split(",") if n.strip()]
    except ValueError:
        raise RequestValidationError([("partNumbers", "must be comma-separated integers")]) from None
    if not numbers:
        raise RequestValidationError([("partNumbers", "at least one part number is required")])
    urls = service.sign_parts(session, numbers)
    return jsonify({"presignedUrls": {str(n): u for n, u in urls.items()}, "expires": service.url_lifetime(session)})


def _sign_batch_with_digests(session: UploadSession) -> Response:
    asked = parse_sign_request()
    urls = service.sign_parts(session, asked.parts, asked.md5s, asked.sha256s)
    headers = {str(n): asked.headers(n) for n in urls if asked.headers(n)}
    return jsonify({"presignedUrls": {str(n): u for n, u in urls.items()}, "headers": headers,
                    "expires": service.url_lifetime(session)})


def sign_part(pid_value: str, upload_id: str, part_number: int) -> Response:
    """``GET <base>/s3/multipart/<uploadId>/<partNumber>?key=`` -> ``{url, expires}``."""
    _, session = _session(pid_value, upload_id)
    url = service.sign_parts(session, [part_number])[part_number]
    return jsonify({"url": url, "expires": service.url_lifetime(session)})


def complete(pid_value: str, upload_id: str) -> Response:
    """``POST <base>/s3/multipart/<uploadId>/complete?key= {parts}`` -> ``{location}``."""
    record, session = _session(pid_value, upload_id)
    body = parse_json(CompleteSchema())
    parts = None
    if body["parts"] is not None:
        parts = [ReportedPart(p.get("PartNumber", p.get("PartNum")), p["ETag"]) for p in body["parts"]]
    completed = service.complete_upload(session, parts)
    location = api_url(f"{DRAFTS}.content", pid_value=record.pid_value, key=completed.file_key)
    return jsonify({"location": location, "key": completed.file_key})


def abort(pid_value: str, upload_id: str) -> Response:
    """``DELETE <base>/s3/multipart/<uploadId>?key=`` -> ``{}``."""
    record, session = _session(pid_value, upload_id)
    service.abort_file_upload(record.bucket_id, session.file_key)
    return jsonify({})


def simple_upload_params(pid_value: str) -> Response:
    """``GET <base>/s3/params?filename=&type=&metadata[size]=0`` -> ``{method, url, fields}``, for empty files only.

    Uppy 6 sends a 0-byte file in one form POST (it has no part to send): the
    answer points it at :func:`create_empty`. Any other file is refused with
    the advice to use multipart. The caller must own the draft (401/403
    first, as on every draft endpoint).
    """
    record = owned_draft(pid_value)
    if request.args.get("metadata[size]") != "0":
        raise RequestValidationError([(
            "shouldUseMultipart",
            "single-request uploads are only for empty files (metadata[size]=0): configure Uppy with "
            "shouldUseMultipart: true",
        )])
    key, content_type = _key_and_type(request.args.get("filename"), request.args.get("type"))
    fields = {"key": key, **({"Content-Type": content_type} if content_type else {})}
    url = api_url(f"{DRAFTS}.uppy_empty", pid_value=record.pid_value)
    return jsonify({"method": "POST", "url": url, "fields": fields})


def create_empty(pid_value: str) -> Response:
    """``POST <base>/s3/empty`` (a form: ``key``, ``Content-Type``, an empty ``file``) -> 204 with the empty ETag.

    The empty file is created complete, as ``size: 0`` does in the REST API
    (409 when the key exists). A body over :data:`EMPTY_FORM_LIMIT`, or a
    ``file`` that is not empty, is refused before anything is stored: file
    bytes never go through the app.
    """
    record = owned_draft(pid_value)
    if request.content_length is None or request.content_length > EMPTY_FORM_LIMIT:
        raise RequestValidationError([(
            "file", f"must be empty: this route reads a form of at most {EMPTY_FORM_LIMIT} bytes with a Content-Length "
                    "(other files are uploaded with multipart)",
        )])
    upload = request.files.get("file")
    if upload is None:
        raise RequestValidationError([("file", "is required: the form's file field, empty")])
    if upload.stream.read(1):
        raise RequestValidationError([("file", "must be empty (0 bytes): other files are uploaded with multipart")])
    key, content_type = _key_and_type(request.form.get("key"), request.form.get("Content-Type"),
                                      name_field="key", type_field="Content-Type")
    entry = service.create_empty_file(record.bucket_id, EmptyFile(key, content_type))
    response = Response(status=204)
    response.headers["ETag"] = f'"{EMPTY_FILE_CHECKSUM.removeprefix("md5:")}"'
    response.headers["Location"] = api_url(f"{DRAFTS}.content", pid_value=record.pid_value, key=entry.key)
    return response


def register_companion_routes(bp: Blueprint) -> None:
    """Add the Companion-compatible routes to the drafts blueprint."""
    base = "/<pid_value>/uppy/s3"
    bp.add_url_rule(f"{base}/multipart", "uppy_create", create_upload, methods=["POST"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>", "uppy_list_parts", list_parts, methods=["GET"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>", "uppy_abort", abort, methods=["DELETE"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>/batch", "uppy_sign_batch", sign_batch, methods=["GET", "POST"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>/<int:part_number>", "uppy_sign_part", sign_part, methods=["GET"])
    bp.add_url_rule(f"{base}/multipart/<upload_id>/complete", "uppy_complete", complete, methods=["POST"])
    bp.add_url_rule(f"{base}/params", "uppy_params", simple_upload_params, methods=["GET"])
    bp.add_url_rule(f"{base}/empty", "uppy_empty", create_empty, methods=["POST"])
