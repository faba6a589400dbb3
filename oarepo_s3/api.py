"""The public Python API: describe a multipart upload, hand it to ``record.files``.

::

    mu = MultipartUpload(key="data.bin", base_uri=files.bucket.location.uri,
                         expires=3600, size=size, part_size=None,
                         complete_url=..., abort_url=...)
    record.files["data.bin"] = mu     # creates the upload in S3, fills mu.session
    db.session.commit()

``mu.session`` (and ``record.files[key]["multipart_upload"]``) then tells any
client where to PUT each part; :func:`oarepo_s3.service.complete_upload` and
:func:`oarepo_s3.service.abort_upload` finish it.
"""

from __future__ import annotations

import enum
import mimetypes
import re
import unicodedata
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import current_app

from .errors import InvalidUploadRequest
from .sizes import PartLimits, choose_part_size, part_count

if TYPE_CHECKING:
    from .results import UploadSession


class MultipartUploadStatus(enum.StrEnum):
    """Lifecycle of an upload: ``in_progress`` then exactly one terminal state."""

    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    ABORTED = "aborted"
    EXPIRED = "expired"


CONTENT_TYPE_RULE = "must be a media type of printable ASCII, at most 255 characters (e.g. application/octet-stream)"
CONTENT_TYPE_PATTERN = r"^[\x21-\x7e][\x20-\x7e]{0,254}\Z"
"""A content type becomes the S3 object's Content-Type header: other characters break the request's signature."""


def validate_content_type(content_type: Any) -> str | None:
    """Check a content type (:data:`CONTENT_TYPE_RULE`) and return it; None passes.

    It travels as an HTTP header to S3 and back to every downloader, so
    anything else is refused up front rather than failing S3's signature
    check (a misleading 503) or splitting a header.
    """
    if content_type is None:
        return None
    if not isinstance(content_type, str) or not re.match(CONTENT_TYPE_PATTERN, content_type):
        raise InvalidUploadRequest("content_type", CONTENT_TYPE_RULE)
    return content_type


RESERVED_LAST_SEGMENTS = frozenset(("content", "multipart", "complete-multipart", "abort-multipart", "sign"))
"""Last path segments the REST API routes as actions: a key ``a/content`` would be ``a``'s content."""

_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
"""Control, format (bidi overrides, zero-width), surrogate, line and paragraph separator characters."""


def validate_key(key: Any) -> str:
    """Check a file's key (its name in the record) and return it: the one key rule of every door.

    Rules: a non-empty string of at most ``FILES_REST_OBJECT_KEY_MAX_LEN``
    characters (files-rest's limit, 255 by default), valid Unicode (no lone
    surrogates) without control, format (bidi overrides, zero-width...) or
    line-separator characters, which break headers and logs or make a name
    read differently than it is (``evil<U+202E>txt.exe`` shows as
    ``evilexe.txt``). ``/`` may separate folder-like segments, but the key
    may not start or end with ``/`` nor
    contain empty, ``.`` or ``..`` segments or a backslash, so that a key
    never looks like a path that escapes anything when a client saves the
    file locally; nor may its last segment be one of the REST API's action
    names (:data:`RESERVED_LAST_SEGMENTS`).

    :raises InvalidUploadRequest: naming ``key`` and the rule broken.
    """
    if not isinstance(key, str) or not key:
        raise InvalidUploadRequest("key", "must be a non-empty string")
    max_length = current_app.config["FILES_REST_OBJECT_KEY_MAX_LEN"]
    if len(key) > max_length:
        raise InvalidUploadRequest("key", f"must be at most {max_length} characters")
    for c in key:
        category = unicodedata.category(c)
        if category == "Cs":
            raise InvalidUploadRequest("key", "must be valid Unicode (no lone surrogates)")
        if category in _REFUSED_CATEGORIES:
            raise InvalidUploadRequest("key", f"must not contain control, format or separator characters "
                                              f"(U+{ord(c):04X})")
    if "\\" in key:
        raise InvalidUploadRequest("key", "must not contain a backslash")
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidUploadRequest(
            "key", "must not start or end with '/' nor contain empty, '.' or '..' segments"
        )
    if len(segments) > 1 and segments[-1] in RESERVED_LAST_SEGMENTS:
        raise InvalidUploadRequest("key", f"must not end with '/{segments[-1]}' (reserved by the API's URLs)")
    return key


