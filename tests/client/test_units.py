"""The client's pure parts, without a server: sizes, checksums, journals, progress, retries, packaging."""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from oarepo_s3_client import ApiError, Interrupted, TransferConfig, UsageError, expand_paths
from oarepo_s3_client.api import Api
from oarepo_s3_client.cli import parse_size
from oarepo_s3_client.errors import FileChanged, combine_exit_codes
from oarepo_s3_client.integrity import Expected, FollowingHasher, expected_checksum
from oarepo_s3_client.localfile import FileReader
from oarepo_s3_client.parts import PartRange, file_part_md5s, normalize_etag, part_ranges, s3etag
from oarepo_s3_client.progress import AggregatedProgress
from oarepo_s3_client.s3http import RegionBody
from oarepo_s3_client.state import Journal
from oarepo_s3_client.verify import chunk_size_candidates

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def test_part_ranges():
    assert part_ranges(10, 4) == [PartRange(1, 0, 4), PartRange(2, 4, 4), PartRange(3, 8, 2)]
    assert part_ranges(8, 4) == [PartRange(1, 0, 4), PartRange(2, 4, 4)]
    assert part_ranges(1, 5 * MiB) == [PartRange(1, 0, 1)]
    with pytest.raises(ValueError):
        part_ranges(0, 4)


def test_s3etag_is_md5_of_part_md5s(tmp_path):
    data = bytes(range(256)) * 40
    path = tmp_path / "f"
    path.write_bytes(data)
    digests = file_part_md5s(path, 4096)
    assert digests == [hashlib.md5(data[i : i + 4096]).digest() for i in range(0, len(data), 4096)]
    expected = hashlib.md5(b"".join(digests)).hexdigest()
    assert s3etag(digests) == f"s3etag:{expected}-3"
    assert normalize_etag('W/"ABCdef"') == "abcdef"


def test_chunk_size_candidates():
    assert chunk_size_candidates(100 * MiB, 7) == [16 * MiB, 15 * MiB]
    assert chunk_size_candidates(100 * MiB, 20, preferred=5 * MiB) == [5 * MiB]
    assert chunk_size_candidates(123, 1) == [123]


def test_parse_size():
    assert parse_size("5MiB") == 5 * MiB and parse_size("16M") == 16_000_000 and parse_size("42") == 42
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")


def test_exit_code_precedence():
    assert combine_exit_codes([0, 1, 4]) == 4
    assert combine_exit_codes([1, 3]) == 3
    assert combine_exit_codes([0, 130, 3]) == 130
    assert combine_exit_codes([]) == 0


