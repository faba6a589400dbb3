"""A presigned part URL is good for its own upload, key and part only (Ceph RGW checks signatures; moto does not).

tests/test_ceph_signatures.py already shows that changing ``partNumber`` or
the key of a URL is refused. Here, the URLs of two real uploads in one draft
are crossed: upload A's URL pointed at upload B (its uploadId, its key, or
both), and part 1's URL used for part 2, must all be refused with 403 and
store nothing in either upload; the URLs as signed still work afterwards.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from ..rest.conftest import start_upload

MiB = 1024 * 1024


def replace_query(url: str, **values) -> str:
    parts = urlsplit(url)
    query = [(k, values.get(k, v)) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def replace_key(url: str, s3_key: str) -> str:
    parts = urlsplit(url)
    bucket = parts.path.lstrip("/").split("/", 1)[0]
    return urlunsplit(parts._replace(path=f"/{bucket}/{s3_key}"))


@pytest.fixture()
def two_uploads(owner, draft):
    a = start_upload(owner, draft, key="a.bin", size=6 * MiB, part_size=5 * MiB)["multipart_upload"]
    b = start_upload(owner, draft, key="b.bin", size=6 * MiB, part_size=5 * MiB)["multipart_upload"]
    return a, b


def parts_of(owner, draft, key):
    r = owner.api().get(f"{draft['links']['files']}{key}/multipart", timeout=30)
    assert r.status_code == 200, r.text
    return [p["PartNumber"] for p in r.json()["parts"]]


MISUSES = {
    "other uploadId": lambda a, b: replace_query(a["parts_url"][0], uploadId=b["upload_id"]),
    "other key": lambda a, b: replace_key(a["parts_url"][0], b["key"]),
    "other key and uploadId": lambda a, b: replace_query(replace_key(a["parts_url"][0], b["key"]),
                                                         uploadId=b["upload_id"]),
    "part 1 URL for part 2": lambda a, b: replace_query(a["parts_url"][0], partNumber="2"),
}


@pytest.mark.parametrize("misuse", sorted(MISUSES))
def test_crossed_part_urls_are_refused(two_uploads, owner, draft, misuse):
    a, b = two_uploads
    url = MISUSES[misuse](a, b)
    assert url != a["parts_url"][0]
    r = requests.put(url, data=b"x" * (5 * MiB), timeout=60)
    assert r.status_code == 403, (misuse, r.status_code, r.text[:300])
    assert "SignatureDoesNotMatch" in r.text
    assert parts_of(owner, draft, "a.bin") == [] and parts_of(owner, draft, "b.bin") == []
    assert requests.put(a["parts_url"][0], data=b"x" * (5 * MiB), timeout=60).status_code == 200
    assert parts_of(owner, draft, "a.bin") == [1]
