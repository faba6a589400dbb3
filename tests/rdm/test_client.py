"""The upload client against invenio-records-resources' own FileResource (``protocol="rdm"``, ``--files-url``).

The Uploader speaks InvenioRDM's files API over real HTTP: init with transfer
"M", parts PUT straight to S3 with ``Content-MD5`` (S3 checks it), commit,
checksum compared; an interrupted upload resumes from the ListParts link
(parts S3 holds are not sent again); part links that S3 refuses are fetched
again from the file; the download comes back byte for byte through the
content link's 302.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import oarepo_s3.transfer as server_transfer
from oarepo_s3.proxies import current_oarepo_s3
from oarepo_s3_client import Interrupted, Uploader

from ..client.test_upload import StopAfter
from ..helpers import fresh_random_bytes
from .conftest import MiB

PART = 5 * MiB


class PartLog(requests.Session):
    """The client's S3 session, logging each part PUT's number and status."""

    def __init__(self):
        super().__init__()
        self.puts: list[tuple[int, int]] = []

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        query = parse_qs(urlsplit(url).query)
        if method == "PUT" and "partNumber" in query:
            self.puts.append((int(query["partNumber"][0]), response.status_code))
        return response


@pytest.fixture()
def files_url(rdm, record) -> str:
    return rdm.files_url(record.pid)


@pytest.fixture()
def make_uploader(files_url, tmp_path):
    made = []

    def make(**kwargs) -> tuple[Uploader, PartLog]:
        log = PartLog()
        uploader = Uploader(files_url, None, protocol="rdm", state_dir=tmp_path / "state", s3_session=log,
                            part_size=PART, **kwargs)
        made.append(uploader)
        return uploader, log

    yield make
    for uploader in made:
        uploader.close()


def _file(tmp_path, name: str, size: int):
    path = tmp_path / name
    path.write_bytes(fresh_random_bytes(size))
    return path


def test_upload_then_download_byte_for_byte(make_uploader, tmp_path, rdm, record):
    path = _file(tmp_path, "data.bin", 3 * PART + 12_345)
    uploader, log = make_uploader(concurrency=4)

    result = uploader.upload(path)

    assert result.status == "completed", result
    assert sorted(n for n, status in log.puts if status == 200) == [1, 2, 3, 4]
    assert result.checksum == "md5:" + hashlib.md5(path.read_bytes()).hexdigest()  # compared with the local file
    listed = rdm.read(record.pid, "data.bin").json()
    assert (listed["status"], listed["size"]) == ("completed", path.stat().st_size)

    out = tmp_path / "back.bin"
    downloaded = uploader.download(result.content_url, out)
    assert downloaded.size == path.stat().st_size
    assert downloaded.verified and downloaded.checksum == result.checksum  # records-resources' md5: of the file
    assert out.read_bytes() == path.read_bytes()

    again = uploader.upload(path)  # the same file again: recognised by its checksum, nothing sent
    assert again.status == "skipped"


def test_interrupted_upload_resumes_sending_only_the_missing_parts(make_uploader, tmp_path, rdm, record):
    path = _file(tmp_path, "resume.bin", 5 * PART + 999)
    first, first_log = make_uploader(concurrency=1, subscribers=[StopAfter(2 * PART + PART // 2)])
    with pytest.raises(Interrupted):
        first.upload(path)
    held = sorted(n for n, status in first_log.puts if status == 200)
    assert held == [1, 2]  # one part in flight at a time: the third was cut mid-body

    second, second_log = make_uploader(concurrency=2)
    result = second.upload(path)

    assert result.status == "completed" and result.resumed
    assert sorted(n for n, _ in second_log.puts) == [3, 4, 5, 6]  # S3's ListParts link said 1 and 2 are there
    assert (result.parts_sent, result.parts_reused) == (4, 2)
    assert rdm.content(record.pid, "resume.bin").content == path.read_bytes()


def test_a_changed_local_part_is_sent_again_on_resume(make_uploader, tmp_path, rdm, record):
    path = _file(tmp_path, "changing.bin", 3 * PART)
    first, _ = make_uploader(concurrency=1, subscribers=[StopAfter(PART + PART // 2)])
    with pytest.raises(Interrupted):
        first.upload(path)
    with open(path, "r+b") as fp:  # part 1, which S3 holds, changes
        fp.seek(10)
        flipped = fp.read(1)[0] ^ 1
        fp.seek(10)
        fp.write(bytes([flipped]))

    second, log = make_uploader()
    result = second.upload(path)

    assert sorted(n for n, _ in log.puts) == [1, 2, 3]
    assert result.parts_reused == 0
    assert rdm.content(record.pid, "changing.bin").content == path.read_bytes()


@pytest.mark.s3_backends("ceph")
def test_links_s3_refuses_are_fetched_again(make_uploader, tmp_path, rdm, record, monkeypatch):
    """The first part links the client gets were signed two hours ago for one: Ceph answers 403, the client
    fetches the file's links again (fresh ones) and goes on."""
    presigner = current_oarepo_s3.presigner
    real_clock, real_links = presigner._clock, server_transfer.links
    stale_answers = []

    def links(metadata):
        if len(stale_answers) < 2:  # the init's answer and the client's first GET of the file
            stale_answers.append(1)
            monkeypatch.setattr(presigner, "_clock", lambda: real_clock() - 7200)
            try:
                return real_links(metadata)
            finally:
                monkeypatch.setattr(presigner, "_clock", real_clock)
        return real_links(metadata)

    monkeypatch.setattr(server_transfer, "links", links)
    path = _file(tmp_path, "stale.bin", PART + 1000)
    uploader, log = make_uploader(concurrency=2)

    result = uploader.upload(path)

    assert result.status == "completed"
    assert {status for _, status in log.puts} == {403, 200}
    assert sorted(n for n, status in log.puts if status == 200) == [1, 2]
    assert rdm.content(record.pid, "stale.bin").content == path.read_bytes()


