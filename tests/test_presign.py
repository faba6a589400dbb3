"""oarepo_s3.presign produces the very URLs botocore does, byte for byte.

Every property test signs the same request twice - with ``SigV4Presigner``
and with a real boto3 S3 client - at the same frozen instant, and compares
the complete URL strings.  botocore reads the signing time through
``botocore.auth.get_current_datetime`` (naive UTC), which is what gets
patched.

Creating a boto3 client costs ~10 ms, far more than signing, so clients are
cached per (endpoint, region, addressing style) and each example installs
its own credentials on the client's request signer;
``test_credential_swap_equals_fresh_client`` checks that this shortcut gives
the same URLs as a client built with those credentials.
"""

from __future__ import annotations

import base64
import calendar
import datetime
from functools import cache
from unittest import mock
from urllib.parse import quote

import boto3
import botocore.config
import botocore.credentials
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oarepo_s3.presign import SIGV4_MAX_EXPIRES, SigV4Presigner

ENDPOINTS = (
    "https://s3.example.com",
    "https://s3.example.com/",
    "https://S3.Example.COM:443",
    "https://s3.eu-central-1.amazonaws.com",
    "http://localhost:9000",
    "http://minio.internal:80/",
    "http://127.0.0.1:9000",
    "http://[::1]:7480",
    "https://ceph.example.org:8443/s3",
    "https://ceph.example.org/s3/prefix/",
    "https://gw.example.org/a/../b/./c",
)
REGIONS = ("us-east-1", "eu-central-1", "us-west-2", "cn-north-1", "aws-global", "local")

no_surrogates = st.characters(blacklist_categories=("Cs",))
regions = st.one_of(
    st.sampled_from(REGIONS),
    st.from_regex(r"[a-z]{2}-[a-z]{4,9}-[1-9]", fullmatch=True),
    st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,20}[a-zA-Z0-9])?", fullmatch=True).filter(lambda r: not r.isdigit()),
)
access_keys = st.one_of(
    st.from_regex(r"AKIA[A-Z0-9]{16}", fullmatch=True),
    st.text(no_surrogates, min_size=1, max_size=40),
)
secret_keys = st.text(no_surrogates, min_size=1, max_size=60)
tokens = st.one_of(st.none(), st.text(no_surrogates, min_size=1, max_size=400))
buckets = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True),
    st.from_regex(r"[a-zA-Z0-9._-]{1,80}", fullmatch=True),
    st.sampled_from(["my-bucket", "my.bucket", "192.168.1.1", "a", "UPPER", "under_score", ".", ".."]),
).filter(lambda b: not b.endswith(("--x-s3", "--xa-s3", "--op-s3")))
# Keys made of the pieces that trip encoders, and arbitrary unicode keys.
key_pieces = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "./",
        "../",
        " ",
        "+",
        "%",
        "%2F",
        "?",
        "#",
        "&",
        "=",
        ";",
        "~",
        "*",
        "'",
        "é",
        "ü/",
        "日本",
        "😀",
        "\x00",
        "\n",
        "a",
        "file.txt",
    ]
)
keys = st.one_of(
    st.lists(key_pieces, min_size=1, max_size=12).map("".join),
    st.text(no_surrogates, min_size=1, max_size=300),
).filter(lambda k: len(k.encode("utf-8")) <= 1024)
upload_ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9._-]{20,120}", fullmatch=True),
    st.text(no_surrogates, min_size=1, max_size=80),
)
part_numbers = st.integers(min_value=1, max_value=10000)
expiries = st.integers(min_value=1, max_value=SIGV4_MAX_EXPIRES)
instants = st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 12, 31, 23, 59, 59))
content_md5s = st.one_of(
    st.binary(min_size=16, max_size=16).map(lambda b: base64.b64encode(b).decode("ascii")),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40).filter(str.strip),
)
content_sha256s = st.binary(min_size=32, max_size=32).map(bytes.hex)
file_names = st.text(no_surrogates, min_size=1, max_size=60)
dispositions = st.one_of(
    st.none(),
    file_names.map(lambda n: f"attachment; filename*=UTF-8''{quote(n, safe='')}"),
    st.tuples(st.sampled_from(["inline", "attachment"]), file_names).map(
        lambda t: (
            f"{t[0]}; filename=\"{t[1].encode('ascii', 'replace').decode()}\"; filename*=UTF-8''{quote(t[1], safe='')}"
        )
    ),
    st.text(no_surrogates, max_size=80),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(["application/octet-stream", "text/plain; charset=utf-8", "image/png", "application/pdf"]),
    st.text(no_surrogates, max_size=40),
)
setups = st.fixed_dictionaries(
    {
        "endpoint": st.sampled_from(ENDPOINTS),
        "style": st.sampled_from(["path", "virtual"]),
        "region": regions,
        "access": access_keys,
        "secret": secret_keys,
        "token": tokens,
    }
)

