"""Sending parts: read, hash, sign the digest in, PUT straight to S3, retry what a retry can cure."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .context import TransferContext
from .errors import ApiError, FileChanged, Interrupted, S3Unreachable, TransferError, UploadGone
from .localfile import FileReader
from .models import FileLinks, SignedPart
from .parts import PartRange, etag_is_md5, md5_base64, normalize_etag
from .retry import Retryable, parse_retry_after, retrying
from .s3http import s3_error_code
from .state import Journal, UploadEntry, UploadHeader

DIGEST_CODES = frozenset(("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"))
"""S3's answers to a body that does not match the digest signed into its URL."""
RETRYABLE_S3_CODES = DIGEST_CODES | {"RequestTimeout", "IncompleteBody", "SlowDown"}
"""S3 refusals that sending the part again cures (the digest codes: damaged on the way)."""
PROBE_SHA256 = hashlib.sha256(b"oarepo-s3: does this S3 verify signed SHA-256 payload hashes?").hexdigest()
"""The SHA-256 the probe signs into its part's URL: never the hash of a real part, so S3 must refuse it."""



@dataclass
class FileUpload:
    """One file's upload in progress, shared by the workers sending its parts."""

    path: Path
    key: str
    size: int
    mtime_ns: int
    chunk_size: int
    links: FileLinks
    journal: Journal[UploadHeader, UploadEntry]
    reader: FileReader
    ranges: list[PartRange] = field(default_factory=list)
    algorithm: str = "md5"
    """The digest signed into each part's URL: ``md5`` or ``sha256``."""
    done: dict[int, tuple[str, bytes | None]] = field(default_factory=dict)
    """part number -> (ETag, binary MD5) of the parts S3 holds and we checked.

    The MD5 is ``None`` for parts S3 verified by SHA-256: then S3's ETag is
    the only MD5 there is, vouched for by that verification.
    """
    held: dict[int, str] = field(default_factory=dict)
    """part number -> ETag of parts S3 held on resume that the journal cannot vouch for: hash and compare."""
    sent: int = 0
    reused: int = 0
    resumed: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class PartSender:
    """Runs part tasks on a bounded pool; parts are read in 1 MiB slices, never held whole."""

    def __init__(self, ctx: TransferContext):
        self.ctx = ctx

    def run(self, upload: FileUpload, parts: list[PartRange],
            probe: Callable[[PartRange], str] | None = None) -> None:
        """Send (or, for parts in ``upload.held``, first check) ``parts``; the first failure stops the others.

        Parts S3 may already hold are checked one by one (:meth:`_part_task`).
        The others go in windows of ``config.sign_batch``: a small pool hashes
        a window while the workers PUT the previous one, and one API request
        signs the whole window. Signing is thus off each part's critical path,
        and the server answers one request per window instead of one per part
        (~10 ms of its CPU each). Each part is read twice (hash, then send);
        the second read comes from the page cache, by ``sendfile`` where the
        transport can.

        ``probe`` (which digest does this S3 verify?) runs beside the first
        window, whose ``concurrency`` parts go with ``upload.algorithm``
        (MD5, which every S3 checks); its answer sets the algorithm of every
        later window. No part waits for the probe's round trip. The probe
        sends a part of a later window (the shortest, the last of those): one
        that is sent in any case, and only after the probe has answered, so
        the same part is never in flight twice. When every part fits in the
        first window there is nothing to decide and no probe is sent.
        """
        futures: list[Future[None]] = [self.ctx.executor.submit(self._part_task, upload, p) for p in parts
                                       if p.number in upload.held]
        pending = set(futures)
        fresh = [p for p in parts if p.number not in upload.held]
        window = max(1, self.ctx.config.sign_batch)
        first = min(window, self.ctx.config.concurrency) if probe is not None else window
        chunks = [fresh[:first]] + [fresh[i : i + window] for i in range(first, len(fresh), window)]
        later = fresh[first:]
        deciding = None
        if probe is not None and later:
            deciding = self.ctx.executor.submit(probe, min(later, key=lambda r: (r.length, -r.number)))
        hashers = ThreadPoolExecutor(min(2, self.ctx.config.concurrency), thread_name_prefix="oarepo-s3-hash")
        try:
            for i, chunk in enumerate(c for c in chunks if c):
                if i and deciding is not None:
                    upload.algorithm = deciding.result()
                    deciding = None
                pending = self._wait(pending, most_pending=2 * window)  # hash at most two windows ahead
                algorithm = upload.algorithm
                digests = list(hashers.map(self._hash_part, [upload] * len(chunk), chunk, [algorithm] * len(chunk)))
                signed = self._sign(upload, dict(zip((p.number for p in chunk), digests, strict=True)), algorithm)
                sent = [self.ctx.executor.submit(self.send, upload, p, d, signed[p.number], algorithm)
                        for p, d in zip(chunk, digests, strict=True)]
                futures += sent
                pending.update(sent)
            if deciding is not None:  # one window only: the probe's answer is for the next file
                deciding.result()
            self._wait(pending, most_pending=0)
        except BaseException:
            upload.stop.set()
            for future in futures:
                future.cancel()
            wait(futures)
            if deciding is not None:
                deciding.cancel()
                wait([deciding])
            raise
        finally:
            hashers.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _wait(pending: set[Future[None]], most_pending: int) -> set[Future[None]]:
        """Wait until at most ``most_pending`` futures are unfinished; raise the first failure.

        :returns: the unfinished ones (finished ones are checked and dropped, so
            the set stays about two windows long however big the file).
        """
        finished = {f for f in pending if f.done()}
        pending = pending - finished
        while True:
            for future in finished:
                error = future.exception()
                if error is not None:
                    raise error
            if len(pending) <= most_pending:
                return pending
            finished, pending = wait(pending, return_when=FIRST_COMPLETED if most_pending else FIRST_EXCEPTION)

    def _hash_part(self, upload: FileUpload, part: PartRange, algorithm: str) -> bytes:
        """Read and hash one part, in a hashing thread."""
        if self._stopped(upload):
            raise Interrupted("stopped")
        return upload.reader.digest(part.offset, part.length, algorithm)

    def _sign(self, upload: FileUpload, digests: dict[int, bytes], algorithm: str) -> dict[int, SignedPart]:
        """One API request for part URLs (a window, or one part to re-sign), each with its digest signed in."""
        if self._stopped(upload):
            raise Interrupted("stopped")
        encode = bytes.hex if algorithm == "sha256" else md5_base64  # x-amz-content-sha256 / Content-MD5
        return self.ctx.api.sign(upload.links["sign"], {n: encode(d) for n, d in digests.items()},
                                 now=self.ctx.clock(), algorithm=algorithm)

    def _stopped(self, upload: FileUpload) -> bool:
        return upload.stop.is_set() or self.ctx.cancelled.is_set()

    def _part_task(self, upload: FileUpload, part: PartRange) -> None:
        """A part S3 holds from an earlier run: keep it if it is exactly these bytes, else send it."""
        if self._stopped(upload):
            raise Interrupted("stopped")
        algorithm = upload.algorithm
        algorithms = ("md5",) if algorithm == "md5" else ("md5", algorithm)
        md5, *other = upload.reader.digests(part.offset, part.length, algorithms)
        if upload.held[part.number] == md5.hex():
            self._record(upload, part.number, md5.hex(), md5, reused=True)
            self.ctx.progress.add(upload.key, part.length)
            self.ctx.progress.flush(upload.key)
            return
        self.send(upload, part, other[0] if other else md5, algorithm=algorithm)

    def send(self, upload: FileUpload, part: PartRange, digest: bytes, signed: SignedPart | None = None,
             algorithm: str | None = None) -> None:
        """PUT one part with its digest (``algorithm``, else ``upload.algorithm``) signed into the URL.

        Retried with backoff: connection errors, 5xx, 408/429, BadDigest or
        XAmzContentSHA256Mismatch and an ETag that is not our MD5 (damaged
        bytes), 403 (re-signed first: the URL may have expired). NoSuchUpload
        raises :class:`UploadGone`; other 4xx raise :class:`TransferError` at once.
        """
        algorithm = algorithm or upload.algorithm
        try:
            for attempt in retrying(self.ctx.config, self.ctx.sleep):
                with attempt:
                    if self._stopped(upload):
                        raise Interrupted("stopped")
                    if signed is None or self._expired(signed):
                        signed = self._sign(upload, {part.number: digest}, algorithm)[part.number]
                    self._put(upload, part, digest, signed, algorithm)
                    return
        except Retryable as e:
            raise TransferError(f"{upload.key!r}: {e} (after {self.ctx.config.max_attempts} tries)") from e

    def _put(self, upload: FileUpload, part: PartRange, digest: bytes, signed: SignedPart, algorithm: str) -> None:
        sent = 0

        def report(n: int) -> None:
            nonlocal sent
            sent += n
            self.ctx.progress.add(upload.key, n)

        try:
            response = self.ctx.transport.put(signed.url, signed.headers, upload.reader, part.offset, part.length,
                                              report, lambda: self._stopped(upload))
        except BaseException as e:
            self.ctx.progress.add(upload.key, -sent)  # the part's bytes are taken back whatever went wrong
            if isinstance(e, S3Unreachable):
                raise Retryable(f"part {part.number}: {e}") from e
            if isinstance(e, FileChanged):
                raise self._changed(upload, part) from e
            raise
        etag = normalize_etag(response.headers.get("ETag"))
        md5 = digest if algorithm == "md5" else None
        stored_other = md5 is not None and etag_is_md5(etag) and etag != md5.hex()  # an S3 that checks no MD5
        if response.status_code == 200 and not stored_other:
            self._record(upload, part.number, etag, md5, reused=False)
            self.ctx.progress.flush(upload.key)
            return
        self.ctx.progress.add(upload.key, -sent)
        if response.status_code == 200:
            self._raise_if_changed(upload, part, digest, algorithm)
            # (stored_other: md5 is not None, so it is the digest sent)
            raise Retryable(f"part {part.number}: S3 stored other bytes (ETag {etag}, sent {digest.hex()})")
        status, code = response.status_code, s3_error_code(response)
        if code in DIGEST_CODES:
            self._raise_if_changed(upload, part, digest, algorithm)
        if status == 403:
            signed.expires_in = -1.0  # sign again before the next try (expired, or refused)
            raise Retryable(f"part {part.number}: 403 {code} from S3", resign=True)
        if status == 404 and code == "NoSuchUpload":
            raise UploadGone(f"{upload.key!r}: the upload was aborted or expired on the server")
        if status >= 500 or status in (408, 429) or code in RETRYABLE_S3_CODES:
            raise Retryable(f"part {part.number}: {status} {code} from S3",
                            retry_after=parse_retry_after(response.headers.get("Retry-After")))
        raise TransferError(f"{upload.key!r}: part {part.number}: S3 answered {status} {code}")

    def _raise_if_changed(self, upload: FileUpload, part: PartRange, digest: bytes, algorithm: str) -> None:
        """S3 refused our digest: damaged on the way (retry), or the file changed since it was hashed?"""
        try:
            changed = upload.reader.digest(part.offset, part.length, algorithm) != digest
        except FileChanged:
            changed = True
        if changed:
            raise self._changed(upload, part)

    @staticmethod
    def _changed(upload: FileUpload, part: PartRange) -> FileChanged:
        return FileChanged(f"{upload.path}: part {part.number} changed while being uploaded; run again to "
                           f"upload the new content")

    def _expired(self, signed: SignedPart) -> bool:
        """True when the URL must be signed again: refused, or about to expire (``resign_margin``)."""
        if signed.expires_in < 0:
            return True
        if not signed.expires_in:
            return False
        margin = min(self.ctx.config.resign_margin, signed.expires_in / 2)
        return self.ctx.clock() - signed.signed_at >= signed.expires_in - margin

    def _record(self, upload: FileUpload, number: int, etag: str, md5: bytes | None, *, reused: bool) -> None:
        with upload.lock:
            upload.done[number] = (etag, md5)
            if reused:
                upload.reused += 1
            else:
                upload.sent += 1
        entry: UploadEntry = {"n": number, "etag": etag}
        if md5 is not None:
            entry["md5"] = md5_base64(md5)
        upload.journal.append(entry)

    def server_verifies_sha256(self, upload: FileUpload, part: PartRange) -> bool:
        """Probe: does S3 refuse a body whose SHA-256 differs from the one signed into its URL?

        PUTs ``part`` (one that is about to be sent anyway, so a server that
        accepts the probe has it overwritten by the same bytes) with
        :data:`PROBE_SHA256` signed in. The whole part goes: its URL signs its
        length, so S3 would refuse a shorter probe for that alone.
        ``XAmzContentSHA256Mismatch`` means S3 verifies; anything else (200
        from moto, an old API refusing ``content_sha256``...) means it cannot
        be relied on.
        """
        try:
            signed = self.ctx.api.sign(upload.links["sign"], {part.number: PROBE_SHA256}, now=self.ctx.clock(),
                                       algorithm="sha256")[part.number]
            response = self.ctx.transport.put(signed.url, signed.headers, upload.reader, part.offset, part.length,
                                              lambda n: None, lambda: self._stopped(upload))
        except (ApiError, requests.RequestException, S3Unreachable):
            return False
        return response.status_code == 400 and s3_error_code(response) == "XAmzContentSHA256Mismatch"
