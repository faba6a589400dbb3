"""HTTP to S3's presigned URLs: a credential-free session, how parts are sent, S3's error codes."""

from __future__ import annotations

import os
import re
import select
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import requests
import requests.utils
from requests.adapters import HTTPAdapter

from .errors import Interrupted, S3Unreachable
from .localfile import FileReader
from .models import S3Answer
from .sendfile_put import SendfilePut

_S3_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


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


def s3_error_code(response: requests.Response | S3Answer) -> str:
    """S3's error ``<Code>`` (``BadDigest``, ``AccessDenied``...), or ``""``."""
    match = _S3_CODE.search(response.content[:4096] if response.content else b"")
    return match.group(1).decode("ascii", "replace") if match else ""


class RegionBody:
    """A request body reading a file region in 1 MiB slices, reporting progress after each.

    It has a length (requests sends ``Content-Length``, not chunked) and
    yields the reader's slice buffer, which urllib3 passes to ``sendall``
    before asking for the next. A set ``stop`` raises
    :class:`~.errors.Interrupted` between slices (Ctrl-C ends a part within a
    megabyte).

    :param report: called with each slice's size once it is handed to the socket.
    """

    def __init__(self, reader: FileReader, offset: int, length: int, report: Callable[[int], None],
                 stopped: Callable[[], bool]):
        self._reader = reader
        self._offset = offset
        self._length = length
        self._report = report
        self._stopped = stopped

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[memoryview]:
        for piece in self._reader.slices(self._offset, self._length):
            if self._stopped():
                raise Interrupted("stopped")
            yield piece
            self._report(piece.nbytes)


class PartTransport:
    """How a part's bytes travel to its presigned URL: ``os.sendfile`` where it can, else requests.

    ``sendfile`` (:class:`~.sendfile_put.SendfilePut`) needs a plain-``http://``
    URL that no proxy from the environment applies to, a file descriptor,
    and ``zero_copy``; everything else (TLS, proxies, an injected session,
    Windows) goes through ``session`` with a :class:`RegionBody`.
    """

    def __init__(self, session: requests.Session, *, zero_copy: bool, pool_size: int, connect_timeout: float,
                 read_timeout: float):
        self.session = session
        self.timeout = (connect_timeout, read_timeout)
        usable = zero_copy and hasattr(os, "sendfile") and hasattr(select, "poll")
        self._sendfile = SendfilePut(pool_size, connect_timeout, read_timeout) if usable else None
        self._direct: dict[str, bool] = {}
        """scheme://netloc -> may use sendfile (no proxy applies)."""

    def uses_sendfile(self, url: str) -> bool:
        """True when PUTs to ``url`` go by ``os.sendfile``."""
        if self._sendfile is None:
            return False
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        direct = self._direct.get(origin)
        if direct is None:
            direct = self._direct[origin] = parts.scheme == "http" and not (
                self.session.trust_env and requests.utils.get_environ_proxies(origin))
        return direct

    def put(self, url: str, headers: dict[str, str], reader: FileReader, offset: int, length: int,
            report: Callable[[int], None], stopped: Callable[[], bool]) -> S3Answer:
        """PUT bytes ``[offset, offset + length)`` of ``reader``'s file to ``url``.

        :raises S3Unreachable: the connection failed (refused, reset, timed out).
        :raises FileChanged: the file ended early.
        """
        sendfile = self._sendfile
        if sendfile is not None and reader.fileno is not None and self.uses_sendfile(url):
            return sendfile.put(url, headers, reader.fileno, offset, length, report, stopped)
        body = RegionBody(reader, offset, length, report, stopped)
        try:
            # types-requests says Iterable[bytes]; urllib3 hands each memoryview slice to sendall, as intended.
            response = self.session.put(url, data=body, headers=headers, timeout=self.timeout)  # type: ignore[arg-type]
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise S3Unreachable(f"{type(e).__name__}: {e}") from e
        return S3Answer(response.status_code, response.headers, response.content)

    def close(self) -> None:
        """Close the sendfile connections (the session is closed by its owner)."""
        if self._sendfile is not None:
            self._sendfile.close()
