"""The invariant every reliability test ends with: the database's books and S3 agree."""

from __future__ import annotations

from invenio_db import db
from invenio_files_rest.models import FileInstance, ObjectVersion

from oarepo_s3.api import MultipartUploadStatus
from oarepo_s3.models import MultipartUploadSession


def s3_view(s3_client, bucket: str) -> tuple[dict[str, int], dict[str, str]]:
    """(object key -> size, upload id -> key) as S3 holds them now."""
    objects = {o["Key"]: o["Size"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    uploads = {u["UploadId"]: u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    return objects, uploads


def books_problems(s3_client, bucket: str, *, orphans_allowed: bool = False) -> list[str]:
    """Every disagreement between the database and S3 (empty: consistent).

    - an upload in progress has its S3 multipart upload and a pending,
      unreadable file; a completed one has its object, of the declared size,
      and a readable file; an aborted or expired one has neither;
    - every S3 object belongs to a readable file the database knows, every S3
      multipart upload to a session in progress (``orphans_allowed``: an
      unknown upload is tolerated, as the orphan sweep removes those).
    """
    db.session.commit()  # end the read transaction: see what the server committed
    objects, uploads = s3_view(s3_client, bucket)
    problems = []
    rows = db.session.query(MultipartUploadSession).all()
    for row in rows:
        has_upload = uploads.get(row.upload_id) == row.s3_key
        if row.status is MultipartUploadStatus.IN_PROGRESS:
            if not has_upload:
                problems.append(f"{row.key}: in progress, but S3 has no upload {row.upload_id}")
            if row.file is None or row.file.readable:
                problems.append(f"{row.key}: in progress, but its file is missing or readable")
        elif row.status is MultipartUploadStatus.COMPLETE and row.file_id is None:
            if row.s3_key in objects:  # the file was deleted afterwards: so must its object be
                problems.append(f"{row.key}: deleted, but S3 still has its object {row.s3_key}")
        elif row.status is MultipartUploadStatus.COMPLETE:
            if objects.get(row.s3_key) != row.size:
                problems.append(f"{row.key}: complete, but S3 has {objects.get(row.s3_key)} bytes, not {row.size}")
            if row.file is not None and not row.file.readable:
                problems.append(f"{row.key}: complete, but its file is not readable")
        else:
            if has_upload:
                problems.append(f"{row.key}: {row.status.value}, but S3 still has upload {row.upload_id}")
            if row.s3_key in objects:
                problems.append(f"{row.key}: {row.status.value}, but S3 has an object at {row.s3_key}")
            if row.object_version is not None or row.file is not None:
                problems.append(f"{row.key}: {row.status.value}, but its pending file is still there")
    prefix = f"s3://{bucket}/"
    readable = {f.uri[len(prefix):] for f in db.session.query(FileInstance) if f.readable and f.uri.startswith(prefix)}
    for key in objects:
        if key not in readable:
            problems.append(f"S3 object {key} belongs to no readable file")
    known = {r.upload_id for r in rows if r.status is MultipartUploadStatus.IN_PROGRESS}
    for upload_id, key in uploads.items():
        if upload_id not in known and not orphans_allowed:
            problems.append(f"S3 upload {upload_id} of {key} has no session in progress")
    for obj in db.session.query(ObjectVersion).filter(ObjectVersion.file_id.isnot(None)):
        if obj.file.readable and obj.file.uri.startswith(prefix) and obj.file.uri[len(prefix):] not in objects:
            problems.append(f"file {obj.key} is readable, but S3 has no object at {obj.file.uri}")
    db.session.commit()
    return problems
