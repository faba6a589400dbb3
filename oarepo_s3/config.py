"""Configuration defaults of oarepo-s3.

Connection settings are invenio-s3's own (``S3_ENDPOINT_URL``,
``S3_ACCESS_KEY_ID``, ``S3_SECRET_ACCESS_KEY``, ``S3_REGION_NAME``...) and can
come from ``INVENIO_S3_*`` environment variables like every Invenio setting.
Everything oarepo-s3 adds is prefixed ``OAREPO_S3_``, except ``S3_TENANT``,
which the original oarepo-s3 documented.
"""

from __future__ import annotations

from datetime import timedelta

MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

S3_TENANT = None
"""Ceph RGW tenant owning the buckets (``tenant:bucket`` addressing), or None."""

OAREPO_S3_MAX_FILE_SIZE = 5 * TiB
"""Largest file (bytes) a multipart upload may declare."""

OAREPO_S3_DEFAULT_PART_SIZE = 16 * MiB
"""Part size (bytes) used when the client does not ask for one.

Grown (in whole MiB) as needed so that a file never needs more than
``OAREPO_S3_MAX_PARTS`` parts.
"""

OAREPO_S3_MIN_PART_SIZE = 5 * MiB
"""Smallest part (bytes) but the last; S3's own minimum is 5 MiB."""

OAREPO_S3_MAX_PART_SIZE = 5 * GiB
"""Largest part (bytes); S3's own maximum is 5 GiB."""

OAREPO_S3_MAX_PARTS = 10_000
"""Most parts one upload may have; S3's own maximum is 10,000."""

OAREPO_S3_MULTIPART_EXPIRES = timedelta(days=1)
"""How long an upload may stay in progress when the caller gives no ``expires``."""

OAREPO_S3_MULTIPART_MIN_EXPIRES = timedelta(minutes=1)
"""Shortest ``expires`` a caller may ask for."""

OAREPO_S3_MULTIPART_MAX_EXPIRES = timedelta(days=7)
"""Longest ``expires`` a caller may ask for."""

OAREPO_S3_PART_URL_EXPIRATION = None
"""Lifetime (seconds) of presigned part URLs; None: until the upload expires.

Always capped at 7 days, SigV4's maximum. Shorter URLs leak less; clients
re-sign parts whose URLs ran out.
"""

OAREPO_S3_TRANSFER_LINK_EXPIRATION = 3600
"""Lifetime (seconds) of the part URLs in InvenioRDM's file links (records-resources' "M" transfer).

Those links are re-signed on every read of the file (cheap: a few µs per part),
and anyone who may read the draft's files sees them, so they are short-lived:
InvenioRDM's uploader reads the file again when its URLs run out. None: until
the upload expires (at most 7 days).
"""

OAREPO_S3_ADDRESSING_STYLE = "path"
"""``path`` (``endpoint/bucket/key``, works everywhere) or ``virtual`` (``bucket.endpoint/key``)."""

OAREPO_S3_CONNECT_TIMEOUT = 5
"""Seconds to wait for a connection to S3 in control calls (create, complete, abort...)."""

OAREPO_S3_READ_TIMEOUT = 60
"""Seconds to wait for S3's answer to a control call (CompleteMultipartUpload can be slow)."""

OAREPO_S3_MAX_ATTEMPTS = 3
"""Attempts botocore makes for a control call before an :class:`~oarepo_s3.errors.S3Error`."""

OAREPO_S3_MAX_REQUEST_BYTES = 2 * MiB
"""Largest request body (bytes) the API reads; more is refused with 413 (file contents never go through it).

Completing a 10,000-part upload sends ~0.6 MB of part ETags; signing
10,000 parts with their SHA-256s ~0.8 MB.
"""

OAREPO_S3_REST_API = True
"""Serve our draft-records and records REST API (and the Uppy routes) in the API app.

Turn it off in an InvenioRDM or OARepo instance: their own records API owns
``/records``, and their uploads reach our storage through records-resources'
multipart transfer (docs/invenio-rdm.md), not through these routes.
"""

