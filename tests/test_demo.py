"""The demo as a newcomer runs it: start it, upload, stop it with Ctrl-C, start it again.

Each test runs ``python -m demo`` in a subprocess on free ports (see
:mod:`tests.demo_process`). The last one points the demo at the lane's S3
and database through the environment, as a deployment would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from sqlalchemy import create_engine, text

from .demo_process import ROOT, DemoProcess, free_port
from .helpers import put_parts

pytestmark = pytest.mark.slow  # each test starts the demo (~5 s) in a subprocess

MiB = 1024 * 1024
DEADLINE = 60
"""Seconds to wait for the cleanup schedule (a hang guard, not a performance bound)."""


def api(info, token_key="token") -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {info[token_key]}"
    return session


def embedded_s3(info):
    return boto3.client(
        "s3", endpoint_url=info["s3_endpoint"], aws_access_key_id="demo-access-key",
        aws_secret_access_key="demo-secret-key", region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def start_upload(info, key: str, size: int, part_size: int = 5 * MiB) -> dict:
    body = {"key": key, "size": size, "part_size": part_size}
    response = api(info).post(f"{info['draft_url']}/files/?multipart=True", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture()
def demo(tmp_path):
    process = DemoProcess(tmp_path / "data")
    process.start()
    yield process
    process.stop()


def test_printed_command_uploads_and_second_user_is_refused(demo):
    info = demo.info
    assert set(info) >= {"url", "s3_endpoint", "user", "password", "token", "draft_id",
                         "other_user", "other_password", "other_token"}
    example = subprocess.run(
        [sys.executable, "-m", "demo.example", "--draft", info["draft_url"], "--token", info["token"],
         "--size-mib", "12"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert example.returncode == 0, example.stdout + example.stderr
    assert "bytes identical: True" in example.stdout
    other = api(info, "other_token").get(info["draft_url"], timeout=30)
    assert other.status_code == 403
    # The banner has the command, ready to paste.
    assert f"--draft {info['draft_url']} --token {info['token']}" in demo.read_output()


def test_busy_port_gets_a_clear_message(demo, tmp_path):
    for option, port in (("--port", demo.port), ("--s3-port", demo.s3_port)):
        args = ["--port", str(port if option == "--port" else free_port()),
                "--s3-port", str(port if option == "--s3-port" else free_port())]
        busy = subprocess.run([sys.executable, "-m", "demo", *args, "--data-dir", str(tmp_path / "x")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2
        assert f"port {port} is busy" in busy.stderr and option in busy.stderr


def test_ctrl_c_stops_everything_and_data_survives_a_restart(tmp_path):
    """Files, an upload in progress (with its parts), users, tokens and the draft survive a restart."""
    process = DemoProcess(tmp_path / "data")
    info = process.start()
    completed = os.urandom(7 * MiB)
    created = start_upload(info, "kept.bin", len(completed))
    parts = put_parts(created["multipart_upload"], completed)
    done = api(info).post(created["links"]["complete"], json={"parts": parts}, timeout=60)
    assert done.status_code == 200, done.text
    in_progress = os.urandom(11 * MiB)
    pending = start_upload(info, "resumed.bin", len(in_progress))
    put_parts(pending["multipart_upload"], in_progress, numbers={1})
    browser = requests.Session()  # a signed-in browser: its login is kept in the data directory too
    signed_in = browser.post(f"{info['url']}/sign-in", data={"email": info["user"], "password": info["password"]},
                             timeout=30)
    assert signed_in.status_code == 200 and "Your records" in signed_in.text
    cookies = [r.headers.get("Set-Cookie", "") for r in [*signed_in.history, signed_in]]
    assert any("session=" in c and "SameSite=Lax" in c for c in cookies), cookies
    # What the demo writes is its owner's only: passwords, tokens, sessions, the secret key, the data.
    data = tmp_path / "data"
    private = [data, data / "info.json", data / "secret-key", data / "demo.db", *sorted((data / "sessions").iterdir())]
    assert len(private) > 4 and {p.name: oct(p.stat().st_mode & 0o077) for p in private} == {
        p.name: "0o0" for p in private}
    secret = (data / "secret-key").read_text()
    assert len(secret) >= 40 and secret not in process.output

    assert process.stop() == 0, process.output
    assert "stopping" in process.output
    # Both servers are gone: their ports are free again.
    for port in (process.port, process.s3_port):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    again = DemoProcess(tmp_path / "data", port=process.port, s3_port=process.s3_port)
    info2 = again.start()
    try:
        assert "(upgraded)" in again.read_output()
        assert (data / "secret-key").read_text() == secret  # kept: logins and tokens stay valid
        for key in ("draft_id", "token", "other_token"):
            assert info2[key] == info[key]
        page = browser.get(f"{info2['url']}/", allow_redirects=False, timeout=30)
        assert page.status_code == 200 and "Your records" in page.text  # still signed in
        files = {e["key"]: e for e in api(info2).get(f"{info2['draft_url']}/files/", timeout=30).json()["entries"]}
        assert files["kept.bin"]["status"] == "completed"
        assert files["kept.bin"]["checksum"] == done.json()["checksum"]
        assert api(info2).get(files["kept.bin"]["links"]["content"], timeout=60).content == completed
        # The upload in progress resumes: S3 still holds part 1.
        resume = api(info2).get(files["resumed.bin"]["links"]["multipart"], timeout=30).json()
        assert [p["PartNumber"] for p in resume["parts"]] == [1]
        signed = api(info2).post(files["resumed.bin"]["links"]["sign"], json={"parts": [2, 3]}, timeout=30).json()
        session = {"chunk_size": resume["chunk_size"], "parts_url": [None] + [p["url"] for p in signed["parts"]]}
        put_parts(session, in_progress, numbers={2, 3})
        finished = api(info2).post(files["resumed.bin"]["links"]["complete"], json={}, timeout=60)
        assert finished.status_code == 200, finished.text
        content = api(info2).get(finished.json()["links"]["content"], timeout=60).content
        assert content == in_progress
    finally:
        assert again.stop() == 0, again.output


def test_cleanup_schedule_expires_abandoned_uploads(tmp_path):
    process = DemoProcess(tmp_path / "data", "--upload-expiry", "2", "--cleanup-interval", "1")
    info = process.start()
    try:
        assert "cleaned up every 1 s" in process.read_output()
        created = start_upload(info, "abandoned.bin", 6 * MiB)
        put_parts(created["multipart_upload"], os.urandom(6 * MiB), numbers={1})
        s3 = embedded_s3(info)
        assert len(s3.list_multipart_uploads(Bucket=info["bucket"]).get("Uploads", [])) == 1

        def gone():
            listed = api(info).get(f"{info['draft_url']}/files/", timeout=30).json()["entries"]
            return not listed and not s3.list_multipart_uploads(Bucket=info["bucket"]).get("Uploads")

        wait_until(gone, "the cleanup to expire the upload")
        assert "cleanup: 1 expired uploads" in process.read_output()
    finally:
        assert process.stop() == 0, process.output


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.5)


@pytest.fixture()
def separate_database(database_uri, tmp_path):
    """A database of its own for the demo (it creates every Invenio table), removed afterwards."""
    if database_uri.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'external.db'}"
        return
    name = f"demo_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_uri, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield database_uri.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def _external_services_env(s3_backend, database_uri: str) -> dict[str, str]:
    """The environment that points the demo at an S3 and a database of its user's (not the embedded ones)."""
    return {
        "INVENIO_S3_ENDPOINT_URL": s3_backend.endpoint_url,
        "INVENIO_S3_ACCESS_KEY_ID": s3_backend.access_key,
        "INVENIO_S3_SECRET_ACCESS_KEY": s3_backend.secret_key,
        "INVENIO_S3_REGION_NAME": s3_backend.region,
        "INVENIO_SQLALCHEMY_DATABASE_URI": database_uri,
    }


