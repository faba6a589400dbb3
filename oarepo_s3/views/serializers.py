"""JSON representations of records, files and upload sessions, with their links."""

from __future__ import annotations

from flask import url_for

from ..drafts import PUBLISHED, DraftRecord, FileEntry
from ..models import MultipartUploadSession
from ..s3 import UploadedPart

DRAFTS = "oarepo_s3_drafts"
RECORDS = "oarepo_s3_records"


def _url(endpoint: str, **values) -> str:
    return url_for(endpoint, _external=True, **values)


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def record_json(record: DraftRecord) -> dict:
    """A draft or published record."""
    pid = record.pid_value
    published = record.status == PUBLISHED
    bp = RECORDS if published else DRAFTS
    links = {"self": _url(f"{bp}.record", pid_value=pid), "files": _url(f"{bp}.files", pid_value=pid)}
    if published:
        links["draft"] = _url(f"{DRAFTS}.record", pid_value=pid)
    else:
        links["publish"] = _url(f"{DRAFTS}.publish", pid_value=pid)
        links["uppy"] = _url(f"{DRAFTS}.record", pid_value=pid) + "/uppy"
        links["record"] = _url(f"{RECORDS}.record", pid_value=pid)
    return {
        "id": pid,
        "status": record.status,
        "metadata": record.get("metadata", {}),
        "owners": record.owners,
        "created": _iso(record.created),
        "updated": _iso(record.updated),
        "links": links,
    }


def session_json(session: MultipartUploadSession, parts_url: list[str] | None = None) -> dict:
    """An upload session (the seed's ``multipart_upload``), optionally with part URLs."""
    return session.as_session(parts_url=parts_url)


def file_json(record: DraftRecord, entry: FileEntry) -> dict:
    """A file of a record: pending while its upload is in progress."""
    obj, session = entry.obj, entry.session
    pid, key = record.pid_value, obj.key
    published = record.status == PUBLISHED
    bp = RECORDS if published else DRAFTS
    links = {"self": _url(f"{bp}.file", pid_value=pid, key=key)}
    if not entry.pending:
        links["content"] = _url(f"{bp}.content", pid_value=pid, key=key)
    elif not published:
        links["multipart"] = _url(f"{DRAFTS}.multipart", pid_value=pid, key=key)
        links["sign"] = _url(f"{DRAFTS}.sign", pid_value=pid, key=key)
        links["complete"] = _url(f"{DRAFTS}.{DRAFTS}_upload_complete", pid_value=pid, key=key)
        links["abort"] = _url(f"{DRAFTS}.{DRAFTS}_upload_abort", pid_value=pid, key=key)
    data = {
        "key": key,
        "size": obj.file.size,
        "mimetype": obj.mimetype,
        "checksum": obj.file.checksum,
        "status": "pending" if entry.pending else "completed",
        "created": _iso(obj.created),
        "updated": _iso(obj.updated),
        "links": links,
    }
    if session is not None:
        # With the part size, anyone can recompute the s3etag checksum from the file.
        data["part_size"] = session.part_size
        if entry.pending:
            data["multipart_upload"] = session_json(session)
    return data


def parts_json(parts: list[UploadedPart]) -> list[dict]:
    """S3's part list in S3's own spelling (what Uppy expects too)."""
    return [{"PartNumber": p.number, "ETag": f'"{p.etag}"', "Size": p.size} for p in parts]
