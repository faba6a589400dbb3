"""Uploads with the Python API: parallel parts with Content-MD5, progress, resume, verification."""

from __future__ import annotations

import hashlib

import pytest
import requests

from oarepo_s3_client.parts import part_ranges, s3etag

from .conftest import MiB, OnFirstBytes, flip_byte


def file_s3etag(path, chunk):
    data = path.read_bytes()
    return s3etag([hashlib.md5(data[r.offset : r.offset + r.length]).digest() for r in part_ranges(len(data), chunk)])


class Recorder:
    def __init__(self):
        self.calls = []

    def on_progress(self, bytes_transferred, **kwargs):
        self.calls.append((bytes_transferred, kwargs))


def test_upload_sends_parts_in_parallel_with_signed_content_md5(make_uploader, make_file, proxy, owner):
    path = make_file("data.bin", 27 * MiB + 123)
    recorder = Recorder()
    uploader = make_uploader(subscribers=[recorder])
    result = uploader.upload(path)

    assert result.status == "completed" and result.size == path.stat().st_size
    assert (result.parts, result.parts_sent, result.parts_reused, result.resumed) == (6, 6, 0, False)
    assert result.checksum == file_s3etag(path, 5 * MiB)
    puts = proxy.part_puts()
    assert sorted(e.part for e in puts) == [1, 2, 3, 4, 5, 6] and all(e.status == 200 for e in puts)
    for e in puts:
        assert "content-md5" in e.query["X-Amz-SignedHeaders"].split(";")
        assert "Content-MD5" in e.headers and "Authorization" not in e.headers
    # The bytes S3 serves are the file's.
    got = owner.api().get(result.content_url, timeout=60)
    assert got.status_code == 200 and hashlib.sha256(got.content).digest() == hashlib.sha256(path.read_bytes()).digest()
    # Progress: aggregated to >= 256 KiB a call (but the flush at each part's end), summing to the size.
    amounts = [n for n, kw in recorder.calls if not kw["initial"]]
    assert sum(amounts) == path.stat().st_size
    assert all(kw["key"] == "data.bin" and kw["total"] == path.stat().st_size for _, kw in recorder.calls)
    assert sum(1 for n in amounts if n < 256 * 1024) <= 6


class CountingSession(requests.Session):
    """An API session that counts calls by the last segment of their URL path."""

    def __init__(self, token):
        super().__init__()
        self.headers["Authorization"] = f"Bearer {token}"
        self.counts: dict[str, int] = {}

    def request(self, method, url, *args, **kwargs):
        name = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        self.counts[name] = self.counts.get(name, 0) + 1
        return super().request(method, url, *args, **kwargs)


class StopAfter:
    """A progress subscriber that presses Ctrl-C once ``limit`` bytes went out."""

    def __init__(self, limit):
        self.limit, self.seen = limit, 0

    def on_progress(self, bytes_transferred, **kwargs):
        self.seen += max(bytes_transferred, 0) if not kwargs.get("initial") else 0
        if self.seen >= self.limit:
            self.limit = float("inf")
            raise KeyboardInterrupt


def test_interrupted_upload_resumes_without_resending_finished_parts(make_uploader, make_file, proxy, owner):
    from oarepo_s3_client import Interrupted

    path = make_file("resume.bin", 8 * 5 * MiB)
    first = make_uploader(concurrency=2, subscribers=[StopAfter(3 * 5 * MiB)])
    with pytest.raises(Interrupted):
        first.upload(path)
    proxy.wait_idle()
    held = {e.part for e in proxy.part_puts(200)}
    assert 2 <= len(held) < 8
    proxy.clear_log()

    result = make_uploader(concurrency=2).upload(path)
    assert result.status == "completed" and result.resumed
    resent = sorted(e.part for e in proxy.part_puts())
    assert resent == sorted(set(range(1, 9)) - held)
    assert (result.parts_sent, result.parts_reused) == (len(resent), len(held))
    assert result.checksum == file_s3etag(path, 5 * MiB)
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


