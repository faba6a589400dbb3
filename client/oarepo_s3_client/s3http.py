"""Plain HTTP to S3's presigned URLs: a credential-free session, streamed bodies, S3 errors."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import requests
from requests.adapters import HTTPAdapter

from .errors import Interrupted

_S3_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
BODY_SLICE = 1024 * 1024
"""Bytes handed to ``sendall`` at once: progress granularity, and few system calls per part."""


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def new_s3_session(pool_size: int) -> requests.Session:
    """A session for presigned S3 URLs: keeps ``pool_size`` connections alive, sends no credentials.

    ``auth`` is a no-op so that requests never looks up ``~/.netrc`` for the
    S3 host (proxies from the environment still apply); the API's bearer
    token lives in another session and never reaches S3.
    """
    session = requests.Session()
    session.auth = _no_auth
    session.headers.pop("Accept-Encoding", None)  # S3 objects are sent as stored
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def s3_error_code(response: requests.Response) -> str:
    """S3's error ``<Code>`` (``BadDigest``, ``AccessDenied``...), or ``""``."""
    match = _S3_CODE.search(response.content[:4096] if response.content else b"")
    return match.group(1).decode("ascii", "replace") if match else ""


def looks_expired(response: requests.Response) -> bool:
    """A 403 that a fresh signature may cure (expired URL, clock skew, or an unknown refusal)."""
    return response.status_code == 403


class PartBody:
    """A request body sending a memoryview in 1 MiB slices, reporting progress after each.

    It has a length (requests sends ``Content-Length``, not chunked) and
    yields zero-copy slices that urllib3 passes straight to ``sendall``. A
    set ``stop`` event raises :class:`~.errors.Interrupted` between slices
    (Ctrl-C ends a part within a megabyte).

    :param report: called with each slice's size once it is handed to the socket.
    """

    def __init__(self, view: memoryview, report: Callable[[int], None], stopped: Callable[[], bool]):
        self._view = view
        self._report = report
        self._stopped = stopped
        self.sent = 0

    def __len__(self) -> int:
        return self._view.nbytes

    def __iter__(self):
        view, size = self._view, self._view.nbytes
        for offset in range(0, size, BODY_SLICE):
            if self._stopped():
                raise Interrupted("stopped")
            piece = view[offset : offset + BODY_SLICE]
            yield piece
            self.sent += len(piece)
            self._report(len(piece))


class FileReader:
    """Positional reads of a local file that many threads share (``preadv`` on POSIX)."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0)) if hasattr(os, "preadv") else None

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the file's bytes at ``offset``.

        :raises EOFError: the file is shorter than expected (it changed).
        """
        if self._fd is None:  # Windows: no positional reads, one handle per read
            with open(self.path, "rb", buffering=0) as fp:
                fp.seek(offset)
                n = fp.readinto(view)
            if n != view.nbytes:
                raise EOFError(f"the file ended at byte {offset + (n or 0)}, expected {offset + view.nbytes}")
            return
        done, size = 0, view.nbytes
        while done < size:
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n == 0:
                raise EOFError(f"the file ended at byte {offset + done}, expected {offset + size}")
            done += n

    def close(self) -> None:
        """Close the descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