property_settings = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def epoch(instant: datetime.datetime) -> float:
    """The naive-UTC ``instant`` as seconds since the epoch."""
    return calendar.timegm(instant.timetuple()) + instant.microsecond / 1e6


@cache
def boto_session() -> boto3.session.Session:
    """One session, so clients share botocore's loaded service models."""
    return boto3.session.Session()


def make_client(endpoint, region, style, access="AKIDEXAMPLE", secret="secret", token=None):
    """A boto3 S3 client configured exactly as the presigner is."""
    return boto_session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": style}),
    )


@cache
def cached_client(endpoint, region, style):
    """A client per configuration; credentials are installed per example."""
    return make_client(endpoint, region, style)


def boto_url(setup, operation, params, expires_in, instant, client=None):
    """botocore's presigned URL for ``operation`` signed at ``instant``."""
    if client is None:
        client = cached_client(setup["endpoint"], setup["region"], setup["style"])
        client._request_signer._credentials = botocore.credentials.Credentials(
            setup["access"], setup["secret"], setup["token"]
        )
    with mock.patch("botocore.auth.get_current_datetime", return_value=instant):
        return client.generate_presigned_url(operation, Params=params, ExpiresIn=expires_in)


def presigner(setup, **kwargs) -> SigV4Presigner:
    """Our presigner for the same configuration."""
    return SigV4Presigner(
        endpoint_url=setup["endpoint"],
        access_key=setup["access"],
        secret_key=setup["secret"],
        region=setup["region"],
        session_token=setup["token"],
        addressing_style=setup["style"],
        **kwargs,
    )


def refused_virtual_on_ip(setup, bucket, call):
    """Run ``call``; True if it raised the documented virtual-host-on-IP refusal.

    botocore would put a dotted bucket in front of the IP address there; the
    refusal must only happen in exactly that situation.
    """
    try:
        call()
    except ValueError as exc:
        assert "IP endpoint" in str(exc)
        assert setup["style"] == "virtual" and "." in bucket
        assert setup["endpoint"].startswith("http://") and any(h in setup["endpoint"] for h in ("127.0.0.1", "[::1]"))
        return True
    return False


@settings(property_settings, max_examples=2000)
@given(setups, buckets, keys, upload_ids, part_numbers, expiries, instants)
def test_upload_part_matches_botocore(setup, bucket, key, upload_id, part_number, expires_in, instant):
    ours = presigner(setup)
    now = epoch(instant)
    if refused_virtual_on_ip(
        setup, bucket, lambda: ours.upload_part_url(bucket, key, upload_id, 1, expires_in=1, now=now)
    ):
        return
    expected = boto_url(
        setup,
        "upload_part",
        {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number},
        expires_in,
        instant,
    )
    assert ours.upload_part_url(bucket, key, upload_id, part_number, expires_in=expires_in, now=now) == expected
    assert ours.upload_part_urls(bucket, key, upload_id, [part_number], expires_in=expires_in, now=now) == [expected]


@settings(property_settings, max_examples=500)
@given(setups, buckets, keys, upload_ids, part_numbers, expiries, instants, content_md5s)
def test_upload_part_with_content_md5_matches_botocore(
    setup, bucket, key, upload_id, part_number, expires_in, instant, content_md5
):
    ours = presigner(setup)
    now = epoch(instant)
    if refused_virtual_on_ip(
        setup, bucket, lambda: ours.upload_part_url(bucket, key, upload_id, 1, expires_in=1, now=now)
    ):
        return
    expected = boto_url(
        setup,
        "upload_part",
        {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number, "ContentMD5": content_md5},
        expires_in,
        instant,
    )
    assert "X-Amz-SignedHeaders=content-md5%3Bhost" in expected
    got = ours.upload_part_url(
        bucket, key, upload_id, part_number, expires_in=expires_in, content_md5=content_md5, now=now
    )
    assert got == expected