def test_journal_ignores_a_line_torn_by_kill(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal.create(path, {"upload_id": "u"})
    journal.append({"n": 1, "etag": "a"})
    journal.append({"n": 2, "etag": "b"})
    with open(path, "ab") as fp:
        fp.write(b'{"n": 3, "et')  # kill -9 in the middle of a write
    loaded = Journal.load(path)
    assert loaded.header == {"upload_id": "u"} and [e["n"] for e in loaded.entries] == [1, 2]
    path.write_text('{"version": 999}\n')
    assert Journal.load(path) is None


def test_progress_is_aggregated_to_the_threshold():
    calls = []

    class Sub:
        def on_progress(self, bytes_transferred, **kwargs):
            calls.append((bytes_transferred, kwargs["initial"]))

    progress = AggregatedProgress([Sub()], threshold=1000)
    progress.start("k", 10_000, done=500)
    for _ in range(25):
        progress.add("k", 100)
    progress.add("k", -800)  # a failed part takes its bytes back at once (netted with the batch)
    progress.flush("k")
    assert calls == [(500, True), (1000, False), (1000, False), (-300, False)]


def test_region_body_reads_slices_and_stops_when_asked(tmp_path):
    data = bytes(range(256)) * (9 * 1024 + 8)  # 2 MiB + 5 KiB + ...
    path = tmp_path / "f"
    path.write_bytes(data)
    reader = FileReader(path)
    seen = []
    body = RegionBody(reader, 7, 2 * MiB + 5, seen.append, lambda: False)
    sent = b"".join(bytes(p) for p in body)
    assert len(body) == 2 * MiB + 5 and sent == data[7 : 7 + 2 * MiB + 5] and seen == [MiB, MiB, 5]
    with pytest.raises(Interrupted):
        list(RegionBody(reader, 0, MiB, lambda n: None, lambda: True))
    reader.close()


def test_reader_digests_in_one_pass_and_reports_a_shorter_file(tmp_path):
    data = bytes(range(251)) * 20_000  # 5 MB, slices do not align with the 251-byte pattern
    path = tmp_path / "f"
    path.write_bytes(data)
    reader = FileReader(path)
    md5, sha = reader.digests(3, len(data) - 3, ("md5", "sha256"))
    assert md5 == hashlib.md5(data[3:]).digest() and sha == hashlib.sha256(data[3:]).digest()
    path.write_bytes(data[: MiB + 1])  # truncated in place: the open descriptor sees the new size
    with pytest.raises(FileChanged, match="ended at byte 1048577"):
        reader.digest(0, len(data), "sha256")
    reader.close()


def test_expand_paths_keys_are_relative_with_slashes(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "x.txt").write_text("x")
    (tmp_path / "d" / "sub" / "y.txt").write_text("y")
    (tmp_path / "z.txt").write_text("z")
    keys = [k for _, k in expand_paths([tmp_path / "d", tmp_path / "z.txt"])]
    assert keys == ["x.txt", "sub/y.txt", "z.txt"]
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "z.txt").write_text("again")
    with pytest.raises(UsageError, match="both be uploaded"):
        expand_paths([tmp_path / "z.txt", tmp_path / "e"])
    with pytest.raises(UsageError):
        expand_paths([tmp_path / "nothing"])


