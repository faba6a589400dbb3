"""Typed results and settings passed across the client's modules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TypedDict

MiB = 1024 * 1024
CHECKSUMS = ("auto", "md5", "sha256")
"""Per-part checksums S3 can verify (see :class:`TransferConfig`)."""


@dataclass(frozen=True)
class TransferConfig:
    """How transfers run.

    Memory: an upload reads its file in 1 MiB slices (one buffer per thread,
    never a whole part), so it holds a few MiB whatever the part size.

    :param concurrency: parts (or download ranges) in flight at once.
    :param part_size: bytes per part; ``None`` lets the server choose
        (16 MiB, more for huge files); 5 MiB..5 GiB.
    :param max_attempts: tries per part / range / API call before giving up.
    :param backoff_initial: seconds of the first retry wait (doubled each time, with jitter).
    :param backoff_max: longest retry wait in seconds.
    :param connect_timeout: seconds to connect to the API or S3.
    :param read_timeout: seconds to wait for an answer (API) or the next bytes (S3).
    :param progress_threshold: smallest progress callback, in bytes (aggregated).
    :param resign_margin: re-sign a part URL this many seconds before it expires.
    :param download_chunk_size: bytes per ranged GET when downloading.
    :param sign_batch: parts hashed ahead and signed in one API request (a window); the
        workers send one window while the next is hashed and signed.
    :param checksum: what each part's PUT carries for S3 to verify: ``"md5"``
        (``Content-MD5``; every S3 server checks it, and the part's ETag is
        compared with it too) or ``"sha256"`` (the SHA-256 signed as the payload
        hash; less than half of MD5's CPU on CPUs with SHA extensions).
        ``"auto"`` (the default) is ``"sha256"`` where this CPU hashes SHA-256
        faster than MD5, else ``"md5"``. With SHA-256 the first part of a run
        probes whether the S3 server verifies it (AWS, Ceph RGW and MinIO do,
        moto does not) and falls back to MD5 when it does not: integrity is
        never traded for speed.
    :param zero_copy: send parts to plain-``http://`` S3 endpoints with
        ``os.sendfile``, from the page cache into the socket (0.97 instead of 1.19
        client CPU s/GiB through requests, measured on Ceph RGW). ``https://`` URLs, proxied ones and an
        injected ``s3_session`` always go through requests.
    """

    concurrency: int = 8
    part_size: int | None = None
    max_attempts: int = 6
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    progress_threshold: int = 256 * 1024
    resign_margin: float = 60.0
    download_chunk_size: int = 16 * MiB
    checksum: str = "auto"
    sign_batch: int = 32
    zero_copy: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.part_size is not None and self.part_size < 1:
            raise ValueError("part_size must be positive")
        if self.sign_batch < 1:
            raise ValueError("sign_batch must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.checksum not in CHECKSUMS:
            raise ValueError(f"checksum must be one of {', '.join(CHECKSUMS)}")


@dataclass
class UploadResult:
    """What happened to one file.

    ``status``: ``completed`` (uploaded now), ``skipped`` (already there and
    verified) or ``failed`` (``error`` says why; resumable unless it is an
    integrity mismatch).
    """

    path: str
    key: str
    status: str
    size: int
    checksum: str | None = None
    url: str | None = None
    """The file's API URL (``links.self``)."""
    content_url: str | None = None
    """Where to download it (``links.content``: a 302 to S3)."""
    parts: int = 0
    parts_sent: int = 0
    """Parts PUT to S3 by this run."""
    parts_reused: int = 0
    """Parts S3 already held from an earlier, interrupted run (not sent again)."""
    resumed: bool = False
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    checksum_algorithm: str | None = None
    """What S3 verified the parts sent by this run with: ``md5`` or ``sha256`` (None: nothing sent)."""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (one line of ``--json`` output)."""
        return asdict(self)


@dataclass
class DownloadResult:
    """A finished download."""

    url: str
    path: str
    size: int
    ranges: int
    ranges_fetched: int
    """Ranged GETs made by this run (the others were already on disk from an interrupted run)."""
    resumed: bool = False
    seconds: float = 0.0
    status: str = "completed"
    error: str | None = None
    exit_code: int = 0
    checksum: str | None = None
    """The downloaded bytes' checksum (``s3etag:`` or ``md5:``), equal to the file's; ``None`` when not verified."""
    verified: bool = False

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class SignedPart:
    """A presigned UploadPart URL and the headers the PUT must send."""

    number: int
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    signed_at: float = 0.0
    expires_in: float = 0.0


@dataclass
class S3Answer:
    """S3's answer to a part PUT, whichever HTTP path sent it."""

    status_code: int
    headers: Mapping[str, str]
    """Case-insensitive."""
    content: bytes


# --- the REST API's JSON, as far as the client reads it ------------------------------------
# (Python 3.10 has no ``NotRequired``: optional keys live in ``total=False`` subclasses.)


class DraftLinks(TypedDict, total=False):
    """``links`` of a draft record."""

    self: str
    files: str


class DraftJson(TypedDict, total=False):
    """A draft record (``GET <draft>``)."""

    id: str
    status: str
    links: DraftLinks


class FileLinks(TypedDict, total=False):
    """``links`` of a file: ``content`` once completed, the upload's links while pending."""

    self: str
    content: str
    multipart: str
    sign: str
    complete: str
    abort: str


class _UploadSessionRequired(TypedDict):
    upload_id: str
    chunk_size: int


class UploadSession(_UploadSessionRequired, total=False):
    """A pending file's ``multipart_upload``: the server's plan for the parts."""

    id: str
    size: int
    num_chunks: int


class _SessionPartRequired(TypedDict):
    PartNumber: int
    ETag: str


class SessionPart(_SessionPartRequired, total=False):
    """A part S3 already holds, in S3's spelling (``ETag`` quoted)."""

    Size: int


class UploadState(UploadSession):
    """``GET links.multipart``: the session and the parts S3 holds."""

    parts: list[SessionPart]
    parts_unknown: bool
    """True: the server cannot tell which parts S3 holds (an InvenioRDM without ListParts links)."""


class _FileJsonRequired(TypedDict):
    key: str
    size: int
    checksum: str | None
    status: str  # "pending" or "completed"
    links: FileLinks


class FileJson(_FileJsonRequired, total=False):
    """A file of a draft (``GET <draft>/files/<key>``, and the answers to start and complete)."""

    mimetype: str
    part_size: int
    multipart_upload: UploadSession  # only while the file is pending


class FileListJson(TypedDict):
    """``GET <draft>/files``."""

    entries: list[FileJson]


class _SignedPartJsonRequired(TypedDict):
    PartNumber: int
    url: str


class SignedPartJson(_SignedPartJsonRequired, total=False):
    """One presigned part URL in the sign answer; ``headers`` are the signed digests the PUT must send."""

    headers: dict[str, str]


class _SignJsonRequired(TypedDict):
    parts: list[SignedPartJson]


class SignJson(_SignJsonRequired, total=False):
    """``POST links.sign``: fresh part URLs and their lifetime in seconds."""

    expires_in: int