@settings(property_settings, max_examples=500)
@given(setups, buckets, keys, upload_ids, part_numbers, expiries, instants, st.none() | content_md5s, content_sha256s)
def test_upload_part_with_content_sha256_matches_botocore(
    setup, bucket, key, upload_id, part_number, expires_in, instant, content_md5, content_sha256
):
    """A signed payload hash: botocore takes an ``X-Amz-Content-SHA256`` header as the canonical payload hash."""
    ours = presigner(setup)
    now = epoch(instant)
    if refused_virtual_on_ip(
        setup, bucket, lambda: ours.upload_part_url(bucket, key, upload_id, 1, expires_in=1, now=now)
    ):
        return
    client = make_client(setup["endpoint"], setup["region"], setup["style"])
    credentials = botocore.credentials.Credentials(setup["access"], setup["secret"], setup["token"])
    client._request_signer._credentials = credentials

    def add_payload_hash(request, **kwargs):
        request.headers["X-Amz-Content-SHA256"] = content_sha256

    client.meta.events.register("before-sign.s3.UploadPart", add_payload_hash)
    params = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number}
    if content_md5 is not None:
        params["ContentMD5"] = content_md5
    expected = boto_url(setup, "upload_part", params, expires_in, instant, client=client)
    assert "x-amz-content-sha256" in expected
    got = ours.upload_part_url(
        bucket, key, upload_id, part_number, expires_in=expires_in, content_md5=content_md5,
        content_sha256=content_sha256, now=now,
    )
    assert got == expected


@pytest.mark.parametrize("bad", ["", "A" * 64, "0" * 63, "0" * 65, "g" * 64, "UNSIGNED-PAYLOAD"])
def test_content_sha256_must_be_lowercase_hex(bad):
    with pytest.raises(ValueError, match="64 lowercase hex"):
        presigner(SETUP).upload_part_url("b", "k", "u", 1, expires_in=60, content_sha256=bad)


@settings(property_settings, max_examples=1000)
@given(setups, buckets, keys, expiries, instants, dispositions, content_types)
def test_get_object_matches_botocore(setup, bucket, key, expires_in, instant, disposition, content_type):
    ours = presigner(setup)
    now = epoch(instant)
    if refused_virtual_on_ip(setup, bucket, lambda: ours.get_object_url(bucket, key, expires_in=1, now=now)):
        return
    params = {"Bucket": bucket, "Key": key}
    if disposition is not None:
        params["ResponseContentDisposition"] = disposition
    if content_type is not None:
        params["ResponseContentType"] = content_type
    expected = boto_url(setup, "get_object", params, expires_in, instant)
    got = ours.get_object_url(
        bucket,
        key,
        expires_in=expires_in,
        response_content_disposition=disposition,
        response_content_type=content_type,
        now=now,
    )
    assert got == expected