class FakeSession:
    """Answers from a script of (status, headers, json) and records the calls."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def request(self, method, url, **kwargs):
        self.calls.append((method, url))
        status, headers, body = self.answers.pop(0)
        response = requests.Response()
        response.status_code, response.url = status, url
        response.headers.update(headers)
        response._content = __import__("json").dumps(body).encode()
        return response

    def close(self):
        pass


def test_api_retries_503_honouring_retry_after_then_reports_json_errors():
    sleeps = []
    session = FakeSession((503, {"Retry-After": "7"}, {"status": 503, "message": "S3 down"}),
                          (200, {}, {"id": "x"}),
                          (400, {}, {"status": 400, "message": "bad", "errors": [{"field": "size", "message": "no"}]}))
    api = Api("t", config=TransferConfig(backoff_initial=0.01, backoff_max=30), session=session, sleep=sleeps.append)
    assert api.get_json("http://api/x") == {"id": "x"}
    assert len(sleeps) == 1 and sleeps[0] >= 7
    with pytest.raises(ApiError, match="400 bad .size: no.") as info:
        api.get_json("http://api/y")
    assert info.value.errors == [{"field": "size", "message": "no"}]


def test_api_gives_up_after_max_attempts():
    session = FakeSession(*[(503, {}, {"status": 503, "message": "S3 down"})] * 3)
    api = Api("t", config=TransferConfig(max_attempts=3, backoff_initial=0.01), session=session, sleep=lambda s: None)
    with pytest.raises(ApiError, match="503 S3 down"):
        api.get_json("http://api/x")
    assert len(session.calls) == 3


def test_client_distribution_depends_on_small_libraries_only():
    project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert sorted(d.split(">")[0] for d in project["dependencies"]) == ["requests", "rich", "tenacity"]
    assert project["scripts"] == {"oarepo-s3": "oarepo_s3_client.cli:main"}
    code = ("import sys, oarepo_s3_client, oarepo_s3_client.cli, oarepo_s3_client.download; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('oarepo_s3', 'invenio_base', 'invenio_files_rest', 'flask', 'boto3', 'botocore', 'sqlalchemy')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          env={"PYTHONPATH": str(ROOT / "client"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 300), segment=st.integers(1, 120), chunk=st.integers(1, 90), threads=st.integers(1, 4),
       order=st.randoms(use_true_random=False), whole=st.booleans())
def test_following_hasher_hashes_ranges_written_in_any_order(tmp_path_factory, size, segment, chunk, threads,
                                                             order, whole):
    """Whatever the order and the threads, hashed as they arrive or read back, cut short and fetched again:
    the result is hashlib's over the file, cut in the expected segments."""
    data = bytes(order.getrandbits(8) for _ in range(size))
    path = tmp_path_factory.mktemp("hasher") / "f"
    path.write_bytes(bytes(size))
    if whole:
        expected = Expected("md5:" + hashlib.md5(data).hexdigest(), size, "test")
    else:
        digests = [hashlib.md5(data[i : i + segment]).digest() for i in range(0, size, segment)]
        expected = Expected(s3etag(digests), segment, "test")
    ranges = part_ranges(size, chunk)
    order.shuffle(ranges)
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = FollowingHasher(fd, size, expected)

        def write(r: PartRange) -> None:
            body = data[r.offset : r.offset + r.length]
            inline = hasher.stream(r.offset, r.length) if r.number % 2 else None
            if inline is not None and r.number % 3 == 0:  # a first try, damaged and cut: undone, fetched again
                inline.update(bytes(b ^ 0xFF for b in body[: max(1, r.length // 2)]))
                inline.close(complete=False)
                inline = hasher.stream(r.offset, r.length)
            os.pwrite(fd, body, r.offset)
            if inline is not None:
                inline.update(body)
                inline.close(complete=True)
            hasher.written(r.offset, r.length)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, ranges))
        assert hasher.checksum() == expected.checksum
    finally:
        os.close(fd)


def test_hasher_knows_nothing_until_every_byte_is_written(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = FollowingHasher(fd, 6, Expected("md5:" + hashlib.md5(b"abcdef").hexdigest(), 6, "test"))
        hasher.written(3, 3)
        assert hasher.checksum() is None  # bytes 0-2 are not written yet
        hasher.written(0, 3)
        assert hasher.checksum() == "md5:" + hashlib.md5(b"abcdef").hexdigest()
    finally:
        os.close(fd)


def test_expected_checksum_from_the_api_or_s3s_etag():
    md5 = "0123456789abcdef0123456789abcdef"
    ours = expected_checksum({"checksum": f"s3etag:{md5}-3", "part_size": 5 * MiB}, 12 * MiB, "")
    assert (ours.checksum, ours.segment_size, ours.source) == (f"s3etag:{md5}-3", 5 * MiB, "the API")
    rdm = expected_checksum({"checksum": f"multipart:{md5}-7-{16 * MiB}"}, 100 * MiB, "")
    assert (rdm.checksum, rdm.segment_size) == (f"s3etag:{md5}-7", 16 * MiB)
    whole = expected_checksum({"checksum": f"md5:{md5}"}, 10, '"ffff"')
    assert (whole.checksum, whole.segment_size) == (f"md5:{md5}", 10)
    # No checksum from the API: S3's ETag, a plain MD5 or one of parts (part size guessed as S3 tools cut).
    assert expected_checksum(None, 10, f'"{md5.upper()}"').checksum == f"md5:{md5}"
    guessed = expected_checksum({"checksum": None}, 100 * MiB, f'"{md5}-7"')
    assert (guessed.checksum, guessed.segment_size, guessed.source) == (f"s3etag:{md5}-7", 16 * MiB, "S3's ETag")
    assert guessed.guessed and guessed.other_segment_sizes == (15 * MiB,)  # also fits: tried before giving up
    assert not ours.guessed and not rdm.guessed  # the API named the part size
    # Nothing usable: not verified rather than a false alarm.
    assert expected_checksum({"checksum": "sha256:abc"}, 10, "not-an-md5") is None
    assert expected_checksum(None, 10, f"{md5}-0") is None
