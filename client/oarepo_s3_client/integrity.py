"""What a downloaded file must hash to, and hashing it while its ranges arrive.

The server's checksum says what the bytes must be: ``s3etag:<md5>-<N>``
(our API, with the file's ``part_size``), records-resources'
``multipart:<md5>-<N>-<part size>`` (until its task replaces it with the
whole file's MD5) or ``md5:<hex>``; without one, S3's own ETag (an MD5, or
an MD5 of part MD5s). An S3 ETag of parts is checked part by part, a plain
MD5 over the whole file: each is a *segment* hashed in order. Where the part
size is a guess (an S3 ETag alone), a mismatch is no proof: the other part
sizes that fit are tried, and if none gives the ETag the file is reported
unverified rather than refused.

Ranges arrive in any order and from several threads. A range that starts
at its segment's cursor is hashed from the bytes as they arrive
(:meth:`FollowingHasher.stream`: the usual case, download ranges as long
as the upload's parts); otherwise :class:`FollowingHasher` hashes each
segment forward from its cursor through whatever is already written,
reading it back from the file (still in the page cache), in the thread that
wrote the last range. Segments are hashed in parallel, and the hashing
overlaps the transfer instead of following it.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .parts import S3ETAG_PREFIX, MiB, file_part_md5s, s3etag
from .verify import chunk_size_candidates

READ_BLOCK = 4 * MiB
_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Expected:
    """The checksum the downloaded bytes must have, and how to cut the file to compute it."""

    checksum: str
    """``s3etag:<md5>-<N>`` or ``md5:<hex>``."""
    segment_size: int
    """Bytes per hashed segment: the upload's part size, or the whole file for ``md5:``."""
    source: str
    """Where the checksum came from (for messages): ``the API`` or ``S3's ETag``."""
    guessed: bool = False
    """``segment_size`` is a guess (nothing named the part size): a mismatch proves nothing."""
    other_segment_sizes: tuple[int, ...] = ()
    """The other part sizes that fit, tried before a guess is given up."""

    def matches_otherwise(self, path: str | os.PathLike[str]) -> bool:
        """Does the file give the checksum when cut in one of the other fitting part sizes? (Hashes it again.)"""
        return any(s3etag(file_part_md5s(path, size)) == self.checksum for size in self.other_segment_sizes)


def expected_checksum(info: dict[str, Any] | None, size: int, s3_etag: str) -> Expected | None:
    """What the ``size`` bytes of a file must hash to, from its API JSON (``info``) or else its S3 ETag.

    ``None`` when neither tells (no checksum, or an ETag that is no MD5,
    e.g. of an object encrypted with a customer key).
    """
    checksum = (info or {}).get("checksum")
    part_size = (info or {}).get("part_size")
    if isinstance(checksum, str) and checksum.startswith("multipart:"):
        etag, _, part = checksum.removeprefix("multipart:").rpartition("-")
        checksum, part_size = S3ETAG_PREFIX + etag, int(part) if part.isdigit() else None
    if isinstance(checksum, str):
        found = _from_checksum(checksum, size, part_size if isinstance(part_size, int) else None, "the API")
        if found is not None:
            return found
    etag = s3_etag.strip().strip('"').lower()
    if _MD5.fullmatch(etag):
        return Expected(f"md5:{etag}", max(size, 1), "S3's ETag")
    return _from_checksum(S3ETAG_PREFIX + etag, size, None, "S3's ETag")


def _from_checksum(checksum: str, size: int, part_size: int | None, source: str) -> Expected | None:
    if checksum.startswith("md5:") and _MD5.fullmatch(checksum[4:]):
        return Expected(checksum, max(size, 1), source)
    if not checksum.startswith(S3ETAG_PREFIX):
        return None
    digest, _, count = checksum.removeprefix(S3ETAG_PREFIX).partition("-")
    if not _MD5.fullmatch(digest) or not count.isdigit() or int(count) < 1 or size < 1:
        return None
    candidates = chunk_size_candidates(size, int(count), part_size)
    if not candidates:
        return None
    if candidates[0] == part_size or int(count) == 1:
        return Expected(checksum, candidates[0], source)
    return Expected(checksum, candidates[0], source, guessed=True, other_segment_sizes=tuple(candidates[1:]))