@settings(property_settings, max_examples=150)
@given(setups, buckets, keys, upload_ids, st.lists(part_numbers, min_size=2, max_size=20), expiries, instants)
def test_upload_part_batch_matches_botocore(setup, bucket, key, upload_id, numbers, expires_in, instant):
    ours = presigner(setup)
    now = epoch(instant)
    if refused_virtual_on_ip(
        setup, bucket, lambda: ours.upload_part_url(bucket, key, upload_id, 1, expires_in=1, now=now)
    ):
        return
    expected = [
        boto_url(
            setup,
            "upload_part",
            {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": n},
            expires_in,
            instant,
        )
        for n in numbers
    ]
    assert ours.upload_part_urls(bucket, key, upload_id, numbers, expires_in=expires_in, now=now) == expected


@settings(property_settings, max_examples=40)
@given(setups, buckets, keys, instants)
def test_credential_swap_equals_fresh_client(setup, bucket, key, instant):
    """The harness shortcut signs exactly like a client built with the credentials.

    (The shortcut: credentials swapped onto a cached client's request signer.)
    """
    params = {"Bucket": bucket, "Key": key, "UploadId": "upload", "PartNumber": 7}
    fresh = make_client(
        setup["endpoint"], setup["region"], setup["style"], setup["access"], setup["secret"], setup["token"]
    )
    expected = boto_url(setup, "upload_part", params, 900, instant, client=fresh)
    assert boto_url(setup, "upload_part", params, 900, instant) == expected


def test_aws_documented_example():
    """The presigned GET example of the S3 SigV4 docs, independent of botocore.

    From "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)".
    """
    ours = SigV4Presigner(
        endpoint_url="https://s3.amazonaws.com",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        addressing_style="virtual",
    )
    now = calendar.timegm((2013, 5, 24, 0, 0, 0))
    assert ours.get_object_url("examplebucket", "test.txt", expires_in=86400, now=now) == (
        "https://examplebucket.s3.amazonaws.com/test.txt"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


SETUP = {
    "endpoint": "https://s3.example.com",
    "style": "path",
    "region": "eu-central-1",
    "access": "AKIDEXAMPLE",
    "secret": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "token": "session/token+=",
}


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_signing_key_cache_crosses_midnight(style):
    """One presigner, a clock running over midnight UTC.

    The cached day key and credential scope must follow the date forwards and back.
    """
    setup = dict(SETUP, style=style)
    instants = [
        datetime.datetime(2024, 2, 28, 23, 59, 58),
        datetime.datetime(2024, 2, 28, 23, 59, 59, 999000),
        datetime.datetime(2024, 2, 29, 0, 0, 0),
        datetime.datetime(2024, 2, 29, 0, 0, 1),
        datetime.datetime(2024, 2, 28, 12, 0, 0),
        datetime.datetime(2024, 3, 1, 0, 0, 0),
    ]
    current = [0.0]
    ours = presigner(setup, clock=lambda: current[0])
    scopes = []
    for instant in instants:
        current[0] = epoch(instant)
        params = {"Bucket": "bucket", "Key": "a/b.bin", "UploadId": "abc", "PartNumber": 2}
        expected = boto_url(setup, "upload_part", params, 3600, instant)
        assert ours.upload_part_url("bucket", "a/b.bin", "abc", 2, expires_in=3600) == expected
        assert ours.upload_part_urls("bucket", "a/b.bin", "abc", [2], expires_in=3600) == [expected]
        expected_get = boto_url(setup, "get_object", {"Bucket": "bucket", "Key": "a/b.bin"}, 60, instant)
        assert ours.get_object_url("bucket", "a/b.bin", expires_in=60) == expected_get
        scopes.append(expected.split("X-Amz-Credential=", 1)[1].split("&", 1)[0])
    assert [s.split("%2F")[1] for s in scopes] == [
        "20240228",
        "20240228",
        "20240229",
        "20240229",
        "20240228",
        "20240301",
    ]


def test_upload_part_urls_equals_loop_of_upload_part_url():
    ours = presigner(SETUP)
    now = epoch(datetime.datetime(2025, 6, 1, 12, 30, 45))
    numbers = [1, 2, 3, 9, 10, 11, 99, 100, 101, 1000, 9999, 10000, 5, 5]
    batch = ours.upload_part_urls("bucket", "dir/file name.bin", "up/load+id", numbers, expires_in=7200, now=now)
    assert batch == [
        ours.upload_part_url("bucket", "dir/file name.bin", "up/load+id", n, expires_in=7200, now=now) for n in numbers
    ]
    assert len(set(batch)) == len(set(numbers))


def test_upload_part_urls_uses_one_clock_reading_per_batch():
    readings = iter([epoch(datetime.datetime(2025, 6, 1, 23, 59, 59)), epoch(datetime.datetime(2025, 6, 2, 0, 0, 0))])
    ours = presigner(SETUP, clock=lambda: next(readings))
    urls = ours.upload_part_urls("bucket", "key", "upload", range(1, 101), expires_in=60)
    assert {url.split("X-Amz-Date=", 1)[1][:16] for url in urls} == {"20250601T235959Z"}
    later = ours.upload_part_urls("bucket", "key", "upload", [1], expires_in=60)
    assert later[0].split("X-Amz-Date=", 1)[1][:16] == "20250602T000000Z"


@pytest.mark.parametrize("expires_in", [1, 60, 3600, SIGV4_MAX_EXPIRES])
def test_expires_in_within_limits_is_accepted(expires_in):
    url = presigner(SETUP).get_object_url("bucket", "key", expires_in=expires_in, now=0)
    assert f"&X-Amz-Expires={expires_in}&" in url


@pytest.mark.parametrize("expires_in", [0, -1, SIGV4_MAX_EXPIRES + 1, 10**9, 1.5, 60.0, True, "60", None])
@pytest.mark.parametrize("method", ["get_object_url", "upload_part_url", "upload_part_urls", "presign"])
def test_expires_in_outside_limits_is_refused(expires_in, method):
    ours = presigner(SETUP)
    calls = {
        "get_object_url": lambda: ours.get_object_url("bucket", "key", expires_in=expires_in),
        "upload_part_url": lambda: ours.upload_part_url("bucket", "key", "up", 1, expires_in=expires_in),
        "upload_part_urls": lambda: ours.upload_part_urls("bucket", "key", "up", [1], expires_in=expires_in),
        "presign": lambda: ours.presign("GET", "bucket", "key", expires_in=expires_in),
    }
    with pytest.raises(ValueError, match="from 1 to 604800 seconds"):
        calls[method]()


@pytest.mark.parametrize("part_number", [0, -1, 10001, 1.0, True, "1"])
def test_part_number_outside_s3_range_is_refused(part_number):
    ours = presigner(SETUP)
    with pytest.raises(ValueError, match="part_number must be an integer from 1 to 10000"):
        ours.upload_part_url("bucket", "key", "up", part_number, expires_in=60)
    with pytest.raises(ValueError, match="part_number must be an integer from 1 to 10000"):
        ours.upload_part_urls("bucket", "key", "up", [1, part_number], expires_in=60)


@pytest.mark.parametrize(
    "bucket",
    [
        "",
        "bucket\n",
        "bad/bucket",
        "b" * 256,
        "arn:aws:s3:us-east-1:123456789012:accesspoint/ap",
        "zone--x-s3",
        "ap--xa-s3",
        "op--op-s3",
    ],
)
def test_unsupported_bucket_names_are_refused(bucket):
    with pytest.raises(ValueError):
        presigner(SETUP).get_object_url(bucket, "key", expires_in=60)


def test_dotted_bucket_virtual_on_ip_endpoint_is_refused():
    ours = presigner(dict(SETUP, endpoint="http://127.0.0.1:9000", style="virtual"))
    with pytest.raises(ValueError, match="IP endpoint"):
        ours.get_object_url("my.bucket", "key", expires_in=60)
    assert ours.get_object_url("mybucket", "key", expires_in=60, now=0).startswith(
        "http://127.0.0.1:9000/mybucket/key?"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"endpoint_url": "ftp://s3.example.com"},
        {"endpoint_url": "s3.example.com"},
        {"endpoint_url": "https://s3.example.com?x=1"},
        {"endpoint_url": "https://s3.example.com/#frag"},
        {"endpoint_url": "https://user:pw@s3.example.com"},
        {"endpoint_url": "https://s3.example.com/a;b"},
        {"endpoint_url": "https://s3.example.com:port"},
        {"addressing_style": "auto"},
        {"region": "us_east_1"},
        {"region": ""},
        {"region": "123"},
        {"region": "-east"},
        {"secret_key": ""},
    ],
)
def test_invalid_configuration_is_refused(kwargs):
    arguments = {"endpoint_url": "https://s3.example.com", "access_key": "AK", "secret_key": "SK", **kwargs}
    with pytest.raises(ValueError):
        SigV4Presigner(**arguments)


