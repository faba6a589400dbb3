"""InvenioRDM's files API (invenio-records-resources' multipart transfer, type "M"), in the Uploader's terms.

:class:`RdmApi` speaks ``<record>/draft/files`` as every InvenioRDM (v13+)
serves it, whatever its storage, and answers the :class:`~.api.Api` calls
the :class:`~.transfer.Uploader` makes, so parallel parts, the resume
journal, retries, progress and verification work unchanged:

- start: ``POST files [{"key", "size", "transfer": {"type": "M", "parts", "part_size"}}]``
  (the part size chosen here, within S3's limits); an empty file goes as
  transfer "L" with an empty body (there are no parts to send);
- sign: the file's part links (``GET files/<key>``: ``links.parts``), fetched
  once and again when a URL expired or S3 refused it; each PUT carries the
  part's ``Content-MD5``, which S3 checks (the links sign no digest);
- resume: the parts S3 holds, from ``links.list_parts`` (presigned ListParts,
  oarepo-s3's storage offers it) without asking the server for more; from a
  server without it, the parts the local journal recorded;
- complete: ``POST files/<key>/commit``; abort: ``DELETE files/<key>``.

A file's ``file_id`` (a new one for every init) stands for the upload id.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any, cast

import requests

from .api import Api, file_url
from .errors import ApiError, UsageError
from .models import DraftJson, FileJson, FileLinks, SessionPart, SignedPart, UploadState
from .parts import MAX_PART_SIZE, MIN_PART_SIZE, S3ETAG_PREFIX, MiB
from .verify import SERVER_DEFAULT_PART_SIZE

MAX_PARTS = 10_000
DEFAULT_PART_SIZE = SERVER_DEFAULT_PART_SIZE
"""oarepo-s3's own default, so a re-run that finds the file committed recomputes its checksum at the first try."""
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def choose_part_size(size: int, requested: int | None) -> int:
    """``requested``, or 16 MiB grown in whole MiB until the file fits in 10,000 parts (S3's limits).

    :raises UsageError: the file needs more than 10,000 parts of ``requested`` bytes, or parts over 5 GiB.
    """
    needed = -(-size // MAX_PARTS)
    if requested is not None:
        if requested < needed:
            raise UsageError(f"a part size of {requested} bytes gives more than {MAX_PARTS} parts for "
                             f"{size} bytes; use at least {needed}")
        return requested
    part_size = max(DEFAULT_PART_SIZE, -(-needed // MiB) * MiB)
    if part_size > MAX_PART_SIZE:
        raise UsageError(f"{size} bytes need parts over 5 GiB (S3 allows {MAX_PARTS} parts at most)")
    return max(part_size, MIN_PART_SIZE)


def checksum_of(entry: dict[str, Any]) -> str | None:
    """records-resources' checksum in the Uploader's terms.

    ``multipart:<md5>-<parts>-<part size>`` (set at commit, until its task
    computes the whole file's MD5) becomes ``s3etag:<md5>-<parts>``; ``md5:`` stays.
    """
    checksum = entry.get("checksum")
    if isinstance(checksum, str) and checksum.startswith("multipart:"):
        etag, _, _part_size = checksum.removeprefix("multipart:").rpartition("-")
        return S3ETAG_PREFIX + etag if etag else None
    return checksum if isinstance(checksum, str) else None


def _part_size(entry: dict[str, Any]) -> int:
    """A pending "M" file's part size: as declared at init, else ``ceil(size / parts)`` (records-resources' rule)."""
    transfer = entry.get("transfer") or {}
    return int(transfer.get("part_size") or -(-int(entry["size"]) // int(transfer["parts"])))


class RdmApi(Api):
    """The files API of an InvenioRDM record's draft (``…/records/<id>/draft/files``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._links_lock = threading.Lock()
        self._links: dict[str, tuple[dict[int, tuple[str, float]], set[int]]] = {}
        """file URL -> (part number -> (URL, its expiry on this machine's monotonic clock), numbers handed out)."""
        self._s3 = requests.Session()  # presigned S3 URLs: never the API's token

    def close(self) -> None:
        super().close()
        self._s3.close()

    # --- files ----------------------------------------------------------------------

    def draft(self, draft_url: str) -> DraftJson:
        """The files URL itself (GET it: checks the token and that it is a files API)."""
        answer = self.get_json(draft_url)
        if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
            raise ApiError(0, f"{draft_url} answers no file list: give the draft's files URL "
                              "(…/api/records/<id>/draft/files)", url=draft_url)
        return cast(DraftJson, {"links": {"files": draft_url}})

    def get_file(self, files_url: str, key: str) -> FileJson | None:
        try:
            entry = self.get_json(file_url(files_url, key))
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return self._file(entry)

    def list_files(self, files_url: str) -> list[FileJson]:
        return [self._file(e) for e in self.get_json(files_url)["entries"]]

    def start_upload(
        self, files_url: str, key: str, size: int, part_size: int | None = None, content_type: str | None = None
    ) -> FileJson:
        """Init the file; 409 when the key is taken (as our own API answers, so the Uploader resumes)."""
        if size == 0:
            return self._empty_file(files_url, key)
        part_size = choose_part_size(size, part_size)
        parts = -(-size // part_size)
        body = [{"key": key, "size": size, "transfer": {"type": "M", "parts": parts, "part_size": part_size}}]
        with self._write_lock:
            self._ensure_new(files_url, key)
            try:
                answer = self.request("POST", files_url, json=body, expect=(201,)).json()
            except ApiError as e:
                if e.status != 400:
                    raise
                about_transfer = "transfer" in " ".join([e.message, *(str(f.get("field")) for f in e.errors)])
                hint = (" (an InvenioRDM before v13, or RECORDS_RESOURCES_TRANSFERS without MultipartTransfer?)"
                        if about_transfer else "")
                raise ApiError(400, f"{key!r}: the server refused the multipart (\"M\") upload: {e.message}{hint}",
                               e.errors, url=files_url) from e
        (entry,) = [e for e in answer["entries"] if e.get("key") == key]
        if (entry.get("transfer") or {}).get("type") != "M":
            raise ApiError(400, f"the server did not start a multipart (\"M\") transfer for {key!r}", url=files_url)
        return self._file(entry)

    def _ensure_new(self, files_url: str, key: str) -> None:
        """409 when the key is taken, as our own API answers: the Uploader then resumes or skips the file."""
        if self.get_file(files_url, key) is not None:
            raise ApiError(409, f"{key!r} already exists in the draft", url=files_url)

    def _empty_file(self, files_url: str, key: str) -> FileJson:
        with self._write_lock:
            self._ensure_new(files_url, key)
            self.request("POST", files_url, json=[{"key": key}], expect=(201,))
            url = file_url(files_url, key)
            response = self.session.put(f"{url}/content", data=b"",
                                        headers={"Content-Type": "application/octet-stream"},
                                        timeout=(self.config.connect_timeout, self.config.read_timeout))
            if response.status_code != 200:
                raise ApiError(response.status_code, f"{key!r}: the server refused the empty content", url=url)
            return self._file(self.request("POST", f"{url}/commit").json())

    def abort(self, abort_url: str) -> None:
        """The file's own URL: deleting a pending file aborts its upload."""
        self.delete_file(abort_url)

    def complete(self, complete_url: str, parts: dict[int, str] | None) -> FileJson:
        """``POST files/<key>/commit``: the server checks and completes (it takes no part list)."""
        with self._write_lock:
            return self._file(self.request("POST", complete_url).json())

    # --- parts ------------------------------------------------------------------------

    def upload_state(self, multipart_url: str) -> UploadState:
        """The pending file's plan and the parts S3 holds (from ``links.list_parts`` where offered).

        :raises ApiError: 409 when the file is not pending (committed, or its upload ended).
        """
        entry = self.get_json(multipart_url)
        links = entry.get("links") or {}
        if entry.get("status") != "pending" or not links.get("parts"):
            raise ApiError(409, f"{entry.get('key')!r} has no upload in progress", url=multipart_url)
        transfer = entry.get("transfer") or {}
        state: dict[str, Any] = {
            "upload_id": str(entry.get("file_id")), "size": entry.get("size"),
            "chunk_size": _part_size(entry), "num_chunks": transfer.get("parts"), "parts": [],
        }
        if "list_parts" in links:
            state["parts"] = [p for url in links["list_parts"] for p in self._listed_parts(url)]
        else:
            state["parts_unknown"] = True  # the Uploader trusts its journal for those
        return cast(UploadState, state)

    def _listed_parts(self, url: str) -> list[SessionPart]:
        response = self._s3.get(url, timeout=(self.config.connect_timeout, self.config.read_timeout))
        if response.status_code == 404:
            raise ApiError(409, "S3 no longer holds the upload", url=url.split("?")[0])
        if response.status_code != 200:
            raise ApiError(response.status_code, "S3 refused the ListParts link", url=url.split("?")[0])
        root = ET.fromstring(response.content)
        return [cast(SessionPart, {"PartNumber": int(p.findtext(f"{_S3_NS}PartNumber") or 0),
                                   "ETag": p.findtext(f"{_S3_NS}ETag") or "",
                                   "Size": int(p.findtext(f"{_S3_NS}Size") or -1)})
                for p in root.iter(f"{_S3_NS}Part")]

    def sign(self, sign_url: str, digests: dict[int, str], now: float = 0.0,
             algorithm: str = "md5") -> dict[int, SignedPart]:
        """The parts' presigned URLs from the file's links, with ``Content-MD5`` to send along.

        The links come from one ``GET`` of the file; a part asked for again
        (its URL expired, or S3 refused it) makes the next call fetch them afresh.

        :raises ApiError: ``algorithm`` is not ``md5`` (these links sign no SHA-256), or the file has no links.
        """
        if algorithm != "md5":
            raise ApiError(400, "InvenioRDM's part links sign no payload hash", url=sign_url)
        with self._links_lock:
            cached = self._links.get(sign_url)
            clock = time.monotonic()
            if cached is None or any(n in cached[1] or n not in cached[0] or cached[0][n][1] <= clock
                                     for n in digests):
                cached = (self._part_links(sign_url), set())
                self._links[sign_url] = cached
            links, handed_out = cached
            handed_out.update(digests)
            signed = {}
            for n, digest in digests.items():
                if n not in links:
                    raise ApiError(409, f"the server gives no link for part {n}", url=sign_url)
                url, expires_at = links[n]
                signed[n] = SignedPart(n, url, {"Content-MD5": digest}, now, max(1.0, expires_at - clock))
            return signed

    def _part_links(self, url: str) -> dict[int, tuple[str, float]]:
        entry = self.get_json(url)
        parts = (entry.get("links") or {}).get("parts") or []
        if entry.get("status") != "pending" or not parts:
            raise ApiError(409, f"{entry.get('key')!r} has no upload in progress", url=url)
        clock, wall = time.monotonic(), datetime.now(UTC)
        out = {}
        for p in parts:
            try:
                expires = datetime.fromisoformat(str(p["expiration"]))
                left = (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) - wall
                expires_at = clock + left.total_seconds()
            except (KeyError, ValueError):
                expires_at = clock + 600.0  # no expiry given: fetch again after ten minutes
            out[int(p["part"])] = (str(p["url"]), expires_at)
        return out

    # --- shapes -------------------------------------------------------------------------

    @staticmethod
    def _file(entry: dict[str, Any]) -> FileJson:
        """A records-resources file entry as the Uploader's :class:`~.models.FileJson`."""
        links = entry.get("links") or {}
        transfer = entry.get("transfer") or {}
        pending = entry.get("status") == "pending"
        ours: dict[str, Any] = {
            "key": entry["key"], "size": entry.get("size"), "checksum": checksum_of(entry),
            "status": "pending" if pending else "completed", "mimetype": entry.get("mimetype"),
        }
        file_links: FileLinks = {"self": links.get("self", "")}
        if links.get("content") and not pending:
            file_links["content"] = links["content"]
        if pending and transfer.get("type") == "M":
            file_links["multipart"] = file_links["sign"] = file_links["abort"] = links["self"]
            file_links["complete"] = links.get("commit") or f"{links['self']}/commit"
            ours["multipart_upload"] = {
                "id": str(entry.get("file_id")), "upload_id": str(entry.get("file_id")), "size": entry.get("size"),
                "chunk_size": _part_size(entry), "num_chunks": transfer.get("parts"),
            }
        ours["links"] = file_links
        return cast(FileJson, ours)