def test_resume_rehashes_parts_and_resends_those_that_changed(make_uploader, make_file, proxy, owner):
    """The local file changed between runs (even with its mtime put back): S3's parts are checked by MD5."""
    import os

    from oarepo_s3_client import Interrupted

    path = make_file("changing.bin", 6 * 5 * MiB)
    with pytest.raises(Interrupted):
        make_uploader(concurrency=1, subscribers=[StopAfter(3 * 5 * MiB)]).upload(path)
    proxy.wait_idle()
    held = sorted(e.part for e in proxy.part_puts(200))
    assert len(held) >= 2
    st = path.stat()
    with open(path, "r+b") as fp:  # change one byte of the first part S3 already holds
        offset = (held[0] - 1) * 5 * MiB + 10
        fp.seek(offset)
        flipped = fp.read(1)[0] ^ 1
        fp.seek(offset)  # (reading moved the position: write the flipped byte where it was read)
        fp.write(bytes([flipped]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    proxy.clear_log()

    result = make_uploader().upload(path)
    resent = sorted(e.part for e in proxy.part_puts())
    assert resent == sorted({held[0]} | (set(range(1, 7)) - set(held)))
    assert result.parts_reused == len(held) - 1
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


def test_dropped_and_corrupted_parts_are_retried(make_uploader, make_file, proxy, owner):
    path = make_file("faults.bin", 6 * 5 * MiB)
    proxy.add_fault("drop", part=2)
    proxy.add_fault("drop", part=4, times=2)
    proxy.add_fault("corrupt", part=3)
    proxy.add_fault("error503", part=5)
    result = make_uploader().upload(path)

    by_part = {}
    for e in proxy.part_puts():
        by_part.setdefault(e.part, []).append(e.status)
    assert by_part[2] == [-1, 200] and by_part[4] == [-1, -1, 200] and by_part[5] == [503, 200]
    assert by_part[3] == [400, 200]  # S3 refused the damaged bytes (BadDigest), the client sent them again
    assert by_part[1] == by_part[6] == [200]
    assert result.checksum == file_s3etag(path, 5 * MiB)
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


@pytest.mark.s3_backends("moto")  # Ceph checks Content-MD5 itself: it never accepts the damaged part
def test_damaged_part_that_s3_accepts_is_caught_by_its_etag(make_uploader, make_file, proxy, owner):
    """An S3 that does not check Content-MD5 stores damaged bytes; the part's ETag gives it away."""
    proxy.check_content_md5 = False
    path = make_file("etag.bin", 2 * 5 * MiB + 5)
    proxy.add_fault("corrupt", part=2)
    result = make_uploader().upload(path)
    assert [e.status for e in proxy.part_puts() if e.part == 2] == [200, 200]
    assert result.checksum == file_s3etag(path, 5 * MiB)
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


@pytest.mark.s3_backends("moto")  # Ceph refuses the damaged part (BadDigest) before it could lie
def test_lying_s3_is_caught_at_completion_and_the_part_resent(make_uploader, make_file, proxy, owner):
    """S3 stores damaged bytes but answers the MD5 of the good ones: the server's check at completion catches it."""
    path = make_file("lie.bin", 3 * 5 * MiB)
    proxy.add_fault("lie", part=2)
    result = make_uploader().upload(path)
    assert [e.action for e in proxy.part_puts() if e.part == 2] == ["lie", "forward"]
    assert result.status == "completed" and result.checksum == file_s3etag(path, 5 * MiB)
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


def test_expired_part_url_is_signed_again(make_uploader, make_file, proxy, owner):
    path = make_file("expired.bin", 3 * 5 * MiB)
    proxy.add_fault("expire", part=2, times=2)
    api = CountingSession(owner.token)
    result = make_uploader(api_session=api).upload(path)
    assert [e.status for e in proxy.part_puts() if e.part == 2] == [403, 403, 200]
    assert api.counts["sign"] == 1 + 2  # one for the window of 3 parts, and a fresh URL after each 403
    assert result.checksum == file_s3etag(path, 5 * MiB)


def test_url_about_to_expire_is_signed_again_before_use(make_uploader, make_file, proxy, owner):
    """With a (fake) clock past the URL's lifetime, a retry signs a new URL instead of using the old one."""
    path = make_file("clock.bin", 5 * MiB)
    now = [1000.0]

    def clock():
        return now[0]

    def sleep(seconds):
        now[0] += 8 * 86400  # the wait before the retry outlasts any URL

    proxy.add_fault("drop", part=1)
    api = CountingSession(owner.token)
    result = make_uploader(api_session=api, clock=clock, sleep=sleep).upload(path)
    assert [e.status for e in proxy.part_puts()] == [-1, 200]
    assert api.counts["sign"] == 2
    assert result.status == "completed"


def test_dropped_part_without_expiry_reuses_its_url(make_uploader, make_file, proxy, owner):
    path = make_file("reuse.bin", 5 * MiB)
    proxy.add_fault("drop", part=1)
    api = CountingSession(owner.token)
    make_uploader(api_session=api).upload(path)
    assert api.counts["sign"] == 1


def test_wrong_checksum_from_s3_is_an_integrity_error(make_uploader, make_file, proxy, draft_url, owner):
    from oarepo_s3_client import IntegrityError

    path = make_file("mismatch.bin", 2 * 5 * MiB)
    proxy.add_fault("fake_etag", method="HEAD")  # the server reads the completed object's ETag with HEAD
    with pytest.raises(IntegrityError, match="differs from the local file"):
        make_uploader().upload(path)


def test_rerun_skips_a_file_that_is_already_there(make_uploader, make_file, proxy):
    path = make_file("again.bin", 2 * 5 * MiB + 1)
    first = make_uploader().upload(path)
    proxy.clear_log()
    again = make_uploader().upload(path)
    assert again.status == "skipped" and again.checksum == first.checksum and proxy.part_puts() == []


def test_same_key_with_other_content_fails(make_uploader, make_file, tmp_path):
    from oarepo_s3_client import ClientError

    make_uploader().upload(make_file("same.bin", 5 * MiB + 1))
    other = make_file("same.bin", 5 * MiB + 1, directory=tmp_path / "other")
    with pytest.raises(ClientError, match="already exists in the draft with other content"):
        make_uploader().upload(other)


def test_abort_on_failure_aborts_the_upload(make_uploader, make_file, proxy, state):
    from oarepo_s3_client import TransferError

    path = make_file("doomed.bin", 2 * 5 * MiB)
    proxy.add_fault("error503", part=2, times=100)
    with pytest.raises(TransferError, match="after 3 tries"):
        make_uploader(abort_on_failure=True, config_kwargs={"max_attempts": 3}).upload(path)
    after = state()
    assert after["s3_uploads"] == [] and after["objects"] == []


def test_empty_file_is_uploaded_and_a_rerun_skips_it(make_uploader, make_file, proxy, owner):
    """No parts: the server creates the empty file complete; nothing goes to S3 from the client."""
    path = make_file("empty.txt", 0)
    result = make_uploader().upload(path)
    assert (result.status, result.size, result.checksum) == ("completed", 0, "md5:d41d8cd98f00b204e9800998ecf8427e")
    assert result.parts == result.parts_sent == 0 and proxy.part_puts() == []
    assert owner.api().get(result.content_url, timeout=60).content == b""
    again = make_uploader().upload(path)
    assert again.status == "skipped" and again.checksum == result.checksum


def test_parts_are_signed_a_window_at_a_time(make_uploader, make_file, proxy, owner):
    """7 parts in windows of 3: three sign requests, not seven; every part still gets its own digest signed."""
    from oarepo_s3_client import TransferConfig

    path = make_file("windows.bin", 6 * 5 * MiB + 1)
    api = CountingSession(owner.token)
    config = TransferConfig(concurrency=2, part_size=5 * MiB, checksum="md5", sign_batch=3)
    result = make_uploader(api_session=api, config=config).upload(path)
    assert result.status == "completed" and result.checksum == file_s3etag(path, 5 * MiB)
    assert api.counts["sign"] == 3
    puts = proxy.part_puts()
    assert sorted(e.part for e in puts) == list(range(1, 8))
    assert len({e.headers["Content-MD5"] for e in puts}) == 7


def test_part_changed_after_hashing_is_reported_not_retried(make_uploader, make_file, proxy):
    """A part hashed ahead, then changed before its PUT: S3 refuses the digest and the client says why."""
    from oarepo_s3_client import FileChanged, TransferConfig

    path = make_file("changing.bin", 4 * 5 * MiB)
    proxy.slow_parts(0.5)
    config = TransferConfig(concurrency=1, part_size=5 * MiB, checksum="md5", backoff_initial=0.01,
                            backoff_max=0.05)
    uploader = make_uploader(config=config, subscribers=[OnFirstBytes(lambda: flip_byte(path, 3 * 5 * MiB + 10))])
    with pytest.raises(FileChanged, match="part 4 changed"):
        uploader.upload(path)
    assert [e.status for e in proxy.part_puts() if e.part == 4] == [400]  # refused once, not retried

