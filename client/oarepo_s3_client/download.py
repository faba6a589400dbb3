"""Downloads: follow the API's 302 to S3, fetch ranges in parallel into ``FILE.part``, resumable.

``FILE.part`` has the file's full size from the start; each range is
written at its offset and then recorded in ``FILE.part.state`` (a journal).
Running again after an interruption fetches only the ranges not recorded.
Every range must come from the same S3 object (same ETag). The bytes are
hashed while they arrive (:mod:`.integrity`) and must match the file's
checksum from the API (else S3's ETag); at the end the size is checked and
``FILE.part`` becomes ``FILE``.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import requests

from .api import Api
from .context import TransferContext
from .errors import ApiError, IntegrityError, Interrupted, TransferError
from .integrity import FollowingHasher, expected_checksum
from .models import DownloadResult
from .parts import PartRange, part_ranges
from .retry import Retryable, parse_retry_after, retrying
from .state import DownloadEntry, DownloadHeader, Journal, download_journal_path

READ_SIZE = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+)")


_SEEK_LOCK = threading.Lock()


def _pwrite(fd: int, data: memoryview, offset: int) -> int:
    """Write at ``offset`` without moving a shared position (seek + write under a lock where no pwrite)."""
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    with _SEEK_LOCK:  # Windows
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


class _Source:
    """The presigned S3 URL of a file; fetched again from the API when S3 refuses it (it expired)."""

    def __init__(self, api: Api, url: str):
        self.api = api
        self.url = url
        self.location, self.info = api.resolve_download(url)
        self.generation = 0
        self._lock = threading.Lock()

    def refresh(self, seen: int) -> None:
        """Get a new URL, unless another thread already did since generation ``seen``."""
        with self._lock:
            if self.generation == seen:
                self.location, _ = self.api.resolve_download(self.url)
                self.generation += 1


class Downloader:
    """Parallel, resumable ranged GETs (the :class:`~.transfer.Uploader` builds one for ``download``)."""

    def __init__(self, ctx: TransferContext):
        self.ctx = ctx
        self._stop = threading.Event()

    def download(self, url: str, dest: str | os.PathLike[str], concurrency: int | None = None,
                 verify: bool = True) -> DownloadResult:
        """Download ``url`` (a file's ``content`` or ``self`` API URL) to ``dest``.

        :param verify: hash the bytes and compare them with the file's checksum (the API's, else S3's ETag).
        :raises Interrupted: cancelled; run again to resume.
        :raises IntegrityError: the size differs from what the API and S3 announced, or the bytes from the
            checksum (then nothing is kept: run again to download afresh).
        :raises TransferError: a range failed after all retries, or the object changed on the server.
        """
        started = self.ctx.clock()
        dest = Path(dest)
        part_path = dest.with_name(dest.name + ".part")
        source = _Source(self.ctx.api, url)
        size, etag = self._probe(source)
        expected = source.info.get("size") if source.info is not None else None
        if expected is not None and expected != size:
            raise IntegrityError(f"{url}: the API says {expected} bytes, S3 has {size}")
        ranges = part_ranges(size, self.ctx.config.download_chunk_size) if size else []
        header: DownloadHeader = {"url": url, "size": size, "etag": etag,
                                  "chunk_size": self.ctx.config.download_chunk_size}
        journal_path = download_journal_path(part_path)
        journal: Journal[DownloadHeader, DownloadEntry] | None = Journal.load(journal_path)
        done: set[int] = set()
        if journal is not None and journal.header == header and part_path.exists() \
                and part_path.stat().st_size == size:
            done = {int(e["n"]) for e in journal.entries if "n" in e}
        else:
            journal = Journal.create(journal_path, header)
            with open(part_path, "wb") as fp:
                fp.truncate(size)
        todo = [r for r in ranges if r.number not in done]
        key = dest.name
        self.ctx.progress.start(key, size, sum(r.length for r in ranges if r.number in done))
        fd = os.open(part_path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        info = source.info or self._file_info(url)
        wanted = expected_checksum(cast(dict[str, Any] | None, info), size, etag) if verify and size else None
        hasher = FollowingHasher(fd, size, wanted) if wanted is not None else None
        own = concurrency is not None and concurrency != self.ctx.config.concurrency
        executor = ThreadPoolExecutor(concurrency, thread_name_prefix="oarepo-s3-get") if own else self.ctx.executor
        try:
            for r in ranges:  # an interrupted run's ranges: hashed from the file first
                if hasher is not None and r.number in done:
                    hasher.written(r.offset, r.length)
            futures = [executor.submit(self._fetch, source, fd, r, etag, key, journal, hasher) for r in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException as e:
                self._stop.set()
                for future in futures:
                    future.cancel()
                for future in futures:
                    if not future.cancelled():
                        future.exception()
                if isinstance(e, KeyboardInterrupt):
                    raise Interrupted("interrupted; run again to resume") from e
                raise
            on_disk = os.fstat(fd).st_size
        finally:
            os.close(fd)
            if own:
                executor.shutdown(wait=True, cancel_futures=True)
        if on_disk != size:
            raise IntegrityError(f"{part_path}: {on_disk} bytes on disk, expected {size}")
        got = hasher.checksum() if hasher is not None else None
        if wanted is not None and got != wanted.checksum:
            if wanted.guessed:  # the part size was a guess: a mismatch proves nothing
                got = wanted.checksum if wanted.matches_otherwise(part_path) else None
            else:
                journal.remove()
                part_path.unlink(missing_ok=True)
                raise IntegrityError(f"{key}: the downloaded bytes hash to {got}, but {wanted.source} says "
                                     f"{wanted.checksum}; nothing was kept: run again to download it afresh")
        os.replace(part_path, dest)
        journal.remove()
        return DownloadResult(url, str(dest), size, len(ranges), len(todo), resumed=bool(done),
                              seconds=round(self.ctx.clock() - started, 3), checksum=got, verified=got is not None)

    def _file_info(self, url: str) -> dict[str, Any] | None:
        """The file's API JSON behind a ``…/content`` link (its ``self`` link), for its checksum; else ``None``."""
        if not url.rstrip("/").endswith("/content"):
            return None
        try:
            info = self.ctx.api.get_json(url.rstrip("/").removesuffix("/content"))
        except ApiError:
            return None  # e.g. a content link whose file JSON this token may not read: S3's ETag remains
        return info if isinstance(info, dict) else None

    def _probe(self, source: _Source) -> tuple[int, str]:
        """The object's size and ETag, from a one-byte ranged GET (a GET-signed URL allows no HEAD)."""
        for attempt in retrying(self.ctx.config, self.ctx.sleep):
            with attempt:
                seen = source.generation
                try:
                    response = self.ctx.s3.get(source.location, headers={"Range": "bytes=0-0"},
                                               timeout=(self.ctx.config.connect_timeout, self.ctx.config.read_timeout))
                except (requests.ConnectionError, requests.Timeout) as e:
                    raise Retryable(f"{type(e).__name__}: {e}") from e
                self._check_status(response, source, seen)
                if response.status_code == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                    if not match:
                        raise TransferError(f"S3 answered 206 without a usable Content-Range for {source.url}")
                    return int(match.group(3)), response.headers.get("ETag", "")
                return len(response.content), response.headers.get("ETag", "")  # 200: no ranges, tiny file
        raise AssertionError("unreachable")

    def _check_status(self, response: requests.Response, source: _Source, seen: int) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        if status == 403:
            source.refresh(seen)
            raise Retryable("403 from S3: the URL expired, fetched a new one", resign=True)
        if status >= 500 or status in (408, 429):
            raise Retryable(f"{status} from S3", retry_after=parse_retry_after(response.headers.get("Retry-After")))
        raise TransferError(f"S3 answered {status} for {source.url}")

    def _stopped(self) -> bool:
        return self._stop.is_set() or self.ctx.cancelled.is_set()

    def _fetch(self, source: _Source, fd: int, r: PartRange, etag: str, key: str,
               journal: Journal[DownloadHeader, DownloadEntry], hasher: FollowingHasher | None) -> None:
        try:
            for attempt in retrying(self.ctx.config, self.ctx.sleep):
                with attempt:
                    if self._stopped():
                        raise Interrupted("stopped")
                    self._fetch_once(source, fd, r, etag, key, hasher)
                    journal.append({"n": r.number})
                    self.ctx.progress.flush(key)
                    if hasher is not None:  # a write error here is no network fault: not retried
                        hasher.written(r.offset, r.length)
                    return
        except Retryable as e:
            raise TransferError(f"{key}: bytes {r.offset}-{r.offset + r.length - 1}: {e} "
                                f"(after {self.ctx.config.max_attempts} tries)") from e

    def _fetch_once(self, source: _Source, fd: int, r: PartRange, etag: str, key: str,
                    hasher: FollowingHasher | None) -> None:
        seen = source.generation
        headers = {"Range": f"bytes={r.offset}-{r.offset + r.length - 1}"}
        written = 0
        inline = hasher.stream(r.offset, r.length) if hasher is not None else None
        complete = False
        try:
            response = self.ctx.s3.get(source.location, headers=headers, stream=True,
                                       timeout=(self.ctx.config.connect_timeout, self.ctx.config.read_timeout))
            with response:
                self._check_status(response, source, seen)
                if response.headers.get("ETag", "") != etag:
                    raise TransferError(f"{key}: the file changed on the server while downloading; "
                                        f"delete {key}.part and its .state file to start again")
                if response.status_code == 200 and r.length != int(response.headers.get("Content-Length", -1)):
                    raise TransferError(f"{key}: S3 ignored the Range header")
                for piece in response.iter_content(READ_SIZE):
                    if self._stopped():
                        raise Interrupted("stopped")
                    piece = piece[: r.length - written]
                    view = memoryview(piece)
                    while view:
                        n = _pwrite(fd, view, r.offset + written)
                        view = view[n:]
                        written += n
                    if inline is not None:
                        inline.update(piece)
                    self.ctx.progress.add(key, len(piece))
                complete = written == r.length
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            self.ctx.progress.add(key, -written)
            raise Retryable(f"{type(e).__name__}: {e}") from e
        except BaseException:
            self.ctx.progress.add(key, -written)
            raise
        finally:
            if inline is not None:
                inline.close(complete)
        if written != r.length:
            self.ctx.progress.add(key, -written)
            raise Retryable(f"short read: {written} of {r.length} bytes")
