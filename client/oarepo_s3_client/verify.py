"""Is a file the draft already holds the same as the local one? (Re-running an upload skips it.)"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import ClientError
from .models import FileJson, UploadResult
from .parts import S3ETAG_PREFIX, MiB, file_part_md5s, s3etag

SERVER_DEFAULT_PART_SIZE = 16 * MiB


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive integers."""
    return -(-a // b)


def chunk_size_candidates(size: int, parts: int, preferred: int | None = None) -> list[int]:
    """Part sizes that cut ``size`` bytes into exactly ``parts`` parts, likeliest first.

    The stored checksum names the part count, not the part size: try the
    size asked for, the server's default, then the smallest whole MiB that fits.
    """
    if parts == 1:
        return [size]

    def fits(c: int) -> bool:
        return c > 0 and ceil_div(size, c) == parts

    smallest_mib = ceil_div(ceil_div(size, parts), MiB) * MiB
    out: list[int] = []
    for c in (preferred, SERVER_DEFAULT_PART_SIZE, smallest_mib):
        if c and fits(c) and c not in out:
            out.append(c)
    return out


def local_matches(path: Path, size: int, checksum: str, preferred_part_size: int | None = None) -> bool:
    """Recompute the stored checksum from the local file (``s3etag:`` or ``md5:``)."""
    if checksum.startswith(S3ETAG_PREFIX):
        try:
            parts = int(checksum.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return False
        for chunk in chunk_size_candidates(size, parts, preferred_part_size)[:2]:
            if s3etag(file_part_md5s(path, chunk)) == checksum:
                return True
        return False
    if checksum.startswith("md5:"):
        md5 = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as fp:
            for block in iter(lambda: fp.read(8 * MiB), b""):
                md5.update(block)
        return md5.hexdigest() == checksum[4:]
    return False


def verify_completed(
    path: Path, key: str, st: os.stat_result, existing: FileJson, preferred_part_size: int | None
) -> UploadResult:
    """The draft already has ``key``, completed: skip it if it is the same file, else refuse.

    :raises ClientError: the stored file has another size or checksum.
    """
    checksum = existing.get("checksum") or ""
    links = existing.get("links") or {}
    if existing.get("size") == st.st_size and checksum and local_matches(path, st.st_size, checksum,
                                                                         preferred_part_size):
        parts = int(checksum.rsplit("-", 1)[1]) if checksum.startswith(S3ETAG_PREFIX) else 1
        return UploadResult(str(path), key, "skipped", st.st_size, checksum, links.get("self"), links.get("content"),
                            parts=parts)
    raise ClientError(
        f"{key!r} already exists in the draft with other content ({existing.get('size')} bytes, "
        f"{checksum or 'no checksum'}); delete it first or upload under another key"
    )
