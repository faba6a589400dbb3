"""Admin commands: ``invenio oarepo-s3 uploads list | cleanup | audit | fix-bucket-sizes | cors | check``.

Registered through the ``flask.commands`` entry point (as invenio-s3 and
invenio-access register theirs), which every Invenio CLI loads: it is a
Flask ``FlaskGroup``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import with_appcontext
from invenio_db import db

from .api import MultipartUploadStatus
from .audit import audit
from .cleanup import CleanupItem, ExpiredUpload, OrphanUpload, run_cleanup, s3_locations
from .errors import S3Error, S3Unavailable
from .models import MultipartUploadSession, utcnow
from .proxies import current_oarepo_s3
from .service import fix_bucket_sizes

_CREDENTIAL_ERRORS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
    "InvalidSecurity",
}


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic only in click's stubs
    """A duration: ``90`` (seconds), ``45s``, ``30m``, ``12h``, ``7d``, ``2w``."""

    name = "duration"
    _UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        """Parse the duration."""
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration like 90, 45s, 30m, 12h, 7d or 2w", param, ctx)
        return timedelta(**{self._UNITS[match.group(2) or "s"]: int(match.group(1))})


@click.group("oarepo-s3")
def oarepo_s3() -> None:
    """Direct-to-S3 uploads: upload sessions, cleanup, bucket CORS, S3 checks."""


# --- uploads ---------------------------------------------------------------


@oarepo_s3.group()
def uploads() -> None:
    """Upload sessions."""


@uploads.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in MultipartUploadStatus]),
    help="Only sessions in this state (repeat for several).",
)
@click.option("--user", help="Only uploads started by this user: id or e-mail.")
@click.option("--older-than", type=Duration(), help="Only uploads started longer ago: 30m, 12h, 7d...")
@click.option("--failing", is_flag=True, help="Only uploads the cleanup failed to expire (with the last error).")
@with_appcontext
def list_uploads(statuses: tuple[str, ...], user: str | None, older_than: timedelta | None, failing: bool) -> None:
    """List upload sessions, oldest first; a failing cleanup shows under its upload."""
    m = MultipartUploadSession
    query = sa.select(m).order_by(m.created, m.id)
    if failing:
        query = query.where(m.status == MultipartUploadStatus.IN_PROGRESS, m.cleanup_attempts > 0)
    if statuses:
        query = query.where(m.status.in_([MultipartUploadStatus(s) for s in statuses]))
    if user is not None:
        query = query.where(m.owner_id == _user_id(user))
    if older_than is not None:
        query = query.where(m.created < utcnow() - older_than)
    click.echo(f"{'ID':36}  {'STATUS':11}  {'OWNER':>6}  {'SIZE':>14}  {'STARTED':16}  {'EXPIRES':16}  FILE")
    count = 0
    for row in db.session.execute(query.execution_options(yield_per=500)).scalars():
        count += 1
        owner = "-" if row.owner_id is None else row.owner_id
        click.echo(
            f"{str(row.id):36}  {row.status.value:11}  {owner:>6}  {row.size:>14}  "
            f"{_minute(row.created)}  {_minute(row.expires)}  {row.bucket_id or '-'}/{row.key}"
        )
        if row.cleanup_attempts and row.status is MultipartUploadStatus.IN_PROGRESS:
            click.echo(f"{'':38}cleanup failed {row.cleanup_attempts} time{'s' if row.cleanup_attempts > 1 else ''}, "
                       f"next try after {_minute(row.cleanup_retry_at)}: {row.cleanup_error}")
    click.echo(f"{count} upload{'' if count == 1 else 's'}")


def _user_id(user: str) -> int:
    if re.fullmatch(r"[0-9]{1,18}", user):
        return int(user)
    if "@" not in user:
        raise click.BadParameter(f"{user!r} is neither a user id nor an e-mail address", param_hint="--user")
    try:
        from invenio_accounts.models import User
    except ImportError:  # pragma: no cover - invenio-accounts is optional
        raise click.BadParameter("looking users up by e-mail needs invenio-accounts", param_hint="--user") from None
    found: int | None = db.session.execute(sa.select(User.id).where(sa.func.lower(User.email) == user.lower())).scalar()
    if found is None:
        raise click.BadParameter(f"no user with the e-mail address {user}", param_hint="--user")
    return found


def _minute(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


# --- cleanup ---------------------------------------------------------------


@oarepo_s3.command()
@click.option("--dry-run", is_flag=True, help="Change nothing; print what would be done.")
@click.option("--limit", type=click.IntRange(min=1), help="Most sessions to expire (default OAREPO_S3_CLEANUP_LIMIT).")
@click.option("--sweep/--no-sweep", default=None, help="Sweep orphaned S3 uploads (default OAREPO_S3_ORPHAN_SWEEP).")
@click.option("--grace", type=Duration(), help="Orphans must be older than this (default OAREPO_S3_ORPHAN_GRACE).")
@click.option("--retry-failed", is_flag=True, help="Also try uploads whose earlier failure's backoff has not run out.")
@with_appcontext
def cleanup(dry_run: bool, limit: int | None, sweep: bool | None, grace: timedelta | None, retry_failed: bool) -> None:
    """Expire timed-out uploads and abort orphaned S3 uploads now (what the Celery task does)."""
    if grace is not None:
        current_app.config["OAREPO_S3_ORPHAN_GRACE"] = grace
    expire, abort = ("would expire", "would abort") if dry_run else ("expired", "aborted")

    def show(item: CleanupItem) -> None:
        if isinstance(item, ExpiredUpload):
            click.echo(
                f"{expire} session {item.id}: {item.key!r} in bucket {item.bucket_id} "
                f"(owner {item.owner_id}, {item.size} bytes, expired {_minute(item.expires)}), "
                f"{abort} s3://{item.s3_bucket}/{item.s3_key} upload {item.upload_id}"
            )
        elif isinstance(item, OrphanUpload):
            done = abort if dry_run or item.aborted else "already gone:"
            click.echo(
                f"{done} orphaned upload {item.upload_id} of s3://{item.s3_bucket}/{item.s3_key} "
                f"(started {_minute(item.initiated)}, unknown to the database)"
            )
        elif item.retry_at is not None:
            click.echo(f"FAILED {item.what} (attempt {item.attempts}, next try after {_minute(item.retry_at)}): "
                       f"{item.error}", err=True)
        else:
            click.echo(f"FAILED {item.what}: {item.error}", err=True)

    report = run_cleanup(limit=limit, dry_run=dry_run, sweep=sweep, retry_failed=retry_failed, on_item=show)
    if dry_run:
        click.echo(
            f"dry run: would expire {report.expired} uploads and abort {report.orphans} orphaned uploads; "
            "nothing was changed"
        )
    else:
        click.echo(f"expired {report.expired} uploads, aborted {report.orphans} orphaned uploads")
    if report.failures:
        stopped = " (stopped: S3 cannot be reached)" if report.stopped else ""
        raise click.ClickException(f"{report.failures} failures{stopped}; what failed is left for the next run")


# --- audit -----------------------------------------------------------------


@oarepo_s3.command("audit")
@click.option("--grace", type=Duration(), help="S3 uploads and objects younger than this are not called orphans "
                                               "(default OAREPO_S3_ORPHAN_GRACE).")
@with_appcontext
def audit_command(grace: timedelta | None) -> None:
    """Check the books (bucket sizes, quotas, sessions) and compare them with S3; change nothing.

    Lists every problem and exits non-zero when there is one.
    """
    report = audit(grace=grace)
    for problem in report.problems:
        click.echo(f"PROBLEM  {problem}")
    summary = (f"{report.buckets} buckets, {report.sessions} upload sessions, {report.objects} S3 objects and "
               f"{report.uploads} S3 uploads checked")
    if report.problems:
        raise click.ClickException(f"{len(report.problems)} problem(s); {summary}")
    click.echo(f"the books hold and S3 agrees: {summary}")


@oarepo_s3.command("fix-bucket-sizes")
@click.option("--dry-run", is_flag=True, help="List the buckets whose size is wrong; change nothing.")
@with_appcontext
def fix_bucket_sizes_command(dry_run: bool) -> None:
    """Set every bucket's size to what its file versions add up to (files-rest's rule).

    For buckets kept by another storage's books before the switch (invenio-s3's
    multipart transfer never reserved a pending file's size): `audit` lists them
    as `bucket-size` problems. Each bucket is fixed under its lock; uploads may go on.
    """
    fixes = fix_bucket_sizes(dry_run=dry_run)
    for fix in fixes:
        click.echo(f"{'would set' if dry_run else 'set'} bucket {fix.bucket_id} size {fix.was} -> {fix.should_be}")
    click.echo(f"{len(fixes)} bucket size(s) {'to fix' if dry_run else 'fixed'}")


# --- cors ------------------------------------------------------------------


@oarepo_s3.command()
@click.argument("bucket")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    help="Site allowed to upload from the browser, e.g. https://repo.example.org (repeat for several; default *).",
)
@click.option("--max-age", type=click.IntRange(min=0), default=3600, show_default=True,
              help="Seconds browsers may cache the CORS answer.")
@with_appcontext
def cors(bucket: str, origins: tuple[str, ...], max_age: int) -> None:
    """Set BUCKET's CORS for browser uploads: PUT/GET/HEAD, ETag exposed.

    Replaces the bucket's CORS configuration. Browsers must read each part's
    ETag to complete a multipart upload, hence ``ExposeHeaders: ETag``.
    """
    allowed_origins, methods = list(origins) or ["*"], ["PUT", "GET", "HEAD"]
    rules = [
        {
            "AllowedOrigins": allowed_origins,
            "AllowedMethods": methods,
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": max_age,
        }
    ]
    s3 = current_oarepo_s3.s3
    try:
        _s3_call("put_bucket_cors", Bucket=s3.bucket_name(bucket), CORSConfiguration={"CORSRules": rules})
    except S3Error as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"CORS of bucket {bucket}: {', '.join(methods)} from {', '.join(allowed_origins)}; ETag exposed")
    if not origins:
        click.echo("note: any site may now send requests to this bucket (they still need presigned URLs); "
                   "give --origin to allow only yours", err=True)


# --- check -----------------------------------------------------------------


@oarepo_s3.command()
@click.argument("buckets", nargs=-1)
@click.option("--max-skew", type=click.IntRange(min=1), default=300, show_default=True,
              help="Largest accepted difference (seconds) between this clock and S3's.")
@with_appcontext
def check(buckets: tuple[str, ...], max_skew: int) -> None:
    """Check S3: endpoint, credentials, BUCKETS (default: the files locations'), their CORS, clock skew.

    Exits non-zero when a check fails.
    """
    s3 = current_oarepo_s3.s3
    results = _Checks()
    if not buckets:
        buckets = tuple(sorted({bucket for bucket, _ in s3_locations()}))
        if not buckets:
            results.fail("buckets", "no s3:// files location is defined; name the buckets to check")
    dates: list[tuple[float, float, datetime]] = []

    try:
        response = _timed_call(dates, "list_buckets")
        results.ok("endpoint", f"{s3.endpoint or 'AWS S3'} answers")
        results.ok("credentials", f"accepted ({len(response.get('Buckets', []))} buckets visible)")
    except S3Unavailable as e:
        results.fail("endpoint", f"cannot reach S3: {e}")
        raise SystemExit(results.finish()) from None
    except S3Error as e:
        results.ok("endpoint", f"{s3.endpoint or 'AWS S3'} answers")
        if e.s3_code in _CREDENTIAL_ERRORS:
            results.fail("credentials",
                         f"S3 refuses them ({e.s3_code}); check S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY")
            raise SystemExit(results.finish()) from None
        # Keys limited to some buckets may not list all buckets; S3 knew them, though.
        results.ok("credentials", f"accepted (ListBuckets not allowed: {e.s3_code})")

    for bucket in buckets:
        _check_bucket(results, dates, bucket)

    if dates:
        # The quickest exchange pins S3's clock best (as NTP does): a slow one blurs the midpoint.
        _, local, server = min(dates, key=lambda sample: sample[0])
        skew = local - server.timestamp()
        text = f"{abs(skew):.1f} s {'ahead of' if skew >= 0 else 'behind'} S3's clock"
        if abs(skew) > max_skew:
            results.fail("clock", f"this machine is {text} (more than {max_skew} s): S3 refuses signatures "
                         "from a skewed clock and presigned URLs expire early or late; synchronise it (NTP)")
        else:
            results.ok("clock", f"this machine is {text}")
    else:
        results.fail("clock", "S3 sent no Date header to compare with")
    raise SystemExit(results.finish())


class _Checks:
    def __init__(self) -> None:
        self.failed = 0

    def ok(self, what: str, text: str) -> None:
        click.echo(f"ok    {what}: {text}")

    def fail(self, what: str, text: str) -> None:
        self.failed += 1
        click.echo(f"FAIL  {what}: {text}")

    def finish(self) -> int:
        plural = "s" if self.failed > 1 else ""
        click.echo("all checks passed" if not self.failed else f"{self.failed} check{plural} failed")
        return 1 if self.failed else 0


def _check_bucket(results: _Checks, dates: list[tuple[float, float, datetime]], bucket: str) -> None:
    s3 = current_oarepo_s3.s3
    name = s3.bucket_name(bucket)
    try:
        _timed_call(dates, "list_objects_v2", Bucket=name, MaxKeys=1)
    except S3Error as e:
        if e.s3_code == "NoSuchBucket":
            results.fail(f"bucket {bucket}", "does not exist")
        else:
            results.fail(f"bucket {bucket}", f"cannot be read: {e.s3_code}")
        return
    results.ok(f"bucket {bucket}", "exists and can be read")
    try:
        rules = _s3_call("get_bucket_cors", Bucket=name).get("CORSRules", [])
    except S3Error as e:
        if e.s3_code == "NoSuchCORSConfiguration":
            results.fail(f"bucket {bucket} CORS", "none set, so browsers cannot upload; run "
                         f"`invenio oarepo-s3 cors {bucket} --origin https://your.site`")
        else:
            results.fail(f"bucket {bucket} CORS", f"cannot be read: {e.s3_code}")
        return
    uploads = [r for r in rules if "PUT" in {m.upper() for m in r.get("AllowedMethods", [])}]
    if not uploads:
        results.fail(f"bucket {bucket} CORS", "no rule allows PUT: browsers cannot upload parts")
    elif not any("etag" in {h.lower() for h in r.get("ExposeHeaders", [])} for r in uploads):
        results.fail(f"bucket {bucket} CORS", "does not expose ETag: browsers cannot complete multipart uploads; run "
                     f"`invenio oarepo-s3 cors {bucket} --origin https://your.site`")
    else:
        origins = sorted({o for r in uploads for o in r.get("AllowedOrigins", [])})
        results.ok(f"bucket {bucket} CORS", f"PUT allowed from {', '.join(origins)}, ETag exposed")


def _s3_call(operation: str, **params: Any) -> dict[str, Any]:
    """An S3 call through :class:`~oarepo_s3.s3.S3Client`, which translates botocore's errors."""
    return current_oarepo_s3.s3.call(operation, **params)


def _timed_call(dates: list[tuple[float, float, datetime]], operation: str, **params: Any) -> dict[str, Any]:
    """Call S3 and note (round trip, local midpoint time, S3's Date header) for the clock check."""
    before = _now()
    response = _s3_call(operation, **params)
    after = _now()
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if header:
        try:
            dates.append((after - before, (before + after) / 2, parsedate_to_datetime(header)))
        except (TypeError, ValueError):
            pass
    return response


def _now() -> float:
    """This machine's clock (seconds since the epoch); tests move it."""
    return time.time()
