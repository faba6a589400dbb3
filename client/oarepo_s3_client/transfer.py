"""Uploads: start or resume a multipart upload, send parts in parallel to S3, complete, verify.

One file goes through :meth:`Uploader.upload`: ``_prepare`` (start, or
resume from the server's part list and the local journal), ``_transfer``
(parts through a bounded thread pool straight to S3), ``_complete`` and
``_verify``. Memory: parts are read in 1 MiB slices, about 1 MiB per thread.
"""

from __future__ import annotations

import mimetypes
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Executor, ThreadPoolExecutor, wait
from pathlib import Path
from typing import cast

import requests

from .api import Api
from .context import TransferContext
from .errors import (
    ApiError,
    AuthError,
    ClientError,
    FileChanged,
    IntegrityError,
    Interrupted,
    TransferError,
    UsageError,
)
from .localfile import FileReader
from .models import DownloadResult, FileJson, FileLinks, TransferConfig, UploadResult, UploadSession, UploadState
from .parts import PartRange, etag_is_md5, md5_from_base64, normalize_etag, part_ranges, s3etag, sha256_is_cheaper
from .progress import AggregatedProgress, ProgressSubscriber
from .rdm import RdmApi
from .s3http import PartTransport, new_s3_session
from .sender import FileUpload, PartSender
from .state import Journal, StateStore, UploadEntry, UploadHeader
from .verify import local_matches, verify_completed

PROTOCOLS: dict[str, type[Api]] = {"oarepo": Api, "rdm": RdmApi}
"""The servers an Uploader speaks to: oarepo-s3's draft-records API, or InvenioRDM's files API."""

EMPTY_CHECKSUM = "md5:d41d8cd98f00b204e9800998ecf8427e"
"""What the server stores as the checksum of an empty file (no upload: it writes the object itself)."""