def test_empty_key_and_reserved_parameters_are_refused():
    ours = presigner(SETUP)
    with pytest.raises(ValueError, match="key"):
        ours.get_object_url("bucket", "", expires_in=60)
    with pytest.raises(ValueError, match="reserved"):
        ours.presign("GET", "bucket", "key", expires_in=60, params={"X-Amz-Date": "20200101T000000Z"})
    with pytest.raises(ValueError, match="Host"):
        ours.presign("GET", "bucket", "key", expires_in=60, headers={"Host": "evil.example.com"})


def test_empty_session_token_means_no_token():
    with_empty = presigner(dict(SETUP, token=""))
    without = presigner(dict(SETUP, token=None))
    assert with_empty.get_object_url("b", "k", expires_in=60, now=0) == without.get_object_url(
        "b", "k", expires_in=60, now=0
    )
    assert "X-Amz-Security-Token" not in without.get_object_url("b", "k", expires_in=60, now=0)


def test_generic_presign_with_headers_matches_botocore():
    """``presign`` signs extra headers (Range here) and keeps parameter order."""
    instant = datetime.datetime(2024, 7, 1, 8, 0, 0)
    ours = presigner(SETUP)
    expected = boto_url(
        SETUP,
        "get_object",
        {
            "Bucket": "bucket",
            "Key": "k",
            "VersionId": "v1",
            "ResponseContentType": "text/plain",
            "Range": "bytes=0-  99",
        },
        300,
        instant,
    )
    got = ours.presign(
        "GET",
        "bucket",
        "k",
        expires_in=300,
        params={"versionId": "v1", "response-content-type": "text/plain"},
        headers={"Range": "bytes=0-  99"},
        now=epoch(instant),
    )
    assert got == expected


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_ceph_tenant_bucket_matches_botocore(style):
    """``S3_TENANT`` buckets (``tenant:bucket``) are signed path-style, exactly as botocore does."""
    import boto3
    from botocore.config import Config
    from botocore.handlers import validate_bucket_name

    client = boto3.client(
        "s3", endpoint_url="http://127.0.0.1:7480", region_name="us-east-1",
        aws_access_key_id="AK", aws_secret_access_key="SK",
        config=Config(signature_version="s3v4", s3={"addressing_style": style}),
    )
    client.meta.events.unregister("before-parameter-build.s3", validate_bucket_name)
    ours = SigV4Presigner(endpoint_url="http://127.0.0.1:7480", access_key="AK", secret_key="SK",
                          addressing_style=style)
    instant = datetime.datetime(2026, 11, 25, 12, 0, 0)
    with mock.patch("botocore.auth.get_current_datetime", return_value=instant):
        theirs = client.generate_presigned_url(
            "upload_part", Params={"Bucket": "tenant_1:data", "Key": "a/b", "UploadId": "u", "PartNumber": 3},
            ExpiresIn=600,
        )
    mine = ours.upload_part_url("tenant_1:data", "a/b", "u", 3, expires_in=600,
                                now=instant.replace(tzinfo=datetime.UTC).timestamp())
    assert mine == theirs
    assert "/tenant_1%3Adata/a/b?" in mine


