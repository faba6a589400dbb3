"""The invariant every reliability test ends with: the database's books and S3 agree."""

from __future__ import annotations

from datetime import timedelta

from invenio_db import db

from oarepo_s3.audit import audit


def s3_view(s3_client, bucket: str) -> tuple[dict[str, int], dict[str, str]]:
    """(object key -> size, upload id -> key) as S3 holds them now."""
    objects = {o["Key"]: o["Size"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    uploads = {u["UploadId"]: u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    return objects, uploads


def books_problems(*, orphans_allowed: bool = False) -> list[str]:
    """Every disagreement between the books, the database and S3 (empty: consistent), as the product's audit sees it.

    :func:`oarepo_s3.audit.audit` (``invenio oarepo-s3 audit``) with no
    grace: every S3 object and upload must belong to the database at once.
    ``orphans_allowed``: an S3 upload or object the database does not know
    is tolerated (the orphan sweep removes those after its grace period).
    """
    db.session.commit()  # end the read transaction: see what the server committed
    report = audit(grace=timedelta(0))
    db.session.commit()
    # (Not by age: moto answers every upload's Initiated with one fixed date of 2010.)
    return [str(p) for p in report.problems if not (orphans_allowed and p.kind in ("orphan-upload", "orphan-object"))]