class Uploader:
    """Upload files into a draft record (and download files back).

    :param draft_url: the draft's API URL, ``https://host/draft/records/<pid>`` (``None`` to only download);
        with ``protocol="rdm"``, an InvenioRDM draft's files URL, ``https://host/api/records/<id>/draft/files``.
    :param protocol: ``"oarepo"`` (oarepo-s3's draft-records API) or ``"rdm"``
        (invenio-records-resources' files API with its multipart transfer, :mod:`.rdm`).
    :param token: personal access token (``Authorization: Bearer``).
    :param concurrency: parts in flight at once.
    :param part_size: bytes per part (``None``: the server's choice, 16 MiB).
        Memory does not grow with it: parts are read in 1 MiB slices.
    :param state_dir: where resume journals live (default ``~/.local/state/oarepo-s3``).
    :param subscribers: progress subscribers (``on_progress(bytes_transferred, **kwargs)``).
    :param abort_on_failure: abort a started upload when its file fails
        (default: keep it, so that running again resumes it).
    :param config: every other setting (:class:`TransferConfig`); overrides ``concurrency``/``part_size``.
    :param api_session / s3_session / executor / clock / sleep: injected
        collaborators (HTTP sessions, the part thread pool, a monotonic
        clock, the retry wait).
    """

    def __init__(
        self,
        draft_url: str | None,
        token: str | None = None,
        *,
        concurrency: int = 8,
        part_size: int | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        subscribers: Iterable[ProgressSubscriber] = (),
        abort_on_failure: bool = False,
        config: TransferConfig | None = None,
        api_session: requests.Session | None = None,
        s3_session: requests.Session | None = None,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        protocol: str = "oarepo",
    ):
        if protocol not in PROTOCOLS:
            raise UsageError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        self.config = config or TransferConfig(concurrency=concurrency, part_size=part_size)
        self.draft_url = (draft_url or "").rstrip("/")
        self.abort_on_failure = abort_on_failure
        self._cancelled = threading.Event()
        self._clock = clock
        self._sleep = sleep or self._interruptible_sleep
        self.api = PROTOCOLS[protocol](token, config=self.config, session=api_session, sleep=self._sleep)
        self.s3 = s3_session if s3_session is not None else new_s3_session(self.config.concurrency)
        self.transport = PartTransport(self.s3, zero_copy=self.config.zero_copy and s3_session is None,
                                       pool_size=self.config.concurrency, connect_timeout=self.config.connect_timeout,
                                       read_timeout=self.config.read_timeout)
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="oarepo-s3-part")
        self.state = StateStore(state_dir)
        self.subscribers = list(subscribers)
        self.progress = AggregatedProgress(self.subscribers, self.config.progress_threshold)
        self.context = TransferContext(self.api, self.s3, self.transport, self.executor, self.config, self.progress,
                                       clock, self._sleep, self._cancelled)
        self.sender = PartSender(self.context)
        self._files_url: str | None = None
        self._sha256_verified: bool | None = None
        """Whether S3 refused the SHA-256 probe (decided once per Uploader, under ``_probe_lock``)."""
        self._probe_lock = threading.Lock()

    # --- life cycle ----------------------------------------------------------------

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads and close the connection pools."""
        if self._own_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.api.close()
        self.transport.close()
        self.s3.close()

    def cancel(self) -> None:
        """Stop every transfer soon (within a megabyte per part); they raise :class:`Interrupted`."""
        self._cancelled.set()

    def _interruptible_sleep(self, seconds: float) -> None:
        if self._cancelled.wait(seconds):
            raise Interrupted("cancelled while waiting to retry")

    @property
    def files_url(self) -> str:
        """The draft's files URL (``links.files``; fetching the draft also checks the token)."""
        if not self.draft_url:
            raise UsageError("no draft URL: this Uploader can only download")
        if self._files_url is None:
            draft = self.api.draft(self.draft_url)
            self._files_url = (draft.get("links") or {}).get("files") or f"{self.draft_url}/files/"
        return self._files_url

    # --- public API ----------------------------------------------------------------

    def upload(self, path: str | os.PathLike[str], key: str | None = None) -> UploadResult:
        """Upload one file (resuming an earlier, interrupted upload of the same key).

        :param key: the file's key in the draft (default: the file name).
        :returns: the result; ``status`` is ``completed`` or ``skipped`` (already there, same checksum).
        :raises UsageError: not a regular file.
        :raises AuthError: the token may not upload into the draft.
        :raises IntegrityError: the stored file differs from the local one.
        :raises Interrupted: :meth:`cancel` or Ctrl-C; run again to resume.
        :raises ClientError: any other failure after all retries (``TransferError``, ``ApiError``...).
        """
        path = Path(path)
        try:
            st = path.stat()
        except OSError as e:
            raise UsageError(f"{path}: {e.strerror or e}") from e
        if not path.is_file():
            raise UsageError(f"{path}: not a regular file")
        key = key or path.name
        started = self._clock()
        try:
            upload = self._prepare(path, key, st)
        except KeyboardInterrupt as e:
            raise Interrupted("interrupted") from e
        if isinstance(upload, UploadResult):
            upload.seconds = round(self._clock() - started, 3)
            return upload
        try:
            self._transfer(upload)
            self._check_unchanged(upload)
            answer = self._complete(upload)
            result = self._verify(upload, answer)
        except BaseException as e:
            upload.stop.set()
            if self.abort_on_failure and "abort" in upload.links:
                self._abort_quietly(upload)
            if isinstance(e, KeyboardInterrupt):
                raise Interrupted("interrupted; run again to resume") from e
            raise
        finally:
            upload.reader.close()
        upload.journal.remove()
        result.seconds = round(self._clock() - started, 3)
        return result

    def upload_many(
        self,
        items: Iterable[str | os.PathLike[str] | tuple[str | os.PathLike[str], str]],
        on_result: Callable[[UploadResult], None] | None = None,
    ) -> list[UploadResult]:
        """Upload files and directories (recursively, keys relative to each directory, ``/``).

        Several files go at once; their parts share the pool (``concurrency``).
        Failures of single files are reported in their results (``status``
        ``failed``) and the others go on; an :class:`AuthError` or an
        interruption stops the run (raised).

        :param items: paths, or ``(path, key)`` pairs for files.
        :param on_result: called with each file's result as soon as it is known (from worker threads).
        """
        entries = expand_paths(items)
        if not entries:
            return []
        results: dict[int, UploadResult] = {}
        workers = min(self.config.concurrency, len(entries))
        with ThreadPoolExecutor(workers, thread_name_prefix="oarepo-s3-file") as files:
            futures = {files.submit(self._upload_one, p, k, on_result): i for i, (p, k) in enumerate(entries)}
            try:
                pending = set(futures)
                while pending:  # an AuthError or Ctrl-C in any file stops the run at once
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in finished:
                        results[futures[future]] = future.result()
            except BaseException:
                self.cancel()
                raise
        return [results[i] for i in range(len(entries))]

    def download(self, url: str, dest: str | os.PathLike[str], concurrency: int | None = None,
                 verify: bool = True) -> DownloadResult:
        """Download a file (its ``content`` or ``self`` URL) to ``dest`` with parallel ranged GETs; resumable.

        ``verify``: the bytes must hash to the file's checksum (the API's, else S3's ETag).
        """
        from .download import Downloader

        return Downloader(self.context).download(url, dest, concurrency, verify=verify)

    def _upload_one(self, path: Path, key: str, on_result: Callable[[UploadResult], None] | None) -> UploadResult:
        try:
            result = self.upload(path, key)
        except (AuthError, Interrupted):
            raise
        except ClientError as e:
            result = self._failed(path, key, e)
        except Exception as e:  # a bug or an unexpected library error: report it, go on with the others
            result = self._failed(path, key, TransferError(f"{type(e).__name__}: {e}"))
        if on_result is not None:
            on_result(result)
        return result

    @staticmethod
    def _failed(path: Path, key: str, error: ClientError) -> UploadResult:
        size = path.stat().st_size if path.exists() else 0
        return UploadResult(str(path), key, "failed", size, error=str(error), exit_code=error.exit_code)

    # --- prepare: start, or resume ---------------------------------------------------

    def _prepare(self, path: Path, key: str, st: os.stat_result) -> FileUpload | UploadResult:
        journal = self.state.load_upload(self.draft_url, key)
        if journal is not None:
            links = journal.header.get("links", {})
            session = self._session_or_none(links.get("multipart"))
            if session is not None and session.get("upload_id") == journal.header.get("upload_id"):
                if session.get("size") == st.st_size:
                    return self._resume(path, key, st, session, links, journal)
                self.api.abort(links["abort"])  # the file's size changed: its parts are of no use
            journal.remove()
        for _ in range(2):
            try:
                created = self.api.start_upload(
                    self.files_url, key, st.st_size, self.config.part_size, mimetypes.guess_type(path.name)[0]
                )
            except ApiError as e:
                if e.status != 409:
                    raise
                existing = self.api.get_file(self.files_url, key)
                if existing is None:
                    continue  # deleted in between: start again
                if existing.get("status") == "completed":
                    return verify_completed(path, key, st, existing, self.config.part_size)
                session = self._session_or_none(existing["links"].get("multipart"))
                if session is None:  # expired or aborted but not cleaned up yet: free the key
                    self.api.delete_file(existing["links"]["self"])
                    continue
                if session.get("size") != st.st_size:  # a pending upload of another file: replace it
                    self.api.abort(existing["links"]["abort"])
                    continue
                return self._resume(path, key, st, session, existing["links"], None)
            if created.get("status") == "completed":  # an empty file: created complete, nothing to send
                return self._created_empty(path, key, st, created)
            return self._new_file(path, key, st, created["multipart_upload"], created["links"], resumed=False)
        raise ClientError(f"{key!r}: could not start an upload (the key keeps changing on the server)")

    @staticmethod
    def _created_empty(path: Path, key: str, st: os.stat_result, created: FileJson) -> UploadResult:
        if created.get("size") != 0 or created.get("checksum") != EMPTY_CHECKSUM:
            raise IntegrityError(f"{key!r}: the server stored {created.get('size')} bytes "
                                 f"({created.get('checksum')}) for an empty file")
        links = created.get("links") or {}
        return UploadResult(str(path), key, "completed", 0, created["checksum"], links.get("self"),
                            links.get("content"))

    def _session_or_none(self, multipart_url: str | None) -> UploadState | None:
        if not multipart_url:
            return None
        try:
            return self.api.upload_state(multipart_url)
        except ApiError as e:
            if e.status in (404, 409, 410):
                return None
            raise

    def _new_file(
        self,
        path: Path,
        key: str,
        st: os.stat_result,
        session: UploadSession,
        links: FileLinks,
        *,
        resumed: bool,
        journal: Journal[UploadHeader, UploadEntry] | None = None,
    ) -> FileUpload:
        ranges = part_ranges(st.st_size, session["chunk_size"])
        if len(ranges) != session.get("num_chunks", len(ranges)):
            raise ClientError(f"{key!r}: the server planned {session.get('num_chunks')} parts, we count {len(ranges)}")
        # (mypy builds no TypedDict from a comprehension: the keys are FileLinks' own)
        links = cast(FileLinks, {k: links[k] for k in ("self", "multipart", "sign", "complete", "abort") if k in links})
        if journal is None:
            journal = self.state.new_upload(self.draft_url, key, {
                "draft_url": self.draft_url, "key": key, "path": str(path.resolve()), "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "upload_id": session["upload_id"], "session_id": session.get("id"),
                "chunk_size": session["chunk_size"], "links": links,
            })
        return FileUpload(path, key, st.st_size, st.st_mtime_ns, session["chunk_size"], links, journal,
                          FileReader(path), ranges, resumed=resumed)

    def _resume(
        self,
        path: Path,
        key: str,
        st: os.stat_result,
        session: UploadState,
        links: FileLinks,
        journal: Journal[UploadHeader, UploadEntry] | None,
    ) -> FileUpload:
        header: Mapping[str, object] = journal.header if journal else {}
        same_file = (header.get("upload_id") == session["upload_id"] and header.get("size") == st.st_size
                     and header.get("mtime_ns") == st.st_mtime_ns and header.get("chunk_size") == session["chunk_size"])
        same_journal = journal if same_file else None
        upload = self._new_file(path, key, st, session, links, resumed=True, journal=same_journal)
        known: dict[int, tuple[str, str | None]] = {}
        if same_journal is not None:  # a journal entry without "md5": S3 verified that part by its SHA-256
            known = {int(e["n"]): (e["etag"], e.get("md5")) for e in same_journal.entries if {"n", "etag"} <= set(e)}
        held = {int(p["PartNumber"]): (normalize_etag(p["ETag"]), int(p.get("Size", -1))) for p in session["parts"]}
        if session.get("parts_unknown"):  # the server lists no parts: the journal's, hashed again before they count
            lengths = {r.number: r.length for r in upload.ranges}
            held = {n: (normalize_etag(etag), lengths.get(n, -1)) for n, (etag, _) in known.items()}
            known = {}
        for r in upload.ranges:
            etag, size = held.get(r.number, ("", -1))
            if size != r.length:
                continue
            if etag_is_md5(etag):
                upload.held[r.number] = etag  # hash the local part: equal to S3's MD5 = nothing to send
            elif r.number in known and known[r.number][0] == etag:
                # S3's ETag is no MD5 (SSE-KMS...): only the journal can vouch for the part.
                md5 = known[r.number][1]
                upload.done[r.number] = (etag, md5_from_base64(md5) if md5 else None)
                upload.reused += 1
        return upload

    # --- transfer ------------------------------------------------------------------------

    def _transfer(self, upload: FileUpload) -> None:
        done_bytes = sum(r.length for r in upload.ranges if r.number in upload.done)
        self.progress.start(upload.key, upload.size, done_bytes)
        todo = [r for r in upload.ranges if r.number not in upload.done]
        known = self._algorithm_known()
        upload.algorithm = known or "md5"  # until the probe answers: see PartSender.run
        self.sender.run(upload, todo, probe=None if known else lambda part: self._probe(upload, part))

    def _algorithm_known(self) -> str | None:
        """``md5`` or ``sha256`` when known without a probe (see ``TransferConfig.checksum``), else ``None``."""
        if self.config.checksum == "md5" or (self.config.checksum == "auto" and not sha256_is_cheaper()):
            return "md5"
        with self._probe_lock:
            if self._sha256_verified is None:
                return None
            return "sha256" if self._sha256_verified else "md5"

    def _probe(self, upload: FileUpload, probe_part: PartRange) -> str:
        """``sha256`` if this S3 proves, once per Uploader, that it verifies it; else ``md5``."""
        with self._probe_lock:
            if self._sha256_verified is None:
                self._sha256_verified = self.sender.server_verifies_sha256(upload, probe_part)
            return "sha256" if self._sha256_verified else "md5"

    # --- complete and verify --------------------------------------------------------------

    def _check_unchanged(self, upload: FileUpload) -> None:
        st = upload.path.stat()
        if (st.st_size, st.st_mtime_ns) != (upload.size, upload.mtime_ns):
            raise FileChanged(f"{upload.path}: changed while being uploaded; run again to upload the new content")

    def _complete(self, upload: FileUpload) -> FileJson:
        """Complete with our part list; if S3 disagrees (400), re-check S3's parts, re-send, try again."""
        for round_ in range(3):
            try:
                return self.api.complete(upload.links["complete"], {n: e for n, (e, _) in upload.done.items()})
            except ApiError as e:
                if e.status != 400 or round_ == 2:
                    raise
                state = self.api.upload_state(upload.links["multipart"])
                held = {int(p["PartNumber"]): normalize_etag(p["ETag"]) for p in state["parts"]}
                wrong = [r for r in upload.ranges if held.get(r.number) != upload.done.get(r.number, ("",))[0]]
                for r in wrong:
                    upload.done.pop(r.number, None)
                self.sender.run(upload, wrong)
        raise AssertionError("unreachable")

    def _verify(self, upload: FileUpload, answer: FileJson) -> UploadResult:
        """Compare the stored size and checksum with ours.

        Our part MD5s are the local file's (hashed here) or, for parts S3
        verified by SHA-256, the MD5 ETags S3 answered for those very bytes.
        """
        md5s = [md5 if md5 is not None else (bytes.fromhex(etag) if etag_is_md5(etag) else None)
                for etag, md5 in (upload.done[r.number] for r in upload.ranges)]
        known = [md5 for md5 in md5s if md5 is not None]
        expected = s3etag(known) if len(known) == len(md5s) else None
        links = answer.get("links") or {}
        result = UploadResult(
            str(upload.path), upload.key, "completed", upload.size, answer.get("checksum"), links.get("self"),
            links.get("content"), len(upload.ranges), upload.sent, upload.reused, upload.resumed,
            checksum_algorithm=upload.algorithm if upload.sent else None,
        )
        if answer.get("size") != upload.size:
            raise IntegrityError(f"{upload.key!r}: stored size {answer.get('size')} differs from the local "
                                 f"{upload.size} bytes")
        checksum = answer.get("checksum")
        if checksum and checksum.startswith("md5:") and not local_matches(upload.path, upload.size, checksum):
            raise IntegrityError(f"{upload.key!r}: stored checksum {checksum} differs from the local file's MD5; "
                                 "the stored file is left as it is, delete it and upload again")
        if checksum and checksum.startswith("s3etag:") and expected is not None and checksum != expected:
            raise IntegrityError(f"{upload.key!r}: stored checksum {checksum} differs from the local file's "
                                 f"{expected}; the stored file is left as it is, delete it and upload again")
        return result

    def _abort_quietly(self, upload: FileUpload) -> None:
        try:
            self.api.abort(upload.links["abort"])
        except ClientError:
            pass
        upload.journal.remove()


def expand_paths(
    items: Iterable[str | os.PathLike[str] | tuple[str | os.PathLike[str], str]],
) -> list[tuple[Path, str]]:
    """``(file, key)`` for files and, recursively, the files in directories (keys relative, ``/``).

    A ``(path, key)`` pair names a file and its key as they are.

    :raises UsageError: a path does not exist, or two files would get the same key.
    """
    entries: list[tuple[Path, str]] = []
    for item in items:
        if isinstance(item, tuple):
            entries.append((Path(item[0]), item[1]))
            continue
        path = Path(item)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    file = Path(root) / name
                    if file.is_file():
                        entries.append((file, file.relative_to(path).as_posix()))
        elif path.is_file():
            entries.append((path, path.name))
        else:
            raise UsageError(f"{path}: no such file or directory")
    keys: dict[str, Path] = {}
    for file, key in entries:
        if key in keys:
            raise UsageError(f"{file} and {keys[key]} would both be uploaded as {key!r}")
        keys[key] = file
    return entries
