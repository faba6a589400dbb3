"""Celery tasks.

Schedule the cleanup with Celery beat::

    CELERY_BEAT_SCHEDULE = {
        "cleanup_expired_multipart_uploads": {
            "task": "oarepo_s3.tasks.cleanup_expired_multipart_uploads",
            "schedule": timedelta(minutes=60),
        },
    }

Any number of workers may run it at once (see :mod:`oarepo_s3.cleanup`).
"""

from __future__ import annotations

from celery import Task, shared_task
from celery.utils.log import get_task_logger
from flask import current_app

from .cleanup import as_timedelta, run_cleanup

log = get_task_logger(__name__)


@shared_task(  # type: ignore[untyped-decorator]  # celery is untyped
    bind=True, ignore_result=True, name="oarepo_s3.tasks.cleanup_expired_multipart_uploads"
)
def cleanup_expired_multipart_uploads(self: Task, limit: int | None = None) -> int:
    """Expire timed-out uploads (abort in S3, remove the pending files), then sweep orphans.

    Only sessions still ``in_progress`` whose expiry has passed are expired;
    a completed file is never touched. The orphan sweep runs when
    ``OAREPO_S3_ORPHAN_SWEEP`` is on. Each session is committed on its own,
    so the work done stays done whatever happens later in the run.

    When S3 failed for some uploads (they stay in progress, nothing is
    marked gone), the task retries itself after ``OAREPO_S3_CLEANUP_RETRY_BACKOFF``
    seconds, doubled each time, at most ``OAREPO_S3_CLEANUP_MAX_RETRIES`` times;
    then the next scheduled run takes them up.

    :param limit: most sessions to expire in this run (default ``OAREPO_S3_CLEANUP_LIMIT``).
    :returns: how many uploads were expired.
    """
    report = run_cleanup(limit=limit)
    log.info(
        "cleanup: %d uploads expired, %d orphaned uploads aborted, %d failures%s",
        report.expired,
        report.orphans,
        report.failures,
        " (stopped: S3 unreachable)" if report.stopped else "",
    )
    if report.failures and not self.request.called_directly:
        config = current_app.config
        retries, max_retries = self.request.retries, config["OAREPO_S3_CLEANUP_MAX_RETRIES"]
        if retries < max_retries:
            countdown = as_timedelta(config["OAREPO_S3_CLEANUP_RETRY_BACKOFF"]).total_seconds() * 2**retries
            log.info("cleanup: retrying in %s s (retry %d of %d)", countdown, retries + 1, max_retries)
            raise self.retry(countdown=countdown, max_retries=max_retries)
        log.warning("cleanup: %d failures left after %d retries; the next scheduled run tries again",
                    report.failures, retries)
    return report.expired
