"""Signals oarepo-s3 sends (blinker, like Flask's and files-rest's own)."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

upload_expired = _signals.signal("oarepo-s3.upload-expired")
"""An upload in progress ran out of time and was cleaned up.

Sent by the cleanup (the Celery task or ``invenio oarepo-s3 cleanup``) once
per upload, after the commit that marked its session ``expired``: the S3
multipart upload is aborted and the pending file is gone from its bucket.
The sender is the Flask app; the keyword argument ``upload`` is an
:class:`oarepo_s3.cleanup.ExpiredUpload` (ids, keys, owner, size).

Receivers run after that commit, outside the session's transaction; what
they change in the database is committed after the last receiver (rolled
back if one raises). An exception in a receiver is logged and does not stop
the cleanup.

Example::

    from oarepo_s3.signals import upload_expired

    @upload_expired.connect
    def tell_the_owner(app, upload):
        notify(upload.owner_id, f"Your upload of {upload.key} expired.")
"""
