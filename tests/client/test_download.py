"""Downloads: the API's 302, parallel ranged GETs, retries, re-resolving expired URLs, resuming."""

from __future__ import annotations

import json

import pytest

from oarepo_s3_client import IntegrityError, Interrupted, TransferConfig

from .conftest import MiB, run_cli
from .test_upload import CountingSession, StopAfter


@pytest.fixture()
def uploaded(make_uploader, make_file):
    """A 26 MiB file uploaded into the draft: (local path, UploadResult)."""
    path = make_file("down.bin", 26 * MiB + 7)
    return path, make_uploader().upload(path)


def range_gets(proxy):
    return [e for e in proxy.log if e.method == "GET" and e.range and e.range != "bytes=0-0"]


def downloader_config(**kwargs):
    return TransferConfig(concurrency=4, download_chunk_size=4 * MiB, backoff_initial=0.01, backoff_max=0.05, **kwargs)


def test_parallel_ranged_download_is_identical(uploaded, make_uploader, proxy, tmp_path):
    path, result = uploaded
    proxy.clear_log()
    dest = tmp_path / "out" / "copy.bin"
    dest.parent.mkdir()
    got = make_uploader(config=downloader_config()).download(result.content_url, dest)
    assert dest.read_bytes() == path.read_bytes()
    assert (got.size, got.ranges, got.ranges_fetched, got.resumed) == (path.stat().st_size, 7, 7, False)
    assert got.verified and got.checksum == result.checksum  # hashed as it arrived, as the API says
    ranges = sorted(e.range for e in range_gets(proxy))
    assert ranges == sorted(f"bytes={i * 4 * MiB}-{min((i + 1) * 4 * MiB, path.stat().st_size) - 1}" for i in range(7))
    assert not (tmp_path / "out" / "copy.bin.part").exists() and not (tmp_path / "out" / "copy.bin.part.state").exists()


def test_download_from_the_files_own_url(uploaded, make_uploader, tmp_path):
    path, result = uploaded
    make_uploader(config=downloader_config()).download(result.url, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == path.read_bytes()


def test_cut_ranges_and_expired_urls_are_retried(uploaded, make_uploader, proxy, tmp_path, owner):
    path, result = uploaded
    proxy.clear_log()
    proxy.add_fault("truncate", method="GET", when=lambda e: e.range == f"bytes={4 * MiB}-{8 * MiB - 1}")
    proxy.add_fault("expire", method="GET", when=lambda e: e.range == f"bytes={8 * MiB}-{12 * MiB - 1}")
    proxy.add_fault("drop", method="GET", when=lambda e: e.range == f"bytes={12 * MiB}-{16 * MiB - 1}")
    api = CountingSession(owner.token)
    make_uploader(config=downloader_config(), api_session=api).download(result.content_url, tmp_path / "c.bin")
    assert (tmp_path / "c.bin").read_bytes() == path.read_bytes()
    statuses = {}
    for e in range_gets(proxy):
        statuses.setdefault(e.range, []).append(e.status)
    assert statuses[f"bytes={4 * MiB}-{8 * MiB - 1}"] == [-2, 206]
    assert statuses[f"bytes={8 * MiB}-{12 * MiB - 1}"] == [403, 206]
    assert statuses[f"bytes={12 * MiB}-{16 * MiB - 1}"] == [-1, 206]
    assert api.counts["content"] == 2  # the 403 made the client ask the API for a fresh URL


def test_interrupted_download_resumes_with_the_missing_ranges(uploaded, make_uploader, proxy, tmp_path):
    path, result = uploaded
    dest = tmp_path / "resumed.bin"
    config = TransferConfig(concurrency=1, download_chunk_size=4 * MiB)
    with pytest.raises(Interrupted):
        make_uploader(config=config, subscribers=[StopAfter(10 * MiB)]).download(result.content_url, dest)
    assert (tmp_path / "resumed.bin.part").exists() and not dest.exists()
    done = [json.loads(line) for line in (tmp_path / "resumed.bin.part.state").read_text().splitlines()[1:]]
    assert len(done) == 2  # ranges 1 and 2 finished before the third was interrupted
    proxy.wait_idle()
    proxy.clear_log()

    got = make_uploader(config=config).download(result.content_url, dest)
    assert got.resumed and (got.ranges, got.ranges_fetched) == (7, 5)
    assert sorted(e.range for e in range_gets(proxy)) == sorted(
        f"bytes={i * 4 * MiB}-{min((i + 1) * 4 * MiB, path.stat().st_size) - 1}" for i in range(2, 7)
    )
    assert dest.read_bytes() == path.read_bytes()
    assert got.verified and got.checksum == result.checksum  # the ranges of the first run hashed from the file


def test_bytes_other_than_the_checksum_are_refused_and_not_kept(uploaded, make_uploader, s3_client, s3_bucket,
                                                                 tmp_path, owner):
    """The S3 object was replaced behind the repository's back (same size): the download says so, keeps nothing."""
    path, result = uploaded
    (obj,) = s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    other = bytearray(path.read_bytes())
    other[123] ^= 0xFF
    s3_client.put_object(Bucket=s3_bucket, Key=obj["Key"], Body=bytes(other))
    dest = tmp_path / "copy.bin"

    with pytest.raises(IntegrityError, match="hash to s3etag:.* the API says " + result.checksum):
        make_uploader(config=downloader_config()).download(result.content_url, dest)
    assert not dest.exists() and not (tmp_path / "copy.bin.part").exists()
    assert not (tmp_path / "copy.bin.part.state").exists()

    refused = run_cli("download", result.content_url, "-o", str(dest), "--json", token=owner.token)
    assert refused.returncode == 4, refused.stdout + refused.stderr  # the integrity exit code
    assert "the API says" in json.loads(refused.stdout)["error"]
    unchecked = run_cli("download", result.content_url, "-o", str(dest), "--no-verify", "--json", token=owner.token)
    assert unchecked.returncode == 0, unchecked.stderr
    assert json.loads(unchecked.stdout)["verified"] is False and dest.read_bytes() == bytes(other)


def test_cli_download(uploaded, tmp_path, owner):
    path, result = uploaded
    dest = tmp_path / "cli.bin"
    done = run_cli("download", result.content_url, "-o", str(dest), "--concurrency", "3", "--chunk-size", "5MiB",
                   "--json", token=owner.token)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert line["size"] == path.stat().st_size and line["ranges"] == 6 and line["path"] == str(dest)
    assert (line["checksum"], line["verified"]) == (result.checksum, True)
    assert dest.read_bytes() == path.read_bytes()
    denied = run_cli("download", result.content_url, "-o", str(tmp_path / "no.bin"), token="wrong")
    assert denied.returncode == 3
