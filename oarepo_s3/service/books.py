"""What a bucket's size should be by files-rest's own rule, and putting sizes right.

files-rest adds a version's file size to its bucket when the version gets
the file, and a delete marker (``ObjectVersion.delete``) subtracts the size
of the version it follows. So a bucket's size is the sum of its versions'
file sizes, but for versions followed by a delete marker. Pending uploads
count with their declared size (their FileInstance's): the quota reservation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from invenio_db import db
from invenio_files_rest.models import Bucket, FileInstance, ObjectVersion

from .locks import lock_bucket
from .transaction import atomic


@dataclass(frozen=True)
class SizeFix:
    """A bucket whose size did not add up: what it said, and what it should say."""

    bucket_id: uuid.UUID
    was: int
    should_be: int


def counted_sizes(bucket_ids: Iterable[uuid.UUID] | None = None) -> sa.Subquery:
    """A subquery ``(bucket_id, total)``: each bucket's size by files-rest's rule (buckets without files absent)."""
    window = {"partition_by": (ObjectVersion.bucket_id, ObjectVersion.key),
              "order_by": (ObjectVersion.created, ObjectVersion.version_id)}
    versions = sa.select(
        ObjectVersion.bucket_id,
        ObjectVersion.file_id,
        sa.func.lead(ObjectVersion.version_id).over(**window).label("next_version"),
        sa.func.lead(ObjectVersion.file_id).over(**window).label("next_file"),
    )
    if bucket_ids is not None:
        versions = versions.where(ObjectVersion.bucket_id.in_(list(bucket_ids)))
    counted = versions.subquery()
    return (
        sa.select(counted.c.bucket_id, sa.func.coalesce(sa.func.sum(FileInstance.size), 0).label("total"))
        .join(FileInstance, FileInstance.id == counted.c.file_id)
        .where(sa.or_(counted.c.next_version.is_(None), counted.c.next_file.isnot(None)))
        .group_by(counted.c.bucket_id)
        .subquery()
    )


def fix_bucket_sizes(*, dry_run: bool = False) -> list[SizeFix]:
    """Set every bucket's size to what its versions add up to; the buckets that were wrong.

    Each bucket in its own short transaction, under its row lock (the
    ordering rule), so uploads may go on meanwhile. For instances whose
    buckets were kept by another storage's books (invenio-s3's multipart
    path never reserved a pending file's size, and files-rest subtracts it
    when the file is deleted).
    """
    with atomic():
        bucket_ids = list(db.session.execute(sa.select(Bucket.id).order_by(Bucket.id)).scalars())
    fixes = []
    for bucket_id in bucket_ids:
        with atomic():
            bucket = lock_bucket(bucket_id)
            if bucket is None:
                continue
            totals = counted_sizes([bucket_id])
            should_be = db.session.execute(sa.select(totals.c.total)).scalar() or 0
            if bucket.size != should_be:
                fixes.append(SizeFix(bucket_id, bucket.size, int(should_be)))
                if not dry_run:
                    bucket.size = should_be
    return fixes
