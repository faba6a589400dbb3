"""The one place that makes S3 control calls, and translates their errors.

Control calls (create, list parts, complete, abort, head) go through one
boto3 client per app; presigned URLs never do (see :mod:`oarepo_s3.presign`).
Every botocore failure leaves this module as an :class:`~oarepo_s3.errors.S3Error`
that names the operation, S3's error code and the endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.handlers import validate_bucket_name
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from .errors import S3Error, S3Unavailable
from .results import UploadedPart


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What HeadObject tells about a stored object."""

    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """An in-progress multipart upload found by ListMultipartUploads."""

    key: str
    upload_id: str
    initiated: Any


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object found by ListObjectsV2."""

    key: str
    size: int
    last_modified: datetime


def split_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/path/to/key`` into ``(bucket, key)``."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://"):].partition("/")
    return bucket, key


def normalize_etag(etag: str | None) -> str:
    """Strip the quotes S3 puts around ETags, and lower-case hex digests."""
    return (etag or "").strip().strip('"').lower()


def parse_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, with S3's two shapes parsed by the standard library first.

    botocore parses every timestamp of an answer (each part's
    ``LastModified`` in ListParts, HeadObject's ``Last-Modified``) with
    dateutil: ~50 µs each, a fifth of the CPU of a ListParts call. The same
    instants, timezone-aware in UTC, come from ``datetime.fromisoformat``
    (``2026-12-06T16:28:14.000Z``) and ``email.utils`` (``Sun, 06 Dec 2026
    16:28:14 GMT``) in a few µs; anything else goes to botocore's parser.
    """
    if isinstance(value, str):
        try:
            if value.endswith("Z") and "T" in value:
                return datetime.fromisoformat(value)
            if value.endswith(" GMT"):
                return parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
    parsed: datetime = botocore_parse_timestamp(value)
    return parsed


def _boto3_session(config: Mapping[str, Any]) -> boto3.session.Session:
    """A boto3 session with the configured keys (None: boto3's credential chain), region and timestamp parser."""
    botocore_session = botocore.session.get_session()
    botocore_session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return boto3.session.Session(
        botocore_session=botocore_session,
        aws_access_key_id=config.get("S3_ACCESS_KEY_ID") or None,
        aws_secret_access_key=config.get("S3_SECRET_ACCESS_KEY") or None,
        region_name=config.get("S3_REGION_NAME") or "us-east-1",
    )


