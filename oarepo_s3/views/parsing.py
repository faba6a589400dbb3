"""Request parsing: marshmallow schemas, and their errors as JSON field errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, NoReturn

from flask import request
from marshmallow import RAISE, Schema, ValidationError, fields, missing, validate, validates_schema
from webargs.flaskparser import FlaskParser

from ..api import CONTENT_TYPE_PATTERN, CONTENT_TYPE_RULE
from ..errors import RequestValidationError
from .bounds import body_bytes, limit_request_body, load_json

MAX_PART_NUMBER = 10_000


class _Parser(FlaskParser):
    """webargs parser whose errors are our JSON 400 with one entry per field."""

    DEFAULT_UNKNOWN_BY_LOCATION = {"json": RAISE, "form": RAISE, "query": RAISE, "json_or_form": RAISE}

    def handle_error(self, error: ValidationError, req: Any, schema: Schema, *, error_status_code: int | None,
                     error_headers: Any) -> NoReturn:
        """Raise :class:`RequestValidationError` naming every field and rule."""
        raise RequestValidationError(flatten_messages(error.messages))

    def _handle_invalid_json_error(self, error: Exception, req: Any, *args: Any, **kwargs: Any) -> NoReturn:
        raise RequestValidationError([("body", "must be valid JSON")])

    def _raw_load_json(self, req: Any) -> Any:
        """The JSON body, read and parsed within :mod:`.bounds` (webargs would parse it unbounded)."""
        if req.mimetype != "application/json":
            return missing
        return load_json(body_bytes())


parser = _Parser()


def flatten_messages(messages: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``{"json": {"parts": {0: {"ETag": ["..."]}}}}`` -> ``[("parts[0].ETag", "...")]``."""
    if isinstance(messages, dict):
        if not prefix and set(messages) <= {"json", "form", "query", "json_or_form", "querystring"}:
            return [p for v in messages.values() for p in flatten_messages(v, prefix)]
        out: list[tuple[str, str]] = []
        for key, value in messages.items():
            if key == "_schema":
                name = prefix or "body"
            elif isinstance(key, int):
                name = f"{prefix}[{key}]"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten_messages(value, name))
        return out
    if isinstance(messages, list):
        return [(prefix or "body", str(m)) for m in messages]
    return [(prefix or "body", str(messages))]


CONTENT_TYPE = validate.Regexp(CONTENT_TYPE_PATTERN, error=CONTENT_TYPE_RULE)
"""The rule of :func:`oarepo_s3.api.validate_content_type`, applied while parsing."""


def integer(*, strict: bool = True, **kwargs: Any) -> fields.Integer:
    """An integer field; JSON must send a number (strict), forms send digits."""
    return fields.Integer(strict=strict, **kwargs)


class CreateDraftSchema(Schema):
    """``POST /draft/records/``: optional free-form metadata."""

    metadata = fields.Dict(keys=fields.String(), load_default=dict)


@cache  # built once for each of strict and not (a class and its fields cost more than the parsing)
def init_upload_schema(strict: bool) -> Schema:
    """``POST .../files/?multipart=True``: the seed's fields, plus an optional part size."""

    class InitUploadSchema(Schema):
        key = fields.String(required=True)
        size = integer(strict=strict, required=True, validate=validate.Range(min=0, error="must be 0 or more bytes"))
        multipart_content_type = fields.String(load_default=None, validate=CONTENT_TYPE)
        part_size = integer(strict=strict, load_default=None, allow_none=True)

    return InitUploadSchema()