def test_settings_from_the_environment_use_that_s3_and_database(s3_backend, s3_client, separate_database,
                                                                 tmp_path):
    bucket = f"demo-{uuid.uuid4().hex[:12]}"
    env = _external_services_env(s3_backend, separate_database)
    process = DemoProcess(tmp_path / "data", "--bucket", bucket, env=env)
    info = process.start()
    try:
        assert info["s3_endpoint"] == s3_backend.endpoint_url
        assert not (tmp_path / "data" / "s3").exists() and not (tmp_path / "data" / "demo.db").exists()
        payload = os.urandom(6 * MiB)
        created = start_upload(info, "external.bin", len(payload))
        parts = put_parts(created["multipart_upload"], payload)
        done = api(info).post(created["links"]["complete"], json={"parts": parts}, timeout=60)
        assert done.status_code == 200, done.text
        # The bytes are in that S3's bucket (created by the demo, with CORS for browsers)...
        objects = s3_client.list_objects_v2(Bucket=bucket)["Contents"]
        assert [o["Size"] for o in objects] == [len(payload)]
        rules = s3_client.get_bucket_cors(Bucket=bucket)["CORSRules"]
        assert "ETag" in rules[0]["ExposeHeaders"] and "PUT" in rules[0]["AllowedMethods"]
        # ...and the books in that database.
        engine = create_engine(separate_database)
        with engine.connect() as conn:
            emails = set(conn.execute(text("SELECT email FROM accounts_user")).scalars())
            versions = conn.execute(text("SELECT count(*) FROM alembic_version")).scalar()
            sessions = conn.execute(text("SELECT status FROM oarepo_s3_multipart_upload")).scalars().all()
        engine.dispose()
        assert emails == {"demo@example.org", "other@example.org"}
        assert versions > 0 and [str(s).lower().rsplit(".", 1)[-1] for s in sessions] == ["complete"]
    finally:
        assert process.stop() == 0, process.output
        for obj in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3_client.delete_object(Bucket=bucket, Key=obj["Key"])
        s3_client.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize("set_cors", [False, True])
def test_an_existing_buckets_cors_is_left_alone_unless_asked(s3_backend, s3_client, separate_database, tmp_path,
                                                            set_cors):
    bucket = f"demo-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    theirs = [{"AllowedOrigins": ["https://their.site"], "AllowedMethods": ["GET"], "AllowedHeaders": ["*"]}]
    s3_client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": theirs})
    env = _external_services_env(s3_backend, separate_database)
    process = DemoProcess(tmp_path / "data", "--bucket", bucket, *(["--set-cors"] if set_cors else []), env=env)
    process.start()
    try:
        rules = s3_client.get_bucket_cors(Bucket=bucket)["CORSRules"]
        if set_cors:
            assert "PUT" in rules[0]["AllowedMethods"] and "ETag" in rules[0]["ExposeHeaders"]
            assert "CORS set (--set-cors)" in process.read_output()
        else:
            assert [(r["AllowedOrigins"], r["AllowedMethods"]) for r in rules] == [(["https://their.site"], ["GET"])]
            assert "its CORS does not let browsers upload" in process.read_output()
    finally:
        assert process.stop() == 0, process.output
        s3_client.delete_bucket(Bucket=bucket)