def build_boto3_client(config: Mapping[str, Any], session: boto3.session.Session | None = None) -> Any:
    """Create the boto3 S3 client from invenio-s3's and our settings.

    ``request_checksum_calculation``/``response_checksum_validation`` are
    ``when_required``: boto3 >= 1.36 otherwise adds CRC32 checksums that
    S3-compatible servers (Ceph, older MinIO) reject or ignore.
    """
    client_config = Config(
        signature_version="s3v4",
        s3={"addressing_style": config["OAREPO_S3_ADDRESSING_STYLE"]},
        connect_timeout=config["OAREPO_S3_CONNECT_TIMEOUT"],
        read_timeout=config["OAREPO_S3_READ_TIMEOUT"],
        # botocore's "max_attempts" counts retries; "total_max_attempts" counts attempts, as our setting does.
        retries={"total_max_attempts": config["OAREPO_S3_MAX_ATTEMPTS"], "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return (session or _boto3_session(config)).client(
        "s3",
        endpoint_url=config.get("S3_ENDPOINT_URL") or None,
        verify=config.get("S3_CA_BUNDLE") or None,
        config=client_config,
    )


UNREACHABLE = (ConnectionError, HTTPClientError, NoCredentialsError, PartialCredentialsError)
"""botocore failures that no further S3 call would escape either: the network, or no usable credentials."""


class S3Client:
    """Thin wrapper over a boto3 client: the S3 calls the upload lifecycle needs."""

    list_page_size: int | None = None
    """MaxParts/MaxUploads per list request; None leaves S3's default (1,000)."""

    def __init__(self, client: Any, tenant: str | None = None, credentials: Any = None):
        """:param client: a boto3 S3 client. :param tenant: Ceph RGW tenant, or None.

        :param credentials: the botocore credentials ``client`` signs with (for :meth:`signing_identity`).
        """
        self.client = client
        self.tenant = tenant
        self.credentials = credentials
        if tenant:
            # botocore refuses "tenant:bucket" as a bucket name; Ceph RGW needs it.
            client.meta.events.unregister("before-parameter-build.s3", validate_bucket_name)
        self.endpoint = client.meta.endpoint_url

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> S3Client:
        """The client of an app's config: invenio-s3's ``S3_*`` settings and ours."""
        session = _boto3_session(config)
        return cls(build_boto3_client(config, session), tenant=config.get("S3_TENANT"),
                   credentials=session.get_credentials())

    def signing_identity(self) -> tuple[str, str, Any]:
        """``(endpoint URL, region, frozen credentials)`` this client signs with, for the URL presigner.

        The credentials are the ones boto3 resolved (configured keys, else
        its chain: environment, profile, instance role), frozen so that key
        and secret belong together.
        """
        if self.credentials is None:
            raise S3Error("presign", "NoCredentials", "no S3 credentials are configured or found",
                          endpoint=self.endpoint)
        return self.client.meta.endpoint_url, self.client.meta.region_name, self.credentials.get_frozen_credentials()

    def bucket_name(self, bucket: str) -> str:
        """The bucket as S3 knows it (``tenant:bucket`` on a multi-tenant Ceph RGW)."""
        return f"{self.tenant}:{bucket}" if self.tenant else bucket

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Run any S3 operation of the boto3 client, translating its errors into :class:`S3Error`.

        The lifecycle uses the methods below; admin commands (CORS, bucket checks) use this.
        """
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**params)
        except ClientError as e:
            err = e.response.get("Error", {})
            raise S3Error(
                operation, err.get("Code", "Unknown"), err.get("Message", str(e)), endpoint=self.endpoint
            ) from e
        except UNREACHABLE as e:
            raise S3Unavailable(operation, type(e).__name__, str(e), endpoint=self.endpoint) from e
        except Exception as e:  # botocore's other failures (parsing an answer...): still S3's
            raise S3Error(operation, type(e).__name__, str(e), endpoint=self.endpoint) from e
        return response

    def create_multipart_upload(self, bucket: str, key: str, content_type: str) -> str:
        """Start an upload and return its UploadId."""
        upload_id: str = self.call(
            "create_multipart_upload", Bucket=self.bucket_name(bucket), Key=key, ContentType=content_type
        )["UploadId"]
        return upload_id

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[UploadedPart]:
        """Every part S3 holds for the upload, following all pages (1,000 per page)."""
        params: dict[str, Any] = {"Bucket": self.bucket_name(bucket), "Key": key, "UploadId": upload_id}
        if self.list_page_size:
            params["MaxParts"] = self.list_page_size
        parts: list[UploadedPart] = []
        while True:
            page = self.call("list_parts", **params)
            parts.extend(
                UploadedPart(p["PartNumber"], normalize_etag(p["ETag"]), p["Size"]) for p in page.get("Parts", [])
            )
            if not page.get("IsTruncated"):
                return parts
            params["PartNumberMarker"] = page["NextPartNumberMarker"]

    def complete_multipart_upload(self, bucket: str, key: str, upload_id: str, parts: list[UploadedPart]) -> str:
        """Complete the upload from ``parts`` (in order); return the ETag S3 answered.

        Ceph RGW answers an empty ETag here: callers read it with :meth:`head_object`.
        """
        response = self.call(
            "complete_multipart_upload",
            Bucket=self.bucket_name(bucket),
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in parts]},
        )
        return normalize_etag(response.get("ETag"))

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> bool:
        """Abort the upload; return False when S3 no longer knows it (already gone: fine)."""
        try:
            self.call("abort_multipart_upload", Bucket=self.bucket_name(bucket), Key=key, UploadId=upload_id)
        except S3Error as e:
            if e.s3_code == "NoSuchUpload":
                return False
            raise
        return True

    def head_object(self, bucket: str, key: str) -> ObjectInfo | None:
        """Size and ETag of a stored object, or None when there is none."""
        try:
            response = self.call("head_object", Bucket=self.bucket_name(bucket), Key=key)
        except S3Error as e:
            if e.s3_code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(size=response["ContentLength"], etag=normalize_etag(response.get("ETag")))

    def put_empty_object(self, bucket: str, key: str, content_type: str) -> None:
        """Write a 0-byte object (an empty file needs no upload)."""
        self.call("put_object", Bucket=self.bucket_name(bucket), Key=key, Body=b"", ContentType=content_type)

    def delete_object(self, bucket: str, key: str) -> None:
        """Delete an object (no error when it does not exist)."""
        self.call("delete_object", Bucket=self.bucket_name(bucket), Key=key)

    def list_multipart_uploads(self, bucket: str, prefix: str = "") -> Iterator[PendingUpload]:
        """Yield every in-progress upload under ``prefix``, following all pages."""
        params: dict[str, Any] = {"Bucket": self.bucket_name(bucket), "Prefix": prefix}
        if self.list_page_size:
            params["MaxUploads"] = self.list_page_size
        while True:
            page = self.call("list_multipart_uploads", **params)
            for u in page.get("Uploads", []):
                yield PendingUpload(u["Key"], u["UploadId"], u.get("Initiated"))
            if not page.get("IsTruncated"):
                return
            params["KeyMarker"] = page.get("NextKeyMarker")
            params["UploadIdMarker"] = page.get("NextUploadIdMarker")

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        """Yield every object under ``prefix``, following all pages (1,000 per page)."""
        params: dict[str, Any] = {"Bucket": self.bucket_name(bucket), "Prefix": prefix}
        if self.list_page_size:
            params["MaxKeys"] = self.list_page_size
        while True:
            page = self.call("list_objects_v2", **params)
            for o in page.get("Contents", []):
                yield StoredObject(o["Key"], o["Size"], o["LastModified"])
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]
