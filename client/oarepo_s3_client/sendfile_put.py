"""PUT a part from the page cache straight into the socket (``os.sendfile``) on plain-HTTP S3 endpoints.

Why: through requests, every byte of a part is copied twice in the client
(file -> buffer, buffer -> socket). ``sendfile`` hands the file's cached
pages to the socket inside the kernel, so the client's only work per byte
is hashing it once. Measured by ``benchmarks/bench_client.py`` on Ceph RGW
(1 GiB, 16 MiB parts, 8 connections, SHA-256): 0.97 client CPU s/GiB, and
1.19 with ``--no-zero-copy``. TLS must encrypt in
user space, so ``https://`` URLs (and proxied ones) go through requests
instead (:class:`~.s3http.PartTransport` decides).

A small pool of keep-alive ``http.client`` connections, one per part in
flight, is shared by the part threads.
"""

from __future__ import annotations

import http.client
import os
import select
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

from .errors import FileChanged, Interrupted, S3Unreachable
from .localfile import SLICE
from .models import S3Answer

Address = tuple[str, int]


def _read_answer(connection: http.client.HTTPConnection) -> S3Answer:
    """S3's answer to the request just sent, read to the end (so the connection may be reused)."""
    response = connection.getresponse()
    return S3Answer(response.status, CaseInsensitiveDict(response.getheaders()), response.read())


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """True when an idle connection was closed by the server (readable means EOF or junk: not reusable)."""
    if connection.sock is None:
        return True
    poller = select.poll()
    poller.register(connection.sock, select.POLLIN)
    return bool(poller.poll(0))


class ConnectionPool:
    """Idle keep-alive connections per ``(host, port)``; at most ``size`` kept per host."""

    def __init__(self, size: int, connect_timeout: float, read_timeout: float):
        self.size = max(1, size)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[Address, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def get(self, address: Address) -> http.client.HTTPConnection:
        """An idle connection that is still open, or a new one."""
        while True:
            with self._lock:
                idle = self._idle.get(address)
                connection = idle.pop() if idle else None
            if connection is None:
                break
            if not _dropped(connection):
                return connection
            connection.close()
        connection = http.client.HTTPConnection(*address, timeout=self.connect_timeout)
        try:
            connection.connect()
        except OSError as e:
            raise S3Unreachable(f"cannot connect to {address[0]}:{address[1]}: {e}") from e
        connection.sock.settimeout(self.read_timeout)
        return connection

    def put_back(self, address: Address, connection: http.client.HTTPConnection) -> None:
        """Keep a connection whose last response was read to the end for the next part."""
        with self._lock:
            idle = self._idle.setdefault(address, [])
            if len(idle) < self.size:
                idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


class SendfilePut:
    """PUTs of file regions to ``http://`` presigned URLs, the body sent by ``os.sendfile``."""

    def __init__(self, pool_size: int, connect_timeout: float, read_timeout: float):
        self.pool = ConnectionPool(pool_size, connect_timeout, read_timeout)
        self.read_timeout = read_timeout

    def put(self, url: str, headers: dict[str, str], fileno: int, offset: int, length: int,
            report: Callable[[int], None], stopped: Callable[[], bool]) -> S3Answer:
        """PUT bytes ``[offset, offset + length)`` of the open file ``fileno`` to ``url``.

        :param report: called with each slice's size once the kernel took it.
        :param stopped: checked between slices; true raises :class:`~.errors.Interrupted`.
        :raises S3Unreachable: connection refused, reset or timed out (a retry may cure it).
        :raises FileChanged: the file ended before ``offset + length``.
        """
        parts = urlsplit(url)
        address = (parts.hostname or "", parts.port or 80)
        connection = self.pool.get(address)
        try:
            connection.putrequest("PUT", f"{parts.path}?{parts.query}" if parts.query else parts.path or "/",
                                  skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", parts.netloc.rpartition("@")[2])  # exactly the signed host
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(length))
            connection.endheaders()
            try:
                self._send_region(connection, fileno, offset, length, report, stopped)
            except (BrokenPipeError, ConnectionResetError) as e:
                # S3 may answer early (a refused signature) and close: its answer says more than the reset.
                answer = self._early_answer(connection)
                if answer is None:
                    raise S3Unreachable(f"{type(e).__name__} while sending: {e}") from e
                return answer
            answer = _read_answer(connection)
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            raise S3Unreachable(f"{type(e).__name__}: {e}") from e
        except BaseException:
            connection.close()  # the request was not finished: the connection cannot be reused
            raise
        if connection.sock is None:  # the answer said "Connection: close" (http.client closed it)
            connection.close()
        else:
            self.pool.put_back(address, connection)
        return answer

    def _send_region(self, connection: http.client.HTTPConnection, fileno: int, offset: int, length: int,
                     report: Callable[[int], None], stopped: Callable[[], bool]) -> None:
        """``os.sendfile`` in :data:`SLICE` steps; the socket has a timeout, so it is non-blocking: wait with poll."""
        out = connection.sock.fileno()
        poller = select.poll()
        poller.register(out, select.POLLOUT)
        wait_ms = int(self.read_timeout * 1000)
        end = offset + length
        while offset < end:
            if stopped():
                raise Interrupted("stopped")
            step_end = min(offset + SLICE, end)
            step_start = offset
            while offset < step_end:
                try:
                    n = os.sendfile(out, fileno, offset, step_end - offset)
                except BlockingIOError:
                    if not poller.poll(wait_ms):
                        raise TimeoutError(f"S3 took no bytes for {self.read_timeout:g} s") from None
                    continue
                if n == 0:
                    raise FileChanged(f"the file ended at byte {offset}, expected {end}")
                offset += n
            report(offset - step_start)

    @staticmethod
    def _early_answer(connection: http.client.HTTPConnection) -> S3Answer | None:
        try:
            answer = _read_answer(connection)
        except (OSError, http.client.HTTPException):
            answer = None
        connection.close()
        return answer

    def close(self) -> None:
        """Close the pooled connections."""
        self.pool.close()
