"""Bounds on what a request may send: body size, JSON nesting, numbers, strings.

Every body of the API goes through here before anything looks at it:

- at most ``OAREPO_S3_MAX_REQUEST_BYTES`` (413, also for a body sent
  without a ``Content-Length``: werkzeug stops reading at the limit);
- JSON nested at most :data:`MAX_JSON_DEPTH` levels (Python's parser would
  otherwise recurse until it fails, a 500);
- integers within 64 bits, no ``NaN``/``Infinity`` (or a float that
  overflows to them), no lone surrogates in strings or keys (they cannot be
  stored or sent on as UTF-8).

Each refusal is a 400 (413) in the API's JSON error shape, naming the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import RequestTooLarge, RequestValidationError

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a JSON body may have."""

TOO_DEEP = f"must not nest arrays and objects deeper than {MAX_JSON_DEPTH} levels"

MAX_JSON_INTEGER = 2**63 - 1
"""Largest integer (in absolute value) a JSON body may hold: what the database and S3 can take."""


def limit_request_body() -> None:
    """Bound this request's body by ``OAREPO_S3_MAX_REQUEST_BYTES`` (a ``before_request`` hook, and called by parsing).

    :raises RequestTooLarge: the ``Content-Length`` says more (413).
    """
    limit: int = current_app.config["OAREPO_S3_MAX_REQUEST_BYTES"]
    # One byte more than allowed: werkzeug cuts a body without a Content-Length at this length
    # (silently), so a body read to its end that is longer than the limit was too large.
    request.max_content_length = limit + 1
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLarge(limit)


def body_bytes() -> bytes:
    """The request's body, read within the limit (cached for later readers).

    :raises RequestTooLarge: it is longer than the limit, whatever its ``Content-Length`` said.
    """
    limit_request_body()
    limit: int = current_app.config["OAREPO_S3_MAX_REQUEST_BYTES"]
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise RequestTooLarge(limit) from None
    if len(data) > limit:
        raise RequestTooLarge(limit)
    return data


def load_json(raw: bytes | str) -> Any:
    """Parse a JSON body within the bounds of this module.

    :raises RequestValidationError: invalid JSON, or out of bounds (naming where).
    """
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestValidationError([("body", TOO_DEEP)]) from None
    except ValueError:  # JSONDecodeError, an invalid encoding, an integer of over 4,300 digits
        raise RequestValidationError([("body", "must be valid JSON in UTF-8")]) from None
    check_json(data)
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_json(data: Any) -> None:
    """Walk parsed JSON (no recursion) and refuse what is out of bounds.

    Only containers go on the stack and places are named only when
    refused: a 10,000-part list costs one pass of type checks.

    :raises RequestValidationError: naming the first offending place, e.g. ``metadata.a[3]``.
    """
    stack: list[tuple[Any, int, str]] = [(data, 0, "")] if _check_value(data, "") else []
    while stack:
        container, depth, where = stack.pop()
        if depth >= MAX_JSON_DEPTH:
            _refuse(where, TOO_DEEP)
        if type(container) is dict:
            for key, item in container.items():
                _check_string(key, where)
                if _check_value(item, where, key):
                    stack.append((item, depth + 1, f"{where}.{key}" if where else str(key)))
        else:
            for i, item in enumerate(container):
                if _check_value(item, where, i):
                    stack.append((item, depth + 1, f"{where}[{i}]"))


def _check_value(value: Any, where: str, at: str | int | None = None) -> bool:
    """Check a scalar (True: a container, to be walked)."""
    kind = type(value)
    if kind is dict or kind is list:
        return True
    if kind is int:
        if -MAX_JSON_INTEGER <= value <= MAX_JSON_INTEGER:
            return False
        _refuse(_place(where, at), f"must be an integer of at most {MAX_JSON_INTEGER} in absolute value")
    elif kind is str:
        _check_string(value, where, at)
    elif kind is float and not math.isfinite(value):
        _refuse(_place(where, at), "must be a finite number")
    return False


def _place(where: str, at: str | int | None) -> str:
    if at is None:
        return where
    if isinstance(at, int):
        return f"{where}[{at}]"
    return f"{where}.{at}" if where else at


def _check_string(value: str, where: str, at: str | int | None = None) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _refuse(_place(where, at if at is not None else value), "must be valid Unicode (no lone surrogates)")


def _refuse(where: str, rule: str) -> None:
    # A field name made of the request's own keys: keep it printable and short.
    name = (where or "body").encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:200]
    raise RequestValidationError([(name, rule)])
