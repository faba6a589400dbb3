"""Helpers of the cleanup tests: uploads in progress, completed ones, backdating."""

from __future__ import annotations

from datetime import timedelta

from invenio_db import db
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.models import MultipartUploadSession
from oarepo_s3.service import complete_upload

from .helpers import put_parts, random_bytes


def new_record() -> Record:
    record = Record.create({})
    db.session.commit()
    return record


def start_uploads(record: Record, count: int, *, prefix: str = "f", size: int = 1000) -> list[dict]:
    """Start ``count`` uploads (real S3 multipart uploads) in ``record``; commit; return their sessions."""
    sessions = []
    for i in range(count):
        key = f"{prefix}{i:05d}.bin"
        mu = MultipartUpload(key=key, base_uri=None, expires=3600, size=size, part_size=None)
        record.files[key] = mu
        sessions.append(mu.session)
    record.commit()
    db.session.commit()
    return sessions


def complete_one(record: Record, key: str, size: int = 3000, seed: int = 7) -> tuple[dict, bytes]:
    """A completed upload (parts PUT to S3, verified and completed); returns its session and bytes."""
    payload = random_bytes(size, seed=seed)
    mu = MultipartUpload(key=key, base_uri=None, expires=3600, size=size, part_size=None)
    record.files[key] = mu
    record.commit()
    db.session.commit()
    put_parts(mu.session, payload)
    complete_upload(mu.session["id"], None)
    return mu.session, payload


def backdate(session_ids, hours: float = 2) -> None:
    """Move the sessions' expiry into the past (keeping their order)."""
    for session_id in session_ids:
        row = db.session.get(MultipartUploadSession, session_id)
        row.expires -= timedelta(hours=hours)
    db.session.commit()


def statuses() -> dict[str, MultipartUploadStatus]:
    """Status of every session by session id, read afresh."""
    db.session.rollback()
    return {str(r.id): r.status for r in db.session.query(MultipartUploadSession)}


def s3_upload_ids(s3_client, bucket: str) -> set[str]:
    """Upload ids S3 holds in progress in ``bucket``."""
    return {u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


def point_s3_at(app, monkeypatch, endpoint_url: str, **overrides) -> None:
    """Send the app's S3 control calls to ``endpoint_url`` for one test (the presigner keeps the real one)."""
    from oarepo_s3.proxies import current_oarepo_s3
    from oarepo_s3.s3 import S3Client

    state = current_oarepo_s3._get_current_object()
    _ = state.presigner  # built from the real endpoint first (a cached property), before the switch
    config = {**app.config, "S3_ENDPOINT_URL": endpoint_url, **overrides}
    monkeypatch.setitem(state.__dict__, "s3", S3Client.from_config(config))