class FollowingHasher:
    """Hashes a file's segments in order while ranges of it are written in any order, by several threads."""

    def __init__(self, fd: int, size: int, expected: Expected):
        self.fd, self.size, self.expected = fd, size, expected
        bounds = range(0, size, expected.segment_size)
        self._segments = [_Segment(start, min(start + expected.segment_size, size)) for start in bounds]
        self._written: list[tuple[int, int]] = []  # merged [start, end) intervals on disk
        self._lock = threading.Lock()

    def written(self, offset: int, length: int) -> None:
        """``length`` bytes at ``offset`` are on disk: hash every segment they touch as far as it now can."""
        with self._lock:
            self._written = _merge(self._written, (offset, offset + length))
        for segment in self._segments:
            if segment.start < offset + length and offset < segment.end:
                segment.advance(self.fd, self._intervals)

    def stream(self, offset: int, length: int) -> InlineHash | None:
        """Hash the range ``[offset, offset + length)`` from the bytes as they arrive, not read back.

        Possible when the range starts at its segment's cursor and ends within
        it (the usual case: download ranges as long as the upload's parts);
        else ``None``, and :meth:`written` reads the range back later. The
        segment is held until :meth:`InlineHash.close`.
        """
        segment = next((s for s in self._segments if s.start <= offset < s.end), None)
        if segment is None or offset + length > segment.end or segment.cursor != offset:
            return None
        if not segment.lock.acquire(blocking=False):
            return None
        if segment.cursor != offset:  # moved before we held it
            segment.lock.release()
            return None
        return InlineHash(segment, offset, length)

    def checksum(self) -> str | None:
        """The file's checksum in the expected form; ``None`` while some byte is not hashed yet."""
        if not all(s.cursor == s.end for s in self._segments):
            return None
        if self.expected.checksum.startswith("md5:"):
            return "md5:" + self._segments[0].md5.hexdigest()
        return s3etag([s.md5.digest() for s in self._segments])

    def _intervals(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._written)


class InlineHash:
    """One range hashed as it arrives (see :meth:`FollowingHasher.stream`); its segment is held till ``close``."""

    def __init__(self, segment: _Segment, offset: int, length: int):
        self._segment, self._offset, self._length = segment, offset, length
        self._saved = segment.md5.copy()  # to undo a range that fails half way (it is fetched again)

    def update(self, piece: bytes | memoryview) -> None:
        self._segment.md5.update(piece)
        self._segment.cursor += len(piece)

    def close(self, complete: bool) -> None:
        """Let the segment go; unless the range is ``complete`` (every byte written and hashed), undo it.

        An incomplete range will be fetched again. The caller then reports a complete range
        :meth:`FollowingHasher.written`, which hashes on through any range of the segment that
        arrived meanwhile.
        """
        segment = self._segment
        if not complete or segment.cursor != self._offset + self._length:
            segment.md5, segment.cursor = self._saved, self._offset
        segment.lock.release()


class _Segment:
    """``[start, end)`` of the file, hashed up to ``cursor``; one thread at a time moves it forward."""

    def __init__(self, start: int, end: int):
        self.start = self.cursor = start
        self.end = end
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.lock = threading.Lock()
        self._more = False

    def advance(self, fd: int, intervals: Callable[[], list[tuple[int, int]]]) -> None:
        """Hash from the cursor through the written bytes that follow it.

        A thread that finds another one hashing leaves it a note (``_more``)
        and returns; the hashing thread reads the written intervals again
        before it lets go, so no written byte waits for a later write.
        """
        self._more = True
        while self._more:
            if not self.lock.acquire(blocking=False):
                return
            try:
                self._more = False
                self._hash_written(fd, intervals())
            finally:
                self.lock.release()

    def _hash_written(self, fd: int, intervals: list[tuple[int, int]]) -> None:
        reach = next((end for start, end in intervals if start <= self.cursor < end), None)
        stop = min(reach or self.cursor, self.end)
        while self.cursor < stop:
            block = os.pread(fd, min(READ_BLOCK, stop - self.cursor), self.cursor)
            if not block:
                raise OSError(f"short read at byte {self.cursor} of the downloaded file")
            self.md5.update(block)
            self.cursor += len(block)


def _merge(intervals: list[tuple[int, int]], new: tuple[int, int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start, end = new
    for a, b in sorted([*intervals, (start, end)]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
