"""JSON representations of records, files and upload sessions, with their links."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, url_for

from ..drafts import PUBLISHED, DraftRecord
from ..results import FileEntry, UploadedPart

DRAFTS = "oarepo_s3_drafts"
RECORDS = "oarepo_s3_records"

FILE_ACTIONS = {
    "content": "/content",
    "multipart": "/multipart",
    "sign": "/multipart/sign",
    "complete": "/complete-multipart",
    "abort": "/abort-multipart",
}
"""A file's action URLs: its own URL (``.../files/<key>``) and these suffixes, the rules of
:mod:`.drafts` and :mod:`.multipart` (one ``url_for`` a file instead of one a link)."""


def api_url(endpoint: str, **values: Any) -> str:
    """A URL the API answers or stores: absolute only on a host the app was configured for, else a path.

    With ``SERVER_NAME`` the host is that name; with ``TRUSTED_HOSTS``
    Flask has already refused (400) a request whose ``Host`` is not one of
    them. Without either, the ``Host`` header is whatever the client sent:
    a link built from it could point anywhere (cache poisoning, links in
    stored sessions), so the path alone is given, relative to the API's host.
    """
    config = current_app.config
    return url_for(endpoint, _external=bool(config.get("SERVER_NAME") or config.get("TRUSTED_HOSTS")), **values)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def record_json(record: DraftRecord) -> dict[str, Any]:
    """A draft or published record."""
    pid = record.pid_value
    published = record.status == PUBLISHED
    bp = RECORDS if published else DRAFTS
    links = {"self": api_url(f"{bp}.record", pid_value=pid), "files": api_url(f"{bp}.files", pid_value=pid)}
    if published:
        links["draft"] = api_url(f"{DRAFTS}.record", pid_value=pid)
    else:
        links["publish"] = api_url(f"{DRAFTS}.publish", pid_value=pid)
        links["uppy"] = api_url(f"{DRAFTS}.record", pid_value=pid) + "/uppy"
        links["record"] = api_url(f"{RECORDS}.record", pid_value=pid)
    return {
        "id": pid,
        "status": record.status,
        "metadata": record.get("metadata", {}),
        "owners": record.owners,
        "created": _iso(record.created),
        "updated": _iso(record.updated),
        "links": links,
    }


def file_json(record: DraftRecord, entry: FileEntry, *, parts_url: bool = False) -> dict[str, Any]:
    """A file of a record: pending while its upload is in progress.

    :param parts_url: include the session's presigned part URLs (the answer to starting an upload).
    """
    session = entry.session
    pid, key = record.pid_value, entry.key
    published = record.status == PUBLISHED
    bp = RECORDS if published else DRAFTS
    file_url = api_url(f"{bp}.file", pid_value=pid, key=key)
    links = {"self": file_url}
    if not entry.pending:
        links["content"] = file_url + FILE_ACTIONS["content"]
    elif not published:
        for name in ("multipart", "sign", "complete", "abort"):
            links[name] = file_url + FILE_ACTIONS[name]
    data = {
        "key": key,
        "size": entry.size,
        "mimetype": entry.mimetype,
        "checksum": entry.checksum,
        "status": "pending" if entry.pending else "completed",
        "created": _iso(entry.created),
        "updated": _iso(entry.updated),
        "links": links,
    }
    if session is not None:
        # With the part size, anyone can recompute the s3etag checksum from the file.
        data["part_size"] = session.part_size
        if entry.pending:
            data["multipart_upload"] = session.to_json(parts_url=parts_url)
    return data


def parts_json(parts: list[UploadedPart]) -> list[dict[str, Any]]:
    """S3's part list in S3's own spelling (what Uppy expects too)."""
    return [{"PartNumber": p.number, "ETag": f'"{p.etag}"', "Size": p.size} for p in parts]
