"""Celery tasks.

Schedule the cleanup with Celery beat::

    CELERY_BEAT_SCHEDULE = {
        "cleanup_expired_multipart_uploads": {
            "task": "oarepo_s3.tasks.cleanup_expired_multipart_uploads",
            "schedule": timedelta(minutes=60),
        },
    }
"""

from __future__ import annotations

from celery import shared_task
from celery.utils.log import get_task_logger
from invenio_db import db

from .api import MultipartUploadStatus
from .errors import OARepoS3Error
from .models import MultipartUploadSession, utcnow
from .service import expire_upload

log = get_task_logger(__name__)


@shared_task(ignore_result=True)
def cleanup_expired_multipart_uploads(limit: int = 1000) -> int:
    """Abort in S3 and remove from their buckets up to ``limit`` expired, unfinished uploads.

    Only sessions still ``in_progress`` whose expiry has passed are touched:
    a completed file is never removed. An upload S3 fails to abort stays
    in progress and is tried again on the next run.

    :returns: how many uploads were expired.
    """
    ids = [
        row_id
        for (row_id,) in db.session.query(MultipartUploadSession.id)
        .filter(
            MultipartUploadSession.status == MultipartUploadStatus.IN_PROGRESS,
            MultipartUploadSession.expires < utcnow(),
        )
        .order_by(MultipartUploadSession.expires)
        .limit(limit)
    ]
    expired = 0
    for row_id in ids:
        try:
            expire_upload(row_id)
            expired += 1
        except OARepoS3Error as e:
            db.session.rollback()
            log.warning("could not expire multipart upload %s: %s", row_id, e)
    return expired