def validate_size(size: Any, max_size: int) -> int:
    """Check a declared file size (1 byte up to ``max_size``) and return it."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidUploadRequest("size", "must be an integer number of bytes")
    if size <= 0:
        raise InvalidUploadRequest("size", "must be greater than zero")
    if size > max_size:
        raise InvalidUploadRequest("size", f"must be at most {max_size} bytes")
    return size


def validate_expires(expires: Any, minimum: timedelta, maximum: timedelta) -> timedelta:
    """Turn ``expires`` (seconds or a timedelta) into a timedelta within bounds."""
    if isinstance(expires, timedelta):
        value = expires
    elif isinstance(expires, int) and not isinstance(expires, bool):
        value = timedelta(seconds=expires)
    else:
        raise InvalidUploadRequest("expires", "must be a number of seconds or a timedelta")
    if not minimum <= value <= maximum:
        raise InvalidUploadRequest(
            "expires",
            f"must be between {int(minimum.total_seconds())} and "
            f"{int(maximum.total_seconds())} seconds",
        )
    return value


def part_limits_from_config(config: Mapping[str, Any]) -> PartLimits:
    """Read the part bounds of the current app."""
    return PartLimits(
        min_part_size=config["OAREPO_S3_MIN_PART_SIZE"],
        max_part_size=config["OAREPO_S3_MAX_PART_SIZE"],
        max_parts=config["OAREPO_S3_MAX_PARTS"],
        default_part_size=config["OAREPO_S3_DEFAULT_PART_SIZE"],
    )


class MultipartUpload:
    """A request for a direct multipart upload, used in place of a stream.

    Validated on construction (needs an app context for the configured
    limits), so a bad request fails before anything is created in S3 or the
    database. Assigning it to ``record.files[key]`` (or passing it as the
    ``stream`` of ``ObjectVersion.create``) makes the storage start the
    upload and fill :attr:`session`.

    :param key: file name in the bucket.
    :param base_uri: the bucket's location URI (``s3://bucket``); the storage
        checks the file really goes there.
    :param expires: how long the upload may stay in progress (seconds or a
        timedelta; None for ``OAREPO_S3_MULTIPART_EXPIRES``).
    :param size: the exact size of the file in bytes.
    :param part_size: bytes per part, or None to let the server choose.
    :param complete_url: where the client POSTs to complete (echoed in the session).
    :param abort_url: where the client POSTs to abort (echoed in the session).
    :param content_type: stored on the S3 object; guessed from ``key`` when None.
    :param owner_id: id of the user the upload belongs to, or None.
    :raises InvalidUploadRequest: naming the field and the rule broken.
    """

    def __init__(
        self,
        key: str,
        base_uri: str | None,
        expires: int | timedelta | None,
        size: int,
        part_size: int | None = None,
        complete_url: str | None = None,
        abort_url: str | None = None,
        *,
        content_type: str | None = None,
        owner_id: int | None = None,
    ):
        """Validate everything and plan the parts."""
        config = current_app.config
        self.key = validate_key(key)
        if base_uri is not None and (not isinstance(base_uri, str) or not base_uri.startswith("s3://")):
            raise InvalidUploadRequest("base_uri", "must be an s3:// location URI")
        self.base_uri = base_uri
        self.size = validate_size(size, config["OAREPO_S3_MAX_FILE_SIZE"])
        self.expires = validate_expires(
            config["OAREPO_S3_MULTIPART_EXPIRES"] if expires is None else expires,
            config["OAREPO_S3_MULTIPART_MIN_EXPIRES"],
            config["OAREPO_S3_MULTIPART_MAX_EXPIRES"],
        )
        self.part_size = choose_part_size(self.size, part_size, part_limits_from_config(config))
        self.num_parts = part_count(self.size, self.part_size)
        self.content_type = (
            validate_content_type(content_type) or mimetypes.guess_type(self.key)[0] or "application/octet-stream"
        )
        self.complete_url = complete_url
        self.abort_url = abort_url
        self.owner_id = owner_id
        self.session: UploadSession | None = None
        """Set once the upload exists in S3: a read-only mapping (see :mod:`oarepo_s3.results`)."""

    @property
    def chunk_size(self) -> int:
        """The seed's name for :attr:`part_size`."""
        return self.part_size

    @property
    def num_chunks(self) -> int:
        """The seed's name for :attr:`num_parts`."""
        return self.num_parts

    def __bool__(self) -> bool:
        """Always true: ``ObjectVersion.create`` only saves a truthy ``stream``."""
        return True

    def __repr__(self) -> str:
        """Show what matters when debugging."""
        return f"<MultipartUpload key={self.key!r} size={self.size} parts={self.num_parts}x{self.part_size}>"


EMPTY_FILE_CHECKSUM = "md5:d41d8cd98f00b204e9800998ecf8427e"
"""The checksum of zero bytes, as invenio-files-rest writes checksums."""


class EmptyFile:
    """The ``stream`` of an empty file for ``ObjectVersion.create``.

    S3 has no multipart upload of zero parts, and there is nothing to upload:
    the storage writes the empty object itself (one PutObject without
    payload) and the file is complete at once.

    :param content_type: stored on the S3 object; guessed from ``key`` when None.
    :raises InvalidUploadRequest: a key or content type that breaks a rule.
    """

    def __init__(self, key: str, content_type: str | None = None):
        """Validate like :class:`MultipartUpload` does."""
        self.key = validate_key(key)
        self.content_type = (
            validate_content_type(content_type) or mimetypes.guess_type(self.key)[0] or "application/octet-stream"
        )

    def __bool__(self) -> bool:
        """Always true: ``ObjectVersion.create`` only saves a truthy ``stream``."""
        return True
