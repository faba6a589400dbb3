"""AWS SigV4 query-string presigning for S3, byte-identical to botocore.

Why this exists: a multipart upload of a large file needs thousands of
presigned UploadPart URLs, and boto3 builds each one by running its whole
request pipeline (parameter validation, serialisation, endpoint rules, event
hooks, four HMACs to derive the signing key) - roughly 200 µs per URL.
Nearly all of that is identical between two URLs of the same upload, so this
module computes it once and keeps only what really differs per URL: one
SHA-256 of the canonical request and one HMAC of the string to sign.

The output is required to equal ``client.generate_presigned_url(...)`` of a
boto3 S3 client created with ``signature_version="s3v4"`` and an explicit
``endpoint_url`` and ``addressing_style``, byte for byte; the property tests
in ``tests/test_presign.py`` compare the two.  botocore behaviour mirrored
here (see botocore ``auth.SigV4QueryAuth``, ``awsrequest.prepare_request_dict``
and the S3 endpoint rule set):

* the query string is the operation parameters in the order the caller gave
  them (botocore keeps the insertion order of ``Params``), then ``X-Amz-*``;
  ``X-Amz-Signature`` comes last and is not part of the canonical query;
* the key is percent-encoded keeping ``/`` and ``~``, without any path
  normalisation (``//``, ``.`` and ``..`` stay as they are);
* the ``Host`` that is signed is lowercased and omits a default port, while
  the URL keeps the endpoint's spelling (``https://S3.Example:443``);
* virtual-host style is only used for buckets that are valid DNS labels
  (lowercase, 3-63 characters, no dots, not an IPv4 address) on a host-named
  endpoint; anything else silently falls back to path style, except that over
  plain ``http`` dotted buckets are still put into the host name;
* the credential scope uses the configured region verbatim (even
  ``aws-global``).

Deliberate refusals (``ValueError``) where botocore would produce a URL that no
S3 service accepts or that needs a different signer: bucket names outside
``[a-zA-Z0-9._-]{1,255}`` (botocore's own check lets a trailing newline
through), S3 Express / outposts buckets (``--x-s3``, ``--xa-s3``, ``--op-s3``
suffixes, which botocore routes to other hosts and signers), ARNs, endpoint
URLs with user info, parameters, query or fragment, a dotted bucket in virtual
style on an IP endpoint, an expiry that is not an integer from 1 to 604800
seconds, a part number outside 1..10000.  An empty session token is treated
as no token (botocore would send an empty ``X-Amz-Security-Token``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from urllib.parse import quote, urlsplit

__all__ = ("SIGV4_MAX_EXPIRES", "SigV4Presigner")

SIGV4_MAX_EXPIRES = 7 * 24 * 3600
"""SigV4 presigned URLs cannot be valid for longer than 7 days."""

MAX_PART_NUMBER = 10000
"""S3 numbers multipart upload parts 1..10000."""

MAX_PART_BYTES = 5 * 1024**3
"""S3's largest part (5 GiB)."""

_ALGORITHM = "AWS4-HMAC-SHA256"
_SERVICE = "s3"
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# Headers botocore never signs (auth.SIGNED_HEADERS_BLACKLIST).
_UNSIGNED_HEADERS = frozenset(("expect", "transfer-encoding", "user-agent", "x-amzn-trace-id"))
_DEFAULT_PORTS = {"http": 80, "https": 443}

# botocore.handlers.VALID_BUCKET, anchored with \Z instead of $ so that a
# trailing newline is refused rather than signed into the path.
_BUCKET_RE = re.compile(r"[a-zA-Z0-9.\-_]{1,255}\Z")
# Ceph RGW multi-tenancy (S3_TENANT): "tenant:bucket", always addressed path-style.
_TENANT_BUCKET_RE = re.compile(r"[a-zA-Z0-9_]{1,255}:[a-zA-Z0-9.\-_]{1,255}\Z")
# Buckets that the S3 endpoint rules send to S3 Express / outposts hosts.
_RESERVED_BUCKET_SUFFIXES = ("--x-s3", "--xa-s3", "--op-s3")
# botocore.utils.validate_region_name (which also lets an empty name through).
_REGION_RE = re.compile(r"(?![0-9]+\Z)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)\Z")
# botocore.endpoint_provider.VALID_HOST_LABEL_RE and botocore.compat.IPV4_RE.
_HOST_LABEL_RE = re.compile(r"(?!-)[a-zA-Z\d-]{1,63}(?<!-)\Z")
_IPV4_RE = re.compile(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}\Z")
# RFC 9110 token: anything else cannot be a header name.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}\Z")


