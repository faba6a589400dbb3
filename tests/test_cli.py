"""``invenio oarepo-s3 ...``: uploads list, cleanup, cors, check (click's CliRunner on the test app)."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from importlib.metadata import entry_points

import pytest
from flask.cli import FlaskGroup
from invenio_db import db
from invenio_files_rest.helpers import make_path

from oarepo_s3 import cli as cli_module
from oarepo_s3.api import MultipartUploadStatus
from oarepo_s3.cli import oarepo_s3
from oarepo_s3.models import MultipartUploadSession, utcnow

from .cleanup_helpers import backdate, complete_one, new_record, point_s3_at, s3_upload_ids, start_uploads, statuses
from .fault_proxy import FaultProxy


def invoke(app, *args: str):
    return app.test_cli_runner().invoke(oarepo_s3, list(args), catch_exceptions=False)


def orphan(s3_client, bucket: str) -> str:
    key = make_path("", str(uuid.uuid4()), "data", 2, 2).lstrip("/")
    return s3_client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]


def test_invenio_cli_finds_the_group(app):
    (ep,) = entry_points(group="flask.commands", name="oarepo-s3")
    assert ep.load() is oarepo_s3
    # invenio's CLI is a FlaskGroup, which adds every flask.commands entry point.
    result = app.test_cli_runner().invoke(FlaskGroup(create_app=lambda: app), ["oarepo-s3", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("uploads", "cleanup", "cors", "check"):
        assert command in result.output


def test_uploads_list_filters_by_status_user_and_age(app, location):
    record = new_record()
    (mine,) = start_uploads(record, 1, prefix="mine")
    (theirs,) = start_uploads(record, 1, prefix="theirs", size=2000)
    done, _ = complete_one(record, "done.bin", size=1000)
    for session_id, owner, days in ((mine["id"], 1, 0), (theirs["id"], 2, 3), (done["id"], 1, 10)):
        row = db.session.get(MultipartUploadSession, session_id)
        row.owner_id = owner
        row.created = utcnow() - timedelta(days=days)
    db.session.commit()

    result = invoke(app, "uploads", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "OWNER", "SIZE", "STARTED", "EXPIRES", "FILE"]
    assert [line.split()[0] for line in lines[1:-1]] == [done["id"], theirs["id"], mine["id"]]  # oldest first
    assert lines[-1] == "3 uploads"
    assert f"{record.bucket.id}/theirs00000.bin" in result.output

    def ids(*args):
        return [line.split()[0] for line in invoke(app, "uploads", "list", *args).output.splitlines()[1:-1]]

    assert ids("--status", "in_progress") == [theirs["id"], mine["id"]]
    assert ids("--status", "complete", "--status", "expired") == [done["id"]]
    assert ids("--user", "1") == [done["id"], mine["id"]]
    assert ids("--older-than", "2d") == [done["id"], theirs["id"]]
    assert ids("--older-than", "5d", "--user", "2") == []
    bad = app.test_cli_runner().invoke(oarepo_s3, ["uploads", "list", "--older-than", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    bad = app.test_cli_runner().invoke(oarepo_s3, ["uploads", "list", "--user", "nobody"])
    assert bad.exit_code == 2 and "neither a user id nor an e-mail" in bad.output


def test_cleanup_dry_run_then_for_real(app, location, s3_client, s3_bucket):
    record = new_record()
    stale = start_uploads(record, 2, prefix="stale")
    (fresh,) = start_uploads(record, 1, prefix="fresh")
    backdate([s["id"] for s in stale])
    lost = orphan(s3_client, s3_bucket)

    dry = invoke(app, "cleanup", "--dry-run", "--grace", "0")
    assert dry.exit_code == 0, dry.output
    assert f"would expire session {stale[0]['id']}: 'stale00000.bin'" in dry.output
    assert f"would abort orphaned upload {lost} of s3://{s3_bucket}/" in dry.output
    assert "unknown to the database" in dry.output
    assert dry.output.splitlines()[-1] == (
        "dry run: would expire 2 uploads and abort 1 orphaned uploads; nothing was changed")
    assert set(statuses().values()) == {MultipartUploadStatus.IN_PROGRESS}
    assert len(s3_upload_ids(s3_client, s3_bucket)) == 4

    one = invoke(app, "cleanup", "--limit", "1", "--no-sweep")
    assert one.output.splitlines()[-1] == "expired 1 uploads, aborted 0 orphaned uploads"

    done = invoke(app, "cleanup", "--grace", "0")
    assert done.exit_code == 0, done.output
    assert f"expired session {stale[1]['id']}" in done.output
    assert f"aborted s3://{s3_bucket}/{stale[1]['key']} upload {stale[1]['upload_id']}" in done.output
    assert f"aborted orphaned upload {lost}" in done.output
    assert done.output.splitlines()[-1] == "expired 1 uploads, aborted 1 orphaned uploads"
    assert statuses() == {stale[0]["id"]: MultipartUploadStatus.EXPIRED, stale[1]["id"]: MultipartUploadStatus.EXPIRED,
                          fresh["id"]: MultipartUploadStatus.IN_PROGRESS}
    assert s3_upload_ids(s3_client, s3_bucket) == {fresh["upload_id"]}


def test_cleanup_exits_non_zero_when_s3_fails(app, location, monkeypatch):
    sessions = start_uploads(new_record(), 2)
    backdate([s["id"] for s in sessions])
    point_s3_at(app, monkeypatch, "http://127.0.0.1:9", OAREPO_S3_MAX_ATTEMPTS=1, OAREPO_S3_CONNECT_TIMEOUT=1)
    result = invoke(app, "cleanup")
    assert result.exit_code == 1
    assert (
        f"FAILED session {sessions[0]['id']}: S3 abort_multipart_upload failed at http://127.0.0.1:9"
        in result.output
    )
    assert "1 failures (stopped: S3 cannot be reached)" in result.output
    assert set(statuses().values()) == {MultipartUploadStatus.IN_PROGRESS}


def test_cors_then_check_passes(app, location, s3_client, s3_bucket):
    result = invoke(app, "cors", s3_bucket, "--origin", "https://repo.example.org", "--origin", "https://b.example.org")
    assert result.exit_code == 0, result.output
    (rule,) = s3_client.get_bucket_cors(Bucket=s3_bucket)["CORSRules"]
    assert sorted(rule["AllowedOrigins"]) == ["https://b.example.org", "https://repo.example.org"]  # Ceph sorts them
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD", "PUT"]
    assert rule["ExposeHeaders"] == ["ETag"]

    check = invoke(app, "check")
    assert check.exit_code == 0, check.output
    lines = check.output.splitlines()
    assert lines[0].startswith(f"ok    endpoint: {app.config['S3_ENDPOINT_URL']} answers")
    assert lines[1].startswith("ok    credentials: accepted")
    assert f"ok    bucket {s3_bucket}: exists and can be read" in lines
    assert (f"ok    bucket {s3_bucket} CORS: PUT allowed from https://b.example.org, https://repo.example.org, "
            "ETag exposed") in lines
    assert any(line.startswith("ok    clock: this machine is ") for line in lines)
    assert lines[-1] == "all checks passed"


def test_cors_without_origin_allows_any_site_and_says_so(app, location, s3_client, s3_bucket):
    result = invoke(app, "cors", s3_bucket)
    assert result.exit_code == 0
    assert "give --origin to allow only yours" in result.output
    assert s3_client.get_bucket_cors(Bucket=s3_bucket)["CORSRules"][0]["AllowedOrigins"] == ["*"]


def test_check_names_what_is_wrong(app, location, s3_client, s3_bucket):
    result = invoke(app, "check")
    assert result.exit_code == 1
    assert (
        f"FAIL  bucket {s3_bucket} CORS: none set, so browsers cannot upload; "
        f"run `invenio oarepo-s3 cors {s3_bucket}"
    ) in result.output
    assert result.output.splitlines()[-1] == "1 check failed"

    s3_client.put_bucket_cors(Bucket=s3_bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"], "ExposeHeaders": ["x-amz-request-id"]}]})
    result = invoke(app, "check", s3_bucket, "no-such-bucket-oarepo-s3")
    assert result.exit_code == 1
    assert f"FAIL  bucket {s3_bucket} CORS: does not expose ETag" in result.output
    assert "FAIL  bucket no-such-bucket-oarepo-s3: does not exist" in result.output
    assert result.output.splitlines()[-1] == "2 checks failed"


def test_check_fails_on_clock_skew(app, location, s3_client, s3_bucket, monkeypatch):
    invoke(app, "cors", s3_bucket, "--origin", "https://repo.example.org")
    monkeypatch.setattr(cli_module, "_now", lambda: time.time() + 3600)
    result = invoke(app, "check")
    assert result.exit_code == 1
    # S3's Date header has whole seconds and the call takes a while on a loaded machine: an hour, give or take.
    found = re.search(r"FAIL  clock: this machine is (\d+\.\d) s ahead of S3's clock", result.output)
    assert found and 3590 < float(found.group(1)) < 3610, result.output
    assert invoke(app, "check", "--max-skew", "7200").exit_code == 0


def test_check_fails_when_s3_cannot_be_reached(app, location, monkeypatch):
    point_s3_at(app, monkeypatch, "http://127.0.0.1:9", OAREPO_S3_MAX_ATTEMPTS=1, OAREPO_S3_CONNECT_TIMEOUT=1)
    result = invoke(app, "check")
    assert result.exit_code == 1
    assert "FAIL  endpoint: cannot reach S3: S3 list_buckets failed at http://127.0.0.1:9" in result.output


@pytest.fixture()
def proxy(s3_server):
    p = FaultProxy(s3_server).start()
    yield p
    p.stop()


def test_check_fails_on_rejected_credentials(app, location, monkeypatch, proxy):
    point_s3_at(app, monkeypatch, proxy.url)
    proxy.add_fault("fail", "GET", status=403, code="InvalidAccessKeyId")
    result = invoke(app, "check")
    assert result.exit_code == 1
    assert "FAIL  credentials: S3 refuses them (InvalidAccessKeyId)" in result.output