OAREPO_S3_DRAFTS_URL_PREFIX = "/draft/records"
"""Where the draft-records REST API is mounted."""

OAREPO_S3_RECORDS_URL_PREFIX = "/records"
"""Where published records (read-only) are served."""

OAREPO_S3_TRUSTED_ORIGINS: list[str] = []
"""Origins besides the app's own from which cookie-authenticated browsers may call the API."""

OAREPO_S3_SIGN_RATE_LIMIT = "3000/minute"
"""Most URL-signing requests one user may make (Flask-Limiter notation, e.g. ``"10/second;600/hour"``).

Counts starting an upload, re-signing parts and Uppy's part signing; over
the limit the API answers 429 with ``Retry-After``. None or ``""``: no limit.
The default lets one user sign 50 parts a second: Uppy signs each part in
its own request, so that is ~800 MiB/s with 16 MiB parts. Every budget:
:mod:`oarepo_s3.ratelimit`.
"""

OAREPO_S3_START_RATE_LIMIT = "600/minute"
"""Most uploads (and empty files) one user may start: each is an S3 call and new rows."""

OAREPO_S3_LIST_RATE_LIMIT = "600/minute"
"""Most requests for the parts S3 holds (resume, Uppy's list) one user may make: S3 calls each."""

OAREPO_S3_FINISH_RATE_LIMIT = "1200/minute"
"""Most completions, aborts and deletes one user may ask for: S3 calls each."""

OAREPO_S3_DRAFT_RATE_LIMIT = "120/minute"
"""Most drafts one user may create or publish: new rows each."""

OAREPO_S3_RATE_LIMIT_STORAGE_URI = None
"""Where the counts of every budget live (a ``limits`` storage URI, e.g. ``redis://localhost:6379/0``).

None: ``OAREPO_S3_SIGN_RATE_LIMIT_STORAGE_URI`` (its former name) when set,
else Flask-Limiter's ``RATELIMIT_STORAGE_URI``, else ``memory://``, which
counts per process; with several workers use Redis so they share one budget.
"""

OAREPO_S3_CLEANUP_LIMIT = 10_000
"""Most expired uploads one cleanup run expires; the rest wait for the next run."""

OAREPO_S3_CLEANUP_LOCK_TIMEOUT = 5
"""Seconds (or a ``timedelta``) the cleanup waits for a bucket's lock before passing a session over.

Cleanup workers on one bucket take turns (each holds it for one S3 abort);
a request that holds it longer (a completion of thousands of parts) makes
the run leave that session to the next run instead of stalling.
"""

OAREPO_S3_CLEANUP_MAX_RETRIES = 5
"""Times the cleanup task re-runs itself (Celery retry) when S3 could not be reached or failed some uploads."""

OAREPO_S3_CLEANUP_RETRY_BACKOFF = 60
"""Seconds (or a ``timedelta``) of backoff after a failure, doubled per further failure.

The cleanup task's next retry waits this long, and so does an upload the
cleanup could not expire: runs pass it over until then (its attempts and
last error are on its row: ``invenio oarepo-s3 uploads list --failing``).
"""

OAREPO_S3_CLEANUP_MAX_BACKOFF = timedelta(days=1)
"""Longest backoff (a ``timedelta``, or seconds) before the cleanup tries a failing upload again."""

OAREPO_S3_ORPHAN_SWEEP = True
"""Let the cleanup also abort orphaned S3 multipart uploads (ones the database does not know).

Only uploads in the buckets of ``s3://`` files locations whose key has the
exact shape files-rest gives file instances (``ab/cd/<rest-of-uuid>/data``)
are considered. MinIO and Ceph ignore AbortIncompleteMultipartUpload
lifecycle rules: there, this sweep is what frees the space.
"""

OAREPO_S3_ORPHAN_GRACE = timedelta(hours=24)
"""Age (a ``timedelta``, or seconds) an unknown multipart upload must reach before the sweep aborts it.

Covers the moment between S3 CreateMultipartUpload and the commit of the
session row, and clock differences between S3 and the workers.
"""
