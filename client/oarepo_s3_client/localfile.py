"""Reading the local file's parts from many threads: positional reads in small slices, hashing."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from typing import NoReturn, Protocol

from .errors import FileChanged

SLICE = 1024 * 1024
"""Bytes read (or handed to the socket) at once: fits the CPU cache, and is the progress granularity."""

_thread = threading.local()


def _slice_buffer() -> memoryview:
    """This thread's slice buffer (each thread reads one slice at a time, so one buffer per thread suffices)."""
    buffer = getattr(_thread, "buffer", None)
    if buffer is None:
        buffer = _thread.buffer = memoryview(bytearray(SLICE))
    return buffer


class Hasher(Protocol):
    """What :func:`new_hash` returns (a ``hashlib`` hash object)."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


def new_hash(algorithm: str) -> Hasher:
    """A hash object for ``md5`` (not for security: S3's Content-MD5) or ``sha256``."""
    if algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algorithm)


class FileReader:
    """Positional reads of a local file that many threads share (``preadv`` on POSIX).

    Parts are read in :data:`SLICE` pieces into a per-thread buffer, never
    whole: memory stays ``threads x 1 MiB`` whatever the part size, and a
    slice is still in the CPU cache when it is hashed or sent. A file that
    got shorter raises :class:`~.errors.FileChanged`.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = path
        self.fileno: int | None = (
            os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0)) if hasattr(os, "preadv") else None
        )
        """The descriptor (``None`` where there are no positional reads: Windows)."""

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the file's bytes at ``offset``."""
        if self.fileno is None:  # Windows: no positional reads, one handle per read
            with open(self.path, "rb", buffering=0) as fp:
                fp.seek(offset)
                n = fp.readinto(view) or 0
            if n != view.nbytes:
                self._ended(offset + n, offset + view.nbytes)
            return
        done, size = 0, view.nbytes
        while done < size:
            n = os.preadv(self.fileno, [view[done:]], offset + done)
            if n == 0:
                self._ended(offset + done, offset + size)
            done += n

    def slices(self, offset: int, length: int) -> Iterator[memoryview]:
        """The bytes ``[offset, offset + length)`` in :data:`SLICE` pieces.

        Each piece lives in this thread's buffer and is valid until the next
        one is read: consume it (hash it, send it) before asking for more.
        """
        buffer = _slice_buffer()
        end = offset + length
        while offset < end:
            view = buffer[: min(SLICE, end - offset)]
            self.read_into(view, offset)
            yield view
            offset += view.nbytes

    def digests(self, offset: int, length: int, algorithms: tuple[str, ...]) -> tuple[bytes, ...]:
        """The binary digests (one per algorithm) of bytes ``[offset, offset + length)``, read once."""
        hashes = [new_hash(a) for a in algorithms]
        for piece in self.slices(offset, length):
            for h in hashes:
                h.update(piece)
        return tuple(h.digest() for h in hashes)

    def digest(self, offset: int, length: int, algorithm: str) -> bytes:
        """The binary ``algorithm`` digest of bytes ``[offset, offset + length)``."""
        return self.digests(offset, length, (algorithm,))[0]

    def _ended(self, at: int, expected: int) -> NoReturn:
        raise FileChanged(f"{self.path}: the file ended at byte {at}, expected {expected}; it changed while being "
                          f"uploaded; run again to upload the new content")

    def close(self) -> None:
        """Close the descriptor."""
        if self.fileno is not None:
            os.close(self.fileno)
            self.fileno = None
