"""The oarepo-s3 REST API: drafts, files, upload sessions (never S3 itself).

Every call carries ``Authorization: Bearer <token>``; errors become
:class:`~.errors.ApiError` (401/403: :class:`~.errors.AuthError`). 429, 502,
503 and 504 and connection failures are retried with backoff, honouring
``Retry-After`` (the server answers 503 when S3 is unavailable).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from . import __version__
from .errors import ApiError, AuthError
from .models import (
    DraftJson,
    FileJson,
    FileListJson,
    SignedPart,
    SignJson,
    TransferConfig,
    UploadState,
)
from .retry import Retryable, parse_retry_after, retrying

RETRYABLE_STATUSES = frozenset((429, 502, 503, 504))
USER_AGENT = f"oarepo-s3-client/{__version__}"


def new_api_session(token: str | None, pool_size: int = 10) -> requests.Session:
    """An HTTP session for the API: the bearer token, a connection pool, no retries of its own."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "application/json"
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def api_error(response: requests.Response) -> ApiError:
    """The API's JSON error (``{status, message, errors}``) as an exception."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or response.reason or "error")
    errors = body.get("errors") if isinstance(body.get("errors"), list) else []
    cls = AuthError if response.status_code in (401, 403) else ApiError
    return cls(response.status_code, message, errors, url=response.url)


def file_url(files_url: str, key: str) -> str:
    """``<draft>/files/<key>`` with the key percent-encoded (its ``/`` kept)."""
    return files_url.rstrip("/") + "/" + quote(key, safe="/")


class Api:
    """Calls to the draft-records API.

    :param token: personal access token (``None`` for public records).
    :param session: an HTTP session to use instead of a new one (tests inject counting sessions).
    :param sleep: how to wait between retries.
    """

    def __init__(
        self,
        token: str | None,
        *,
        config: TransferConfig | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config or TransferConfig()
        self.session = session if session is not None else new_api_session(token, pool_size=self.config.concurrency + 2)
        self._sleep = sleep
        # Calls that write to the draft (start, complete, abort, delete) go one at a time: the
        # server serializes them anyway (they update the draft's bucket row), and a SQLite-backed
        # server (the demo) refuses concurrent writers with "database is locked".
        self._write_lock = threading.Lock()
        self._origin: str | None = None
        """``scheme://host`` of the API, from the first absolute URL called (the one the user gave)."""

    def close(self) -> None:
        """Close the connection pool."""
        self.session.close()

    # --- plumbing ---------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        json: object = None,
        expect: Iterable[int] = (200,),
        allow_redirects: bool = True,
    ) -> requests.Response:
        """One API call, retried on connection errors and 429/502/503/504.

        :returns: the response, whose status is one of ``expect``.
        :raises ApiError: any other status, or the last transient error once the tries run out.
        """
        expected = set(expect)
        timeout = (self.config.connect_timeout, self.config.read_timeout)
        url = self.absolute(url)
        try:
            for attempt in retrying(self.config, self._sleep):
                with attempt:
                    try:
                        response = self.session.request(
                            method, url, json=json, timeout=timeout, allow_redirects=allow_redirects
                        )
                    except (requests.ConnectionError, requests.Timeout) as e:
                        raise Retryable(str(e), final=ApiError(0, f"cannot reach the API: {e}", url=url)) from e
                    if response.status_code in expected:
                        return response
                    if response.status_code in RETRYABLE_STATUSES:
                        raise Retryable(
                            f"{response.status_code} from the API",
                            retry_after=parse_retry_after(response.headers.get("Retry-After")),
                            final=api_error(response),
                        )
                    raise api_error(response)
        except Retryable as e:
            raise (e.final or ApiError(0, str(e), url=url)) from e
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def absolute(self, url: str) -> str:
        """``url`` as it is, or a path as a URL on the API's host.

        An API without a configured host (``SERVER_NAME``, ``TRUSTED_HOSTS``)
        answers its links as paths, not trusting the ``Host`` header.

        :raises ApiError: a path before any absolute URL was called.
        """
        parts = urlsplit(url)
        if parts.scheme and parts.netloc:
            self._origin = f"{parts.scheme}://{parts.netloc}"
            return url
        if self._origin is None:
            raise ApiError(0, f"a link without a host before any API URL was called: {url}", url=url)
        return urljoin(self._origin + "/", url)

    def get_json(self, url: str) -> Any:
        """``GET url`` -> its JSON (any JSON: the methods below name the shape they expect)."""
        return self.request("GET", url).json()

    # --- drafts and files ---------------------------------------------------------

    def draft(self, draft_url: str) -> DraftJson:
        """The draft record (checks the token early: 401/403 raise :class:`AuthError`)."""
        return cast(DraftJson, self.get_json(draft_url.rstrip("/")))

    def get_file(self, files_url: str, key: str) -> FileJson | None:
        """The file ``key`` of a draft, or ``None`` when there is none."""
        try:
            return cast(FileJson, self.get_json(file_url(files_url, key)))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list_files(self, files_url: str) -> list[FileJson]:
        """Every file of the draft (pending and completed)."""
        return cast(FileListJson, self.get_json(files_url))["entries"]

    def delete_file(self, url: str) -> None:
        """``DELETE`` a file (aborts its upload when pending); a missing file is fine."""
        with self._write_lock:
            self.request("DELETE", url, expect=(204, 404))

    # --- uploads ------------------------------------------------------------------

    def start_upload(
        self, files_url: str, key: str, size: int, part_size: int | None = None, content_type: str | None = None
    ) -> FileJson:
        """``POST <draft>/files/?multipart=True``: the pending file with its ``multipart_upload`` session."""
        body: dict[str, str | int] = {"key": key, "size": size}
        if part_size:
            body["part_size"] = part_size
        if content_type:
            body["multipart_content_type"] = content_type
        url = files_url if files_url.endswith("/") else files_url + "/"
        with self._write_lock:
            return cast(FileJson, self.request("POST", f"{url}?multipart=True", json=body, expect=(201,)).json())

    def upload_state(self, multipart_url: str) -> UploadState:
        """``GET links.multipart``: the session plus ``parts`` S3 holds (``PartNumber``, ``ETag``, ``Size``)."""
        return cast(UploadState, self.get_json(multipart_url))

    def sign(self, sign_url: str, digests: dict[int, str], now: float = 0.0,
             algorithm: str = "md5") -> dict[int, SignedPart]:
        """Fresh part URLs with each part's digest signed in (S3 refuses other bytes).

        :param digests: by part number: base64 MD5 (``Content-MD5``), or hex
            SHA-256 (``x-amz-content-sha256``) when ``algorithm`` is ``"sha256"``.
        :param now: the caller's clock reading, stored as ``signed_at``.
        """
        numbers = sorted(digests)
        field = "content_sha256" if algorithm == "sha256" else "content_md5"
        body = {"parts": numbers, field: {str(n): digests[n] for n in numbers}}
        answer = cast(SignJson, self.request("POST", sign_url, json=body).json())
        expires_in = float(answer.get("expires_in") or 0)
        signed = [SignedPart(int(p["PartNumber"]), p["url"], dict(p.get("headers") or {}), now, expires_in)
                  for p in answer["parts"]]
        return {s.number: s for s in signed}

    def complete(self, complete_url: str, parts: dict[int, str] | None) -> FileJson:
        """Complete the upload with ``{number: etag}`` (``None``: let the server take S3's list); idempotent."""
        body = {} if parts is None else {"parts": [{"PartNumber": n, "ETag": parts[n]} for n in sorted(parts)]}
        with self._write_lock:
            return cast(FileJson, self.request("POST", complete_url, json=body).json())

    def abort(self, abort_url: str) -> None:
        """Abort the upload (already gone is fine)."""
        with self._write_lock:
            self.request("POST", abort_url, expect=(204, 404))

    # --- downloads ------------------------------------------------------------------

    def resolve_download(self, url: str) -> tuple[str, FileJson | None]:
        """The presigned S3 URL behind a file's ``content`` link (or its ``self`` link).

        :returns: ``(s3_url, file_json)``; ``file_json`` is known when ``url`` was the file's own URL.
        """
        response = self.request("GET", url, expect=(200, 301, 302, 303, 307, 308), allow_redirects=False)
        if response.is_redirect:
            return response.headers["Location"], None
        info = cast(FileJson, response.json())
        content = (info.get("links") or {}).get("content")
        if not content:
            raise ApiError(409, f"{info.get('key', url)!r} has no content link (still being uploaded?)", url=url)
        location, _ = self.resolve_download(content)
        return location, info