@settings(property_settings, max_examples=300)
@given(setups, buckets, keys, upload_ids, st.lists(st.tuples(part_numbers, st.integers(1, 5 * 1024**3)), min_size=1,
                                                   max_size=8), expiries, instants, st.none() | content_md5s)
def test_upload_part_with_signed_content_length_matches_botocore(
    setup, bucket, key, upload_id, parts, expires_in, instant, content_md5
):
    """``Content-Length`` signed into part URLs (S3 then refuses a body of another length), as botocore signs it."""
    ours = presigner(setup)
    now = epoch(instant)
    if refused_virtual_on_ip(
        setup, bucket, lambda: ours.upload_part_url(bucket, key, upload_id, 1, expires_in=1, now=now)
    ):
        return
    expected = []
    for number, length in parts:
        params = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number, "ContentLength": length}
        if content_md5 is not None:
            params["ContentMD5"] = content_md5
        expected.append(boto_url(setup, "upload_part", params, expires_in, instant))
    assert all("content-length" in url for url in expected)
    singles = [ours.upload_part_url(bucket, key, upload_id, n, expires_in=expires_in, content_length=length,
                                    content_md5=content_md5, now=now) for n, length in parts]
    assert singles == expected
    if content_md5 is None:
        batch = ours.upload_part_urls(bucket, key, upload_id, [n for n, _ in parts], expires_in=expires_in,
                                      content_lengths=[length for _, length in parts], now=now)
        assert batch == expected


@pytest.mark.parametrize("bad", [0, -1, 5 * 1024**3 + 1, 1.0, "5", True])
def test_content_length_must_be_a_part_size(bad):
    with pytest.raises(ValueError, match="content_length"):
        presigner(SETUP).upload_part_url("b", "k", "u", 1, expires_in=60, content_length=bad)
    with pytest.raises(ValueError, match="content_length"):
        presigner(SETUP).upload_part_urls("b", "k", "u", [1], expires_in=60, content_lengths=[bad])


def test_upload_part_urls_needs_one_length_per_part():
    with pytest.raises(ValueError):
        presigner(SETUP).upload_part_urls("b", "k", "u", [1, 2], expires_in=60, content_lengths=[5])