class PartSchema(Schema):
    """A part the client uploaded: the seed's ``PartNum`` or S3's ``PartNumber``, and its ETag."""

    ETag = fields.String(required=True, validate=validate.Length(min=1, max=256))
    PartNum = integer(validate=validate.Range(1, MAX_PART_NUMBER))
    PartNumber = integer(validate=validate.Range(1, MAX_PART_NUMBER))
    Size = integer(validate=validate.Range(0))

    @validates_schema
    def one_number(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Exactly one of PartNum / PartNumber."""
        if ("PartNum" in data) == ("PartNumber" in data):
            raise ValidationError("give exactly one of 'PartNum' or 'PartNumber'", "PartNumber")


class CompleteSchema(Schema):
    """``POST .../complete-multipart``: the parts, or nothing to take S3's list."""

    parts = fields.List(fields.Nested(PartSchema), load_default=None, validate=validate.Length(max=MAX_PART_NUMBER))


class PartNumbers(fields.Field):
    """A list of 1..10,000 part numbers, checked in one pass.

    Signing a part costs ~2 µs; a marshmallow field per list element cost more
    than the signing itself, so the list is validated here directly.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[int]:
        if not isinstance(value, list):
            raise ValidationError("Not a valid list.")
        if not 1 <= len(value) <= MAX_PART_NUMBER:
            raise ValidationError(f"Length must be between 1 and {MAX_PART_NUMBER}.")
        errors: dict[int, list[str]] = {}
        for i, n in enumerate(value):
            if type(n) is not int:
                errors[i] = ["Not a valid integer."]
            elif not 1 <= n <= MAX_PART_NUMBER:
                errors[i] = [f"Must be greater than or equal to 1 and less than or equal to {MAX_PART_NUMBER}."]
        if errors:
            raise ValidationError(errors)
        return value


def _digests_by_part() -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[1-9][0-9]{0,4}$", error="must be a part number")),
        values=fields.String(),
        load_default=None,
    )


class SignSchema(Schema):
    """``POST .../multipart/sign``: the part numbers to sign, optionally with their MD5s or SHA-256s."""

    parts = PartNumbers(required=True)
    content_md5 = _digests_by_part()
    content_sha256 = _digests_by_part()


@dataclass(frozen=True)
class SignRequest:
    """A parsed sign body (:class:`SignSchema`): the part numbers and the digests to sign into their URLs."""

    parts: list[int]
    md5s: dict[int, str]
    sha256s: dict[int, str]

    def headers(self, number: int) -> dict[str, str]:
        """What the PUT of part ``number`` must send: its signed digests."""
        return {**({"Content-MD5": self.md5s[number]} if number in self.md5s else {}),
                **({"x-amz-content-sha256": self.sha256s[number]} if number in self.sha256s else {})}


def parse_sign_request() -> SignRequest:
    """The JSON sign body of the REST API and of Uppy's batch route. :raises RequestValidationError: bad body."""
    body = parse_json(SignSchema())
    numbers = body["parts"]
    if len(set(numbers)) != len(numbers):
        raise RequestValidationError([("parts", "part numbers must not repeat")])
    return SignRequest(numbers, {int(n): d for n, d in (body["content_md5"] or {}).items()},
                       {int(n): d for n, d in (body["content_sha256"] or {}).items()})


def parse_json(schema: Schema) -> dict[str, Any]:
    """Parse the JSON body (an empty body counts as ``{}``)."""
    if not body_bytes():
        try:
            loaded: dict[str, Any] = schema.load({})
        except ValidationError as e:
            raise RequestValidationError(flatten_messages(e.messages)) from None
        return loaded
    if request.mimetype != "application/json":
        raise RequestValidationError([("Content-Type", "must be application/json")])
    parsed: dict[str, Any] = parser.parse(schema, request, location="json")
    return parsed


def parse_json_or_form(schema_factory: Callable[..., Schema]) -> dict[str, Any]:
    """Parse a JSON body (strict types) or a form-encoded one (digits accepted), as the seed allowed."""
    parsed: dict[str, Any]
    limit_request_body()
    if request.mimetype == "application/json":
        parsed = parser.parse(schema_factory(strict=True), request, location="json")
        return parsed
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        parsed = parser.parse(schema_factory(strict=False), request, location="form")
        return parsed
    raise RequestValidationError([("Content-Type", "must be application/json or application/x-www-form-urlencoded")])