@lru_cache(maxsize=4096)
def _encode(value: str) -> str:
    """Percent-encode a query key or value like botocore's ``percent_encode``.

    Cached: parameter names, upload ids and keys repeat from call to call,
    and ``quote`` is the largest per-URL cost after the hashing.
    """
    return quote(value, safe="-_.~")


@lru_cache(maxsize=4096)
def _encode_key(key: str) -> str:
    """Percent-encode an object key for the path, keeping ``/`` (``{Key+}``)."""
    return quote(key, safe="/~")


def _is_host_label(value: str, allow_subdomains: bool) -> bool:
    """botocore's ``isValidHostLabel`` rule-set function."""
    if allow_subdomains:
        return all(_HOST_LABEL_RE.match(label) for label in value.split("."))
    return "." not in value and _HOST_LABEL_RE.match(value) is not None


def _is_virtual_hostable(bucket: str, allow_subdomains: bool) -> bool:
    """botocore's ``aws.isVirtualHostableS3Bucket`` rule-set function."""
    if len(bucket) < 3 or bucket.lower() != bucket or _IPV4_RE.match(bucket):
        return False
    return _is_host_label(bucket, allow_subdomains)


def _remove_dot_segments(path: str) -> str:
    """botocore.utils.remove_dot_segments (also collapses repeated slashes)."""
    if not path:
        return ""
    out: list[str] = []
    for segment in path.split("/"):
        if segment and segment != ".":
            if segment == "..":
                if out:
                    out.pop()
            else:
                out.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return first + "/".join(out) + last


def _join_path(base: str, url_path: str) -> str:
    """botocore.awsrequest._urljoin for a non-empty operation path."""
    if base.endswith("/") and url_path.startswith("/"):
        return base[:-1] + url_path
    return base + url_path


def _check_expires(expires_in: int) -> str:
    """Validate the lifetime and return it as the ``X-Amz-Expires`` value."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 1 <= expires_in <= SIGV4_MAX_EXPIRES:
        raise ValueError(
            f"expires_in must be an integer from 1 to {SIGV4_MAX_EXPIRES} seconds "
            f"(SigV4 presigned URLs live at most 7 days), got {expires_in!r}"
        )
    return str(expires_in)


def _check_content_length(length: int) -> str:
    """Validate a part's length (1 byte to 5 GiB, S3's largest part) and return it as the header value."""
    if type(length) is not int or not 1 <= length <= MAX_PART_BYTES:
        raise ValueError(f"content_length must be an integer from 1 to {MAX_PART_BYTES}, got {length!r}")
    return str(length)


def _check_part_number(part_number: int) -> str:
    """Validate an S3 part number and return its decimal form."""
    if isinstance(part_number, bool) or not isinstance(part_number, int) or not 1 <= part_number <= MAX_PART_NUMBER:
        raise ValueError(f"part_number must be an integer from 1 to {MAX_PART_NUMBER}, got {part_number!r}")
    return str(part_number)


def _hmac(key: bytes, msg: bytes) -> bytes:
    """Plain HMAC-SHA256 for the once-a-day key derivation."""
    return hmac.new(key, msg, hashlib.sha256).digest()


class _DayKey:
    """Everything that depends only on the UTC day: signing key and scope.

    The HMAC is kept as two pre-hashed SHA-256 states (key XOR ipad/opad), so
    signing a string costs two ``copy()`` calls instead of re-hashing the key
    pads each time, which is what ``hmac.new`` would do.
    """

    __slots__ = ("credential", "day", "inner", "outer", "scope")

    def __init__(self, day: int, secret_key: str, access_key: str, region: str):
        """Derive kSigning = HMAC chain over date, region, service, "aws4_request"."""
        self.day = day
        date = time.strftime("%Y%m%d", time.gmtime(day * 86400))
        key = ("AWS4" + secret_key).encode("utf-8")
        for part in (date, region, _SERVICE, "aws4_request"):
            key = _hmac(key, part.encode("utf-8"))
        self.scope = f"{date}/{region}/{_SERVICE}/aws4_request"
        self.credential = quote(f"{access_key}/{self.scope}", safe="-_.~")
        block = key.ljust(64, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def sign(self, string_to_sign: bytes) -> str:
        """Hex HMAC-SHA256 of ``string_to_sign`` under the day's signing key."""
        inner = self.inner.copy()
        inner.update(string_to_sign)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