def test_empty_file_and_a_directory_through_the_command_line(files_url, tmp_path, rdm, record):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "sub" / "small.bin").write_bytes(fresh_random_bytes(70_000))
    done = subprocess.run(
        [sys.executable, "-m", "oarepo_s3_client", "upload", str(folder), "--files-url", files_url, "--json",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=300,
        env={"OAREPO_S3_TOKEN": "any (this test app lets everyone in)", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    keys = {e["key"]: e for e in rdm.list(record.pid).json()["entries"]}
    assert set(keys) == {"empty.txt", "sub/small.bin"}
    assert all(e["status"] == "completed" for e in keys.values())
    assert rdm.content(record.pid, "sub/small.bin").content == (folder / "sub" / "small.bin").read_bytes()


def test_a_refused_init_is_a_clear_error(make_uploader, tmp_path, rdm, record, db):
    from invenio_files_rest.models import Bucket

    bucket = db.session.get(Bucket, record.bucket_id)
    bucket.quota_size = 1000
    db.session.commit()
    uploader, log = make_uploader()
    result = uploader.upload_many([_file(tmp_path, "big.bin", PART + 1)])[0]
    assert result.status == "failed" and result.exit_code != 0
    assert "the server refused the multipart" in result.error and "quota" in result.error.lower(), result.error
    assert log.puts == []


def test_from_a_server_without_list_parts_links_the_journal_counts(make_uploader, tmp_path, rdm, record,
                                                                   monkeypatch):
    """invenio-s3's storage offers no ListParts link: the parts the journal recorded are hashed again and,
    when they match, not sent again."""
    real_links = server_transfer.links
    monkeypatch.setattr(server_transfer, "links", lambda md: {"parts": real_links(md)["parts"]})
    path = _file(tmp_path, "journal.bin", 4 * PART)
    first, first_log = make_uploader(concurrency=1, subscribers=[StopAfter(2 * PART + PART // 2)])
    with pytest.raises(Interrupted):
        first.upload(path)
    assert sorted(n for n, status in first_log.puts if status == 200) == [1, 2]

    second, log = make_uploader(concurrency=2)
    result = second.upload(path)

    assert sorted(n for n, _ in log.puts) == [3, 4]
    assert (result.parts_sent, result.parts_reused) == (2, 2)
    assert rdm.content(record.pid, "journal.bin").content == path.read_bytes()
