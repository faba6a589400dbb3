"""``checksum="sha256"``/``"auto"``: parts carry a signed SHA-256 payload hash where S3 verifies it, MD5 elsewhere.

The client probes once per run: Ceph RGW refuses a body whose SHA-256 is not
the signed one (so SHA-256 is used), moto accepts anything (so the client
keeps MD5, which its own ETag check covers even there). The probe runs beside
the first window of parts (``concurrency`` of them, sent with MD5); its answer
sets the digest of the windows after it.
"""

from __future__ import annotations

import pytest

from oarepo_s3_client import TransferConfig
from oarepo_s3_client.parts import sha256_is_cheaper

from .conftest import MiB
from .test_upload import StopAfter, file_s3etag


def sha256_config(**kwargs) -> TransferConfig:
    return TransferConfig(concurrency=kwargs.pop("concurrency", 4), part_size=5 * MiB, backoff_initial=0.01,
                          backoff_max=0.05, checksum=kwargs.pop("checksum", "sha256"), **kwargs)


def test_sha256_where_s3_verifies_it_md5_where_it_does_not(make_uploader, make_file, proxy, owner, s3_backend):
    path = make_file("sha.bin", 3 * 5 * MiB + 77)
    result = make_uploader(config=sha256_config(concurrency=2)).upload(path)

    assert result.status == "completed" and result.checksum == file_s3etag(path, 5 * MiB)
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()
    probes, parts = proxy.probes(), proxy.part_puts()
    assert len(probes) == 1 and sorted(e.part for e in parts) == [1, 2, 3, 4]
    signed = {e.part: set(e.query["X-Amz-SignedHeaders"].split(";")) for e in parts}
    assert probes[0].part == 4  # the shortest part goes as the probe: its whole signed length, a wrong SHA-256
    md5, sha256 = {"content-length", "host", "content-md5"}, {"content-length", "host", "x-amz-content-sha256"}
    assert signed[1] == signed[2] == md5  # the first window (2 parts in flight) went beside the probe, with MD5
    if s3_backend.name == "ceph":  # RGW refused the probe's mismatching body: SHA-256 it is
        assert probes[0].status == 400
        assert result.checksum_algorithm == "sha256"
        assert signed[3] == signed[4] == sha256
    else:  # moto stored the probe (then the real part replaced it): keep MD5
        assert probes[0].status == 200
        assert result.checksum_algorithm == "md5"
        assert signed[3] == signed[4] == md5


def test_parts_that_fit_the_first_window_go_once_with_md5_and_no_probe(make_uploader, make_file, proxy, owner):
    """Nothing is left to decide for: a probe would only send one of these parts twice at once."""
    path = make_file("one-window.bin", 2 * 5 * MiB + 1)
    result = make_uploader(config=sha256_config(concurrency=3)).upload(path)

    assert result.status == "completed" and result.checksum_algorithm == "md5"
    assert proxy.probes() == [] and sorted(e.part for e in proxy.part_puts()) == [1, 2, 3]
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


@pytest.mark.s3_backends("ceph")
def test_damaged_part_is_refused_by_its_sha256_and_sent_again(make_uploader, make_file, proxy, owner):
    path = make_file("damaged-sha.bin", 3 * 5 * MiB)
    proxy.add_fault("corrupt", part=2)
    result = make_uploader(config=sha256_config(concurrency=1)).upload(path)  # part 1 beside the probe, with MD5

    statuses = [e.status for e in proxy.part_puts() if e.part == 2]
    assert statuses == [400, 200]  # XAmzContentSHA256Mismatch from RGW, then the good bytes
    assert result.checksum_algorithm == "sha256" and result.checksum == file_s3etag(path, 5 * MiB)
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


def test_sha256_upload_resumes_and_verifies_the_checksum(make_uploader, make_file, proxy, owner):
    from oarepo_s3_client import Interrupted

    path = make_file("resume-sha.bin", 6 * 5 * MiB)
    with pytest.raises(Interrupted):
        make_uploader(config=sha256_config(concurrency=2), subscribers=[StopAfter(2 * 5 * MiB)]).upload(path)
    proxy.wait_idle()
    # moto stores what the probe (part 6, beside the first window) sent: the real bytes, kept after an MD5 check.
    held = {e.part for e in proxy.part_puts(200)} | {e.part for e in proxy.probes() if e.status == 200}
    assert 1 <= len(held) < 6
    proxy.clear_log()

    result = make_uploader(config=sha256_config(concurrency=2)).upload(path)
    assert result.status == "completed" and result.resumed
    resent = sorted(e.part for e in proxy.part_puts())
    assert resent == sorted(set(range(1, 7)) - held)
    assert (result.parts_sent, result.parts_reused) == (len(resent), len(held))
    assert result.checksum == file_s3etag(path, 5 * MiB)
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


def test_auto_takes_sha256_only_where_it_is_cheaper_and_verified(make_uploader, make_file, proxy, s3_backend):
    path = make_file("auto.bin", 2 * 5 * MiB)
    result = make_uploader(config=sha256_config(checksum="auto", concurrency=1)).upload(path)
    assert result.status == "completed"
    if not sha256_is_cheaper():  # no SHA extensions: MD5 without asking S3
        assert result.checksum_algorithm == "md5" and proxy.probes() == []
    else:
        assert len(proxy.probes()) == 1
        assert result.checksum_algorithm == ("sha256" if s3_backend.name == "ceph" else "md5")