class SigV4Presigner:
    """Presigns S3 requests for one endpoint and one set of credentials.

    Thread-safe: the per-day and per-second caches are replaced as whole
    immutable values, so concurrent callers at worst compute them twice.
    """

    def __init__(
        self,
        *,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        session_token: str | None = None,
        addressing_style: str = "path",
        clock: Callable[[], float] = time.time,
    ):
        """Parse the endpoint once; everything URL-related is derived from it.

        :param addressing_style: ``"path"`` (bucket in the path) or
            ``"virtual"`` (bucket in the host name where botocore would).
        :param clock: seconds since the epoch, used when ``now`` is not given.
        """
        if addressing_style not in ("path", "virtual"):
            raise ValueError(f'addressing_style must be "path" or "virtual", got {addressing_style!r}')
        if not isinstance(region, str) or not _REGION_RE.match(region):
            raise ValueError(f"region must be a DNS label such as 'us-east-1', got {region!r}")
        if not access_key or not secret_key:
            raise ValueError("access_key and secret_key must be non-empty")
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        # Encoded once here, and kept out of the shared _encode cache.
        self._token = quote(session_token, safe="-_.~") if session_token else None
        self._virtual = addressing_style == "virtual"
        self._clock = clock
        self._parse_endpoint(endpoint_url)
        self._buckets: dict[str, tuple[str, str, str]] = {}
        self._day_key: _DayKey | None = None
        self._stamp: tuple[int, str] = (-1, "")

    def _parse_endpoint(self, endpoint_url: str) -> None:
        """Split the endpoint as botocore's ``parseURL`` rule function does."""
        parts = urlsplit(endpoint_url)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"endpoint_url has an invalid port: {endpoint_url!r}") from exc
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"endpoint_url must be an http:// or https:// URL with a host, got {endpoint_url!r}")
        if parts.query or parts.fragment or "@" in parts.netloc or ";" in parts.path or "?" in endpoint_url:
            raise ValueError(
                f"endpoint_url must not contain user info, parameters, query or fragment: {endpoint_url!r}"
            )
        hostname = parts.hostname
        # urlsplit only yields a ':' in the host name for a bracketed IPv6.
        is_ipv6 = ":" in hostname
        self._scheme = parts.scheme
        self._authority = parts.netloc
        self._raw_path = parts.path
        normalized = quote(_remove_dot_segments(parts.path) or "/")
        self._normalized_path = normalized if normalized.endswith("/") else normalized + "/"
        self._is_ip = is_ipv6 or _IPV4_RE.match(hostname) is not None
        host = f"[{hostname}]" if is_ipv6 else hostname
        if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{port}"
        self._host = host

    def _bucket(self, bucket: str) -> tuple[str, str, str]:
        """``(scheme://netloc, path prefix, signed host)`` for a bucket, cached."""
        cached = self._buckets.get(bucket)
        if cached is not None:
            return cached
        if not isinstance(bucket, str) or not (_BUCKET_RE.match(bucket) or _TENANT_BUCKET_RE.match(bucket)):
            raise ValueError(f"bucket name must match [a-zA-Z0-9._-]{{1,255}} or tenant:bucket, got {bucket!r}")
        if bucket.endswith(_RESERVED_BUCKET_SUFFIXES):
            raise ValueError(f"S3 Express and outposts buckets need a different signer: {bucket!r}")
        virtual = False
        if self._virtual:
            if _is_virtual_hostable(bucket, False):
                virtual = not self._is_ip
            elif self._scheme == "http" and _is_virtual_hostable(bucket, True):
                if self._is_ip:
                    raise ValueError(f"dotted bucket {bucket!r} cannot be virtual-hosted on an IP endpoint")
                virtual = True
        if virtual:
            entry = (f"{self._scheme}://{bucket}.{self._authority}", self._raw_path, f"{bucket}.{self._host}")
        else:
            entry = (f"{self._scheme}://{self._authority}", self._normalized_path + _encode(bucket), self._host)
        if len(self._buckets) >= 256:
            self._buckets.clear()
        self._buckets[bucket] = entry
        return entry

    def _keys_for(self, now: float | None) -> tuple[_DayKey, str]:
        """The day's signing key and the ``X-Amz-Date`` stamp for ``now``."""
        second = int(self._clock() if now is None else now)
        day = second // 86400
        day_key = self._day_key
        if day_key is None or day_key.day != day:
            day_key = _DayKey(day, self._secret_key, self._access_key, self._region)
            self._day_key = day_key
        stamp = self._stamp
        if stamp[0] != second:
            stamp = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
            self._stamp = stamp
        return day_key, stamp[1]

    def presign(
        self,
        method: str,
        bucket: str,
        key: str,
        *,
        expires_in: int,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> str:
        """A presigned URL for any object-level S3 request.

        :param params: operation query parameters (e.g. ``partNumber``); their
            order is kept in the URL, as botocore keeps ``Params`` order.
        :param headers: headers the client will send and that must be signed
            (e.g. ``Content-MD5``); ``Host`` is always signed.
        :param now: the signing instant (seconds since the epoch), for a
            deterministic URL; defaults to the clock.
        """
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty string")
        expires = _check_expires(expires_in)
        origin, base_path, host = self._bucket(bucket)
        path = _join_path(base_path, "/" + _encode_key(key))
        day_key, amz_date = self._keys_for(now)

        op_pairs = []
        for name, value in (params or {}).items():
            if name.lower().startswith("x-amz-"):
                raise ValueError(f"query parameter {name!r} is reserved for the signature")
            op_pairs.append((_encode(name), _encode(str(value))))

        payload_hash = _UNSIGNED_PAYLOAD
        if headers:
            signed = {"host": host}
            for name, value in headers.items():
                lname = name.lower()
                if not _HEADER_NAME_RE.match(name) or lname == "host" or lname in signed:
                    raise ValueError(f"cannot sign header {name!r} (invalid, Host, or given twice)")
                if lname not in _UNSIGNED_HEADERS:
                    # SigV4 "Trimall": strip and collapse inner whitespace runs.
                    signed[lname] = " ".join(str(value).split())
                if lname == "x-amz-content-sha256":
                    # botocore's rule: this header, when present, is the payload hash of the
                    # canonical request, so S3 checks the body against it.
                    payload_hash = str(value)
            names = sorted(signed)
            signed_headers = ";".join(names)
            canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
        else:
            signed_headers = "host"
            canonical_headers = f"host:{host}\n"

        auth_pairs = [
            ("X-Amz-Algorithm", _ALGORITHM),
            ("X-Amz-Credential", day_key.credential),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", expires),
            ("X-Amz-SignedHeaders", _encode(signed_headers)),
        ]
        if self._token is not None:
            auth_pairs.append(("X-Amz-Security-Token", self._token))

        canonical_query = "&".join(f"{k}={v}" for k, v in sorted(op_pairs + auth_pairs))
        canonical_request = (
            f"{method.upper()}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
        )
        string_to_sign = (
            f"{_ALGORITHM}\n{amz_date}\n{day_key.scope}\n"
            f"{hashlib.sha256(canonical_request.encode('utf-8')).hexdigest()}"
        )
        signature = day_key.sign(string_to_sign.encode("utf-8"))
        query = "&".join(f"{k}={v}" for k, v in op_pairs + auth_pairs)
        return f"{origin}{path}?{query}&X-Amz-Signature={signature}"

    def upload_part_url(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        *,
        expires_in: int,
        content_md5: str | None = None,
        content_sha256: str | None = None,
        content_length: int | None = None,
        now: float | None = None,
    ) -> str:
        """A presigned UploadPart (``PUT``) URL for one part.

        With ``content_length`` the ``Content-Length`` header is signed: S3
        refuses a body of any other length (a client cannot store more, or
        less, than the part planned).
        With ``content_md5`` the client must send that ``Content-MD5`` header,
        and S3 rejects a part whose body does not match it (400 ``BadDigest``).
        With ``content_sha256`` (lowercase hex) the client must send that
        ``x-amz-content-sha256`` header; it is signed as the payload hash, so
        S3 rejects other bytes (400 ``XAmzContentSHA256Mismatch``). SHA-256
        costs a client with SHA extensions less than half of what MD5 does.
        """
        headers = {}
        if content_length is not None:
            headers["Content-Length"] = _check_content_length(content_length)
        if content_md5 is not None:
            headers["Content-MD5"] = content_md5
        if content_sha256 is not None:
            if not _SHA256_HEX_RE.match(content_sha256):
                raise ValueError("content_sha256 must be 64 lowercase hex digits")
            headers["x-amz-content-sha256"] = content_sha256
        return self.presign(
            "PUT",
            bucket,
            key,
            expires_in=expires_in,
            params={"uploadId": upload_id, "partNumber": _check_part_number(part_number)},
            headers=headers or None,
            now=now,
        )

    def upload_part_urls(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_numbers: Iterable[int],
        *,
        expires_in: int,
        content_lengths: Iterable[int] | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Presigned UploadPart URLs for many parts, all signed at one instant.

        The hot path: the canonical request differs between parts only in the
        part number (and signed length), so its SHA-256 state is advanced over
        the common prefix once and copied per part; each URL then costs one
        short SHA-256 update and one HMAC with the cached day key.  Equal, URL
        for URL, to calling :meth:`upload_part_url` at the same ``now``.

        :param content_lengths: each part's length, in the order of
            ``part_numbers``, signed as its ``Content-Length``.
        """
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty string")
        expires = _check_expires(expires_in)
        origin, base_path, host = self._bucket(bucket)
        path = _join_path(base_path, "/" + _encode_key(key))
        day_key, amz_date = self._keys_for(now)
        upload = _encode(upload_id)

        auth = (
            f"X-Amz-Algorithm={_ALGORITHM}&X-Amz-Credential={day_key.credential}"
            f"&X-Amz-Date={amz_date}&X-Amz-Expires={expires}"
        )
        token = "" if self._token is None else f"&X-Amz-Security-Token={self._token}"
        signed_headers = "host" if content_lengths is None else "content-length%3Bhost"
        # Canonical query is sorted: upper-case X-Amz-* < partNumber < uploadId.
        head = hashlib.sha256(f"PUT\n{path}\n{auth}{token}&X-Amz-SignedHeaders={signed_headers}&partNumber=".encode())
        tails: Iterator[bytes]
        if content_lengths is None:
            tails = itertools.repeat(f"&uploadId={upload}\nhost:{host}\n\nhost\n{_UNSIGNED_PAYLOAD}".encode())
        else:
            between = f"&uploadId={upload}\ncontent-length:".encode()
            after = f"\nhost:{host}\n\ncontent-length;host\n{_UNSIGNED_PAYLOAD}".encode()
            by_length: dict[int, bytes] = {}  # parts share one length (all but the last): build its tail once

            def tail_for(length: int) -> bytes:
                tail = by_length.get(length) if type(length) is int else None
                if tail is None:
                    tail = by_length[length] = between + _check_content_length(length).encode("ascii") + after
                return tail

            tails = map(tail_for, content_lengths)
        sts_head = f"{_ALGORITHM}\n{amz_date}\n{day_key.scope}\n".encode("ascii")
        url_head = f"{origin}{path}?uploadId={upload}&partNumber="
        url_tail = f"&{auth}&X-Amz-SignedHeaders={signed_headers}{token}&X-Amz-Signature="

        inner, outer = day_key.inner, day_key.outer
        urls: list[str] = []
        append = urls.append
        for part_number, tail in zip(part_numbers, tails, strict=content_lengths is not None):
            number = _check_part_number(part_number)
            digest = head.copy()
            digest.update(number.encode("ascii") + tail)
            mac = inner.copy()
            mac.update(sts_head + digest.hexdigest().encode("ascii"))
            final = outer.copy()
            final.update(mac.digest())
            append(f"{url_head}{number}{url_tail}{final.hexdigest()}")
        return urls

    def get_object_url(
        self,
        bucket: str,
        key: str,
        *,
        expires_in: int,
        response_content_disposition: str | None = None,
        response_content_type: str | None = None,
        now: float | None = None,
    ) -> str:
        """A presigned GetObject URL, optionally overriding response headers.

        S3 only honours ``response-*`` overrides on signed requests, which is
        how a download gets its original file name and media type.
        """
        params = {}
        if response_content_disposition is not None:
            params["response-content-disposition"] = response_content_disposition
        if response_content_type is not None:
            params["response-content-type"] = response_content_type
        return self.presign("GET", bucket, key, expires_in=expires_in, params=params, now=now)
