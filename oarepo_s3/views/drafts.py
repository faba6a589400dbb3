"""The draft-records REST API (``/draft/records``) and published records (``/records``).

Every handler: parse -> check permission -> call :mod:`oarepo_s3.drafts` /
:mod:`oarepo_s3.service` -> serialize. Errors are JSON (see :mod:`oarepo_s3.errors`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from .. import drafts, service
from ..api import EmptyFile, MultipartUpload, validate_key
from ..errors import RequestValidationError
from ..permissions import require_authenticated, require_draft_owner
from ..ratelimit import check_rate_limits
from .bounds import limit_request_body
from .common import json_error, owned_draft
from .companion import register_companion_routes
from .multipart import multipart_actions
from .parsing import CreateDraftSchema, init_upload_schema, parse_json, parse_json_or_form, parse_sign_request
from .security import check_cross_site_request
from .serializers import DRAFTS, FILE_ACTIONS, RECORDS, api_url, file_json, parts_json, record_json

# --- drafts ------------------------------------------------------------------


def create_draft() -> Response:
    """``POST /draft/records/`` -> 201, a new draft owned by the caller."""
    user_id = require_authenticated()
    body = parse_json(CreateDraftSchema())
    record = drafts.create_draft(user_id, body["metadata"])
    data = record_json(record)
    response = jsonify(data)
    response.status_code = 201
    response.headers["Location"] = data["links"]["self"]
    return response


def get_draft(pid_value: str) -> Response:
    """``GET /draft/records/<pid>``."""
    record = drafts.resolve(pid_value)
    require_draft_owner(record)
    return jsonify(record_json(record))


def publish(pid_value: str) -> Response:
    """``POST /draft/records/<pid>/publish`` -> the published record; 409 while uploads are pending."""
    record = drafts.publish(owned_draft(pid_value))
    return jsonify(record_json(record))


def list_draft_files(pid_value: str) -> Response:
    """``GET /draft/records/<pid>/files/``."""
    record = owned_draft(pid_value)
    return jsonify({"entries": [file_json(record, e) for e in service.list_files(record.bucket_id)]})


def init_upload(pid_value: str) -> tuple[Response, int]:
    """``POST /draft/records/<pid>/files/?multipart=True`` -> 201, the file and its session."""
    record = owned_draft(pid_value)
    if request.args.get("multipart", "").lower() not in ("true", "1"):
        raise RequestValidationError(
            [("multipart", "only direct multipart uploads are supported: add ?multipart=True")]
        )
    body = parse_json_or_form(init_upload_schema)
    key = validate_key(body["key"])
    content_type = body["multipart_content_type"]
    if body["size"] == 0:  # nothing to upload: the empty file is created complete, without a multipart upload
        entry = service.create_empty_file(record.bucket_id, EmptyFile(key, content_type))
        return jsonify(file_json(record, entry)), 201
    file_url = api_url(f"{DRAFTS}.file", pid_value=record.pid_value, key=key)
    upload = MultipartUpload(
        key=key,
        base_uri=None,
        expires=None,
        size=body["size"],
        part_size=body["part_size"],
        complete_url=file_url + FILE_ACTIONS["complete"],  # the session echoes its complete and abort URLs
        abort_url=file_url + FILE_ACTIONS["abort"],
        content_type=content_type,
        owner_id=require_authenticated(),
    )
    entry = service.start_upload(record.bucket_id, upload)
    return jsonify(file_json(record, entry, parts_url=True)), 201


def get_draft_file(pid_value: str, key: str) -> Response:
    """``GET /draft/records/<pid>/files/<key>``."""
    record = owned_draft(pid_value)
    return jsonify(file_json(record, service.get_file(record.bucket_id, validate_key(key))))


def delete_draft_file(pid_value: str, key: str) -> tuple[str, int]:
    """``DELETE /draft/records/<pid>/files/<key>`` -> 204 (aborts a pending upload)."""
    service.delete_file(owned_draft(pid_value).bucket_id, validate_key(key))
    return "", 204


def resume(pid_value: str, key: str) -> Response:
    """``GET .../files/<key>/multipart``: the session and the parts S3 already holds (all pages)."""
    session = service.upload_of(owned_draft(pid_value).bucket_id, validate_key(key))
    parts = service.list_uploaded_parts(session)
    return jsonify({**session.to_json(), "parts": parts_json(parts)})


def sign(pid_value: str, key: str) -> Response:
    """``POST .../files/<key>/multipart/sign {"parts": [1, 2]}``: fresh presigned part URLs."""
    session = service.upload_of(owned_draft(pid_value).bucket_id, validate_key(key))
    asked = parse_sign_request()
    urls = service.sign_parts(session, asked.parts, asked.md5s, asked.sha256s)
    return jsonify({"parts": [_signed_part(n, u, asked.headers(n)) for n, u in urls.items()],
                    "expires_in": service.url_lifetime(session)})


def _signed_part(number: int, url: str, headers: dict[str, str]) -> dict[str, Any]:
    """One signed part; ``headers`` lists what the PUT must send (the signed digests)."""
    return {"PartNumber": number, "url": url, **({"headers": headers} if headers else {})}


def draft_content(pid_value: str, key: str) -> Response:
    """``GET .../files/<key>/content`` -> 302 to a presigned S3 GET; 409 while pending."""
    return service.send_file(owned_draft(pid_value).bucket_id, validate_key(key))


# --- published records --------------------------------------------------------


def get_record(pid_value: str) -> Response:
    """``GET /records/<pid>``."""
    return jsonify(record_json(drafts.resolve(pid_value, status=drafts.PUBLISHED)))


def list_record_files(pid_value: str) -> Response:
    """``GET /records/<pid>/files/``."""
    record = drafts.resolve(pid_value, status=drafts.PUBLISHED)
    return jsonify({"entries": [file_json(record, e) for e in service.list_files(record.bucket_id)]})


def get_record_file(pid_value: str, key: str) -> Response:
    """``GET /records/<pid>/files/<key>``."""
    record = drafts.resolve(pid_value, status=drafts.PUBLISHED)
    return jsonify(file_json(record, service.get_file(record.bucket_id, validate_key(key))))


def record_content(pid_value: str, key: str) -> Response:
    """``GET /records/<pid>/files/<key>/content`` -> 302 to a presigned S3 GET."""
    return service.send_file(drafts.resolve(pid_value, status=drafts.PUBLISHED).bucket_id, validate_key(key))


# --- blueprints -----------------------------------------------------------------


def _blueprint(name: str, url_prefix: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=url_prefix)
    bp.before_request(limit_request_body)
    bp.before_request(check_cross_site_request)
    bp.register_error_handler(HTTPException, json_error)
    return bp


def _not_routed(unrouted: str) -> NoReturn:
    """Any other path under the API's prefix: a JSON 404, or 405 naming the methods the path allows.

    Flask routes before it knows the blueprint, so without this rule an
    unknown path or method of the API would get the app's HTML error page.
    """
    adapter = current_app.create_url_adapter(request)
    assert adapter is not None
    allowed = set()
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        try:
            rule, _ = adapter.match(request.path, method=method, return_rule=True)
        except HTTPException:
            continue
        if rule.endpoint != request.endpoint:
            allowed.add(method)
    if allowed:
        raise MethodNotAllowed(valid_methods=sorted(allowed))
    raise NotFound()


def _route_the_rest(bp: Blueprint) -> None:
    bp.add_url_rule("/<filekey:unrouted>", "not_routed", _not_routed,
                    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])


def create_drafts_blueprint(app: Flask) -> Blueprint:
    """The draft-records API at ``OAREPO_S3_DRAFTS_URL_PREFIX`` (no routes when ``OAREPO_S3_REST_API`` is off)."""
    bp = _blueprint(DRAFTS, app.config["OAREPO_S3_DRAFTS_URL_PREFIX"])
    if not app.config.get("OAREPO_S3_REST_API", True):
        return bp
    bp.before_request(check_rate_limits)
    rules: list[tuple[str, str, Callable[..., Any], list[str]]] = [
        ("/", "create", create_draft, ["POST"]),
        ("/<pid_value>", "record", get_draft, ["GET"]),
        ("/<pid_value>/publish", "publish", publish, ["POST"]),
        ("/<pid_value>/files/", "files", list_draft_files, ["GET"]),
        ("/<pid_value>/files/", "init_upload", init_upload, ["POST"]),
        ("/<pid_value>/files/<filekey:key>", "file", get_draft_file, ["GET"]),
        ("/<pid_value>/files/<filekey:key>", "delete_file", delete_draft_file, ["DELETE"]),
        ("/<pid_value>/files/<filekey:key>/content", "content", draft_content, ["GET"]),
        ("/<pid_value>/files/<filekey:key>/multipart", "multipart", resume, ["GET"]),
        ("/<pid_value>/files/<filekey:key>/multipart/sign", "sign", sign, ["POST"]),
    ]
    for rule, endpoint, view, methods in rules:
        bp.add_url_rule(rule, endpoint, view, methods=methods)
    for rule, view in multipart_actions(DRAFTS, None, None, None, True).items():
        bp.add_url_rule(f"/<pid_value>/{rule}", view_func=view, methods=["POST"])
    register_companion_routes(bp)
    _route_the_rest(bp)
    return bp


def create_records_blueprint(app: Flask) -> Blueprint:
    """Published records, read-only, mounted at ``OAREPO_S3_RECORDS_URL_PREFIX`` (no routes when
    ``OAREPO_S3_REST_API`` is off)."""
    bp = _blueprint(RECORDS, app.config["OAREPO_S3_RECORDS_URL_PREFIX"])
    if not app.config.get("OAREPO_S3_REST_API", True):
        return bp
    bp.add_url_rule("/<pid_value>", "record", get_record)
    bp.add_url_rule("/<pid_value>/files/", "files", list_record_files)
    bp.add_url_rule("/<pid_value>/files/<filekey:key>", "file", get_record_file)
    bp.add_url_rule("/<pid_value>/files/<filekey:key>/content", "content", record_content)
    _route_the_rest(bp)
    return bp
